//! GraphQL over WebSocket: graphql-transport-ws and the legacy graphql-ws, run by this loop
//! rather than async-graphql's, so that a socket gets what an HTTP request gets and no more.
//!
//! - The socket must be initialized within `WS_INIT_TIMEOUT_SECS` (else `4408`), and each
//!   caller may hold `WS_MAX_CONNECTIONS_PER_CALLER` sockets on this replica.
//! - Every operation is authorized with the caller's current role and active flag (the
//!   authenticator's short cache, as for HTTP), takes a token from the caller's rate limit, and
//!   passes the same document checks as HTTP; queries and mutations share the replica's
//!   execution permits (`GRAPHQL_MAX_CONCURRENT`). At most `WS_MAX_OPERATIONS` run at once.
//! - Rights end when they end: the socket closes with `4403` when its token expires, and when
//!   the caller is deactivated or its role changes (at once on this replica, within the cache's
//!   lifetime on others).
//! - Keep-alives at a fixed interval: `ping` in graphql-transport-ws, `ka` in graphql-ws.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::http::{ClientMessage, WebSocketProtocols};
use async_graphql::parser::types::OperationType;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{AbortHandle, BoxStream, SelectAll};
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::json;

use super::AppState;
use crate::api::context::RequestCtx;
use crate::api::exec::shared::{Frame, Key};
use crate::auth::authenticator::Session;
use crate::auth::{Actor, Principal};
use crate::error::AppError;

/// Per-socket and per-caller WebSocket limits (see the README's "Limits and abuse").
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Operations (mostly subscriptions) running at once on one socket.
    pub max_operations: usize,
    /// Sockets one caller may hold open on one replica.
    pub max_connections_per_caller: usize,
    /// Time from the upgrade to `connection_init`.
    pub init_timeout: Duration,
    /// How often an open socket checks its caller again (role, active flag).
    pub recheck: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_operations: 100,
            max_connections_per_caller: 256,
            init_timeout: Duration::from_secs(10),
            recheck: Duration::from_secs(5),
        }
    }
}

/// Open sockets per caller on this replica.
#[derive(Default)]
pub struct Connections(Mutex<HashMap<String, usize>>);

/// One caller's place in [`Connections`], given back when the socket ends.
pub(super) struct Slot {
    all: Arc<Connections>,
    subject: String,
}

impl Connections {
    pub(super) fn enter(all: &Arc<Connections>, subject: &str, max: usize) -> Option<Slot> {
        let mut map = all.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(subject.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            all: all.clone(),
            subject: subject.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.all.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.subject);
            }
        }
    }
}

/// What the upgrade request told us.
pub struct Upgrade {
    pub protocol: WebSocketProtocols,
    /// `Authorization` of the upgrade request, used when `connection_init` carries none.
    pub header_token: Option<String>,
    pub request_id: String,
}

/// The socket after `connection_init` was accepted.
struct Ready {
    session: Session,
    _slot: Slot,
}

enum Out {
    Data(String, Box<async_graphql::Response>),
    /// A message of a shared execution, serialized once for all its subscribers.
    Frame(String, Arc<Frame>),
    Done(String),
}

/// Why the loop ends: a close frame to send (code, reason), or nothing.
type Close = Option<(u16, String)>;

pub async fn serve(socket: WebSocket, state: AppState, up: Upgrade) {
    let _open = super::metrics::SocketGauge::open();
    let (mut sink, mut input) = socket.split();
    let mut conn = Connection {
        state,
        up,
        ready: None,
        ops: SelectAll::new(),
        active: HashMap::new(),
        failed: HashSet::new(),
        outbox: Vec::new(),
    };
    let limits = conn.state.config.ws;
    let keepalive = conn.state.config.ws_keepalive;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    // Shutdown, the caller's rights and the token's expiry are watched by a companion task:
    // polled here, their shared channels' locks would be taken on every message of every
    // socket (with 10,000 subscribers, most of a change's fan-out time).
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel();
    let watcher = Watcher(tokio::spawn(watch_rights(
        conn.state.auth.clone(),
        conn.state.stopping.subscribe(),
        limits.recheck,
        ready_rx,
        close_tx,
    )));

    let close: Close = loop {
        let step: Result<(), Close> = tokio::select! {
            Some(out) = conn.ops.next(), if !conn.ops.is_empty() => {
                conn.on_output(out);
                Ok(())
            }
            msg = input.next() => match msg {
                Some(Ok(Message::Text(t))) => conn.on_message(t.as_bytes()).await,
                Some(Ok(Message::Binary(b))) => conn.on_message(&b).await,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                Some(Err(e)) if is_too_big(&e) => Err(Some((1009, "Message too big".into()))),
                Some(Err(_) | Ok(Message::Close(_))) | None => Err(None),
            },
            close = &mut close_rx => Err(close.unwrap_or(None)),
            () = &mut init_deadline, if conn.ready.is_none() => {
                Err(Some((4408, "Connection initialisation timeout".into())))
            }
            _ = ticks.tick() => {
                conn.outbox.push(match conn.up.protocol {
                    WebSocketProtocols::GraphQLWS => json!({ "type": "ping" }),
                    WebSocketProtocols::SubscriptionsTransportWS => json!({ "type": "ka" }),
                }.to_string());
                Ok(())
            }
        };
        if let Some(ready) = &conn.ready
            && let Some(tx) = ready_tx.take()
        {
            let _ = tx.send(ready.session.clone());
        }
        for text in conn.outbox.drain(..) {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if let Err(close) = step {
            break close;
        }
    };
    drop(watcher);
    for (_, handle) in conn.active.drain() {
        handle.abort();
    }
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: close_reason(reason).into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}

/// Stops the companion task with its socket.
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The companion of one socket: tells it to close when the server shuts down, and, once the
/// socket is initialized, when its token expires or its caller is deactivated or changes role
/// (at once on this replica, within the authenticator cache's lifetime on others).
async fn watch_rights(
    auth: crate::auth::authenticator::Authenticator,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    recheck_every: Duration,
    ready: tokio::sync::oneshot::Receiver<Session>,
    close: tokio::sync::oneshot::Sender<Close>,
) {
    let shutdown = Some((1001, "the server is shutting down".to_owned()));
    let session = tokio::select! {
        Ok(()) = stopping.changed() => {
            let _ = close.send(shutdown);
            return;
        }
        session = ready => match session {
            Ok(s) => s,
            // The socket ended before it was initialized.
            Err(_) => return,
        },
    };
    let mut changes = auth.changes();
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + recheck_every, recheck_every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A token may claim an `exp` far beyond what an Instant can hold.
    let left = session
        .expires_at
        .map_or(Duration::from_secs(86_400 * 365), |at| {
            until(at).min(Duration::from_secs(86_400 * 365))
        });
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    let why: Close = loop {
        let check = tokio::select! {
            Ok(()) = stopping.changed() => break shutdown,
            () = &mut expiry => break Some((4403, "the token has expired".into())),
            _ = recheck.tick() => true,
            changed = changes.recv() => match &changed {
                Ok(Some(subject)) => session.principal.subject == *subject,
                // Everyone's changed, or notices were missed.
                Ok(None) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
            },
        };
        if check && let Err(why) = current_rights(&auth, &session).await {
            break why;
        }
    };
    let _ = close.send(why);
}

/// The caller as it stands now; an error (a close) when it was deactivated or its role changed
/// since the socket opened (its subscriptions were authorized with the old role).
async fn current_rights(
    auth: &crate::auth::authenticator::Authenticator,
    session: &Session,
) -> Result<Principal, Close> {
    match auth.current(session).await {
        Ok(p) if p.role == session.principal.role => Ok(p),
        Ok(_) => Err(Some((
            4403,
            "the caller's role changed; reconnect to continue".into(),
        ))),
        Err(e @ AppError::Forbidden(_)) => Err(Some((4403, e.message()))),
        // The database being unreachable is no reason to drop a caller.
        Err(_) => Ok(session.principal.clone()),
    }
}

/// A close frame's reason may hold at most 123 bytes; browsers fail the whole close otherwise.
/// Whether a read failed because the message exceeds the socket's size limit.
fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as E;
    matches!(
        e.source().and_then(|s| s.downcast_ref::<E>()),
        Some(E::Capacity(_))
    )
}

fn close_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

/// Time left until `exp` (seconds since the epoch).
fn until(exp: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(exp).saturating_sub(now)
}

struct Connection {
    state: AppState,
    up: Upgrade,
    ready: Option<Ready>,
    ops: SelectAll<BoxStream<'static, Out>>,
    active: HashMap<String, AbortHandle>,
    /// Operations that ended with an `error` message, whose stream still ends with `Done`.
    failed: HashSet<String>,
    /// Messages to send after the current step, in order.
    outbox: Vec<String>,
}

impl Connection {
    fn legacy(&self) -> bool {
        self.up.protocol == WebSocketProtocols::SubscriptionsTransportWS
    }

    async fn on_message(&mut self, raw: &[u8]) -> Result<(), Close> {
        let msg = match serde_json::from_slice::<ClientMessage>(raw) {
            Ok(m) => m,
            Err(e) => return Err(Some((4400, format!("Invalid message received: {e}")))),
        };
        match msg {
            ClientMessage::ConnectionInit { payload } => self.init(payload).await,
            ClientMessage::Start { id, payload } => self.start(id, payload).await,
            ClientMessage::Stop { id } => {
                if self.ready.is_none() && !self.legacy() {
                    return Err(Some((4401, "Unauthorized".into())));
                }
                if let Some(handle) = self.active.remove(&id) {
                    handle.abort();
                    // graphql-transport-ws sends nothing more for an operation the client
                    // completed (the id may already be reused); the legacy protocol confirms.
                    if self.legacy() {
                        self.outbox
                            .push(json!({ "type": "complete", "id": id }).to_string());
                    }
                }
                Ok(())
            }
            ClientMessage::ConnectionTerminate => Err(None),
            ClientMessage::Ping { .. } => {
                self.outbox.push(json!({ "type": "pong" }).to_string());
                Ok(())
            }
            ClientMessage::Pong { .. } => Ok(()),
        }
    }

    /// Refuses the connection: graphql-transport-ws closes with `code`; the legacy protocol
    /// sends `connection_error` first, as its clients expect.
    fn refuse(&mut self, code: u16, message: String) -> Result<(), Close> {
        if self.legacy() {
            self.outbox.push(
                json!({ "type": "connection_error", "payload": { "message": message } })
                    .to_string(),
            );
        }
        Err(Some((code, message)))
    }

    async fn init(&mut self, payload: Option<serde_json::Value>) -> Result<(), Close> {
        if self.ready.is_some() {
            return self.refuse(4429, "Too many initialisation requests".into());
        }
        let token = payload
            .as_ref()
            .and_then(init_token)
            .or_else(|| self.up.header_token.clone());
        let auth = self.state.auth.clone();
        let session = match auth.session(token.as_deref()).await {
            Ok(s) => s,
            Err(e @ AppError::Unauthenticated(_)) => return self.refuse(4401, e.message()),
            Err(e @ AppError::Forbidden(_)) => return self.refuse(4403, e.message()),
            // 1013 Try Again Later: clients retry it, unlike 1011 or 44xx.
            Err(e) => return self.refuse(1013, e.message()),
        };
        // A connection counts as one request of its caller against the rate limit.
        let subject = session.principal.subject.clone();
        if let Err(wait) = self.state.rate.check(&subject).await {
            let e = AppError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            };
            return self.refuse(1013, e.message());
        }
        let max = self.state.config.ws.max_connections_per_caller;
        let Some(slot) = Connections::enter(&self.state.ws_connections, &subject, max) else {
            return self.refuse(
                1013,
                format!("too many open WebSocket connections for this caller (at most {max})"),
            );
        };
        self.ready = Some(Ready {
            session,
            _slot: slot,
        });
        self.outbox
            .push(json!({ "type": "connection_ack" }).to_string());
        Ok(())
    }

    /// The caller as it stands now; closes the socket when its rights changed.
    async fn current(&mut self) -> Result<Option<Principal>, Close> {
        match &self.ready {
            None => Ok(None),
            Some(ready) => current_rights(&self.state.auth, &ready.session)
                .await
                .map(Some),
        }
    }

    /// Answers one operation with a refusal: its errors, then `complete`.
    fn refuse_op(&mut self, id: &str, err: &AppError) {
        let resp = async_graphql::Response::from_errors(vec![err.to_server_error()]);
        self.on_output(Out::Data(id.to_owned(), Box::new(resp)));
        self.on_output(Out::Done(id.to_owned()));
    }

    async fn start(&mut self, id: String, request: async_graphql::Request) -> Result<(), Close> {
        if self.ready.is_none() {
            return if self.legacy() {
                Err(Some((1011, "The handshake is not completed.".into())))
            } else {
                Err(Some((4401, "Unauthorized".into())))
            };
        }
        if self.active.contains_key(&id) {
            return Err(Some((4409, format!("Subscriber for {id} already exists"))));
        }
        let Some(principal) = self.current().await? else {
            return Ok(());
        };
        if let Err(wait) = self.state.rate.check(&principal.subject).await {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            self.refuse_op(
                &id,
                &AppError::RateLimited {
                    retry_after_secs: secs.max(1),
                },
            );
            return Ok(());
        }
        let max = self.state.config.ws.max_operations;
        if self.active.len() >= max {
            self.refuse_op(
                &id,
                &AppError::TooMany(format!(
                    "too many operations on this connection (at most {max} at once)"
                )),
            );
            return Ok(());
        }
        let mut request = request;
        let documents = self.state.documents.clone();
        if let Err(e) = documents
            .resolve(
                &self.state.db,
                &self.state.schema.guard,
                &principal,
                &mut request,
            )
            .await
        {
            self.refuse_op(&id, &e);
            return Ok(());
        }
        let guard = &self.state.schema.guard;
        if let Err(e) = guard.scan(&request.query) {
            self.on_output(Out::Data(
                id.clone(),
                Box::new(async_graphql::Response::from_errors(vec![e])),
            ));
            self.on_output(Out::Done(id));
            return Ok(());
        }
        let mut subscription = false;
        let mut shareable = false;
        let variables = std::mem::take(&mut request.variables);
        let operation_name = request.operation_name.take();
        let mut refused = None;
        if let Ok(doc) = request.parsed_query() {
            match guard.check(doc, &variables) {
                Ok(()) => {
                    subscription = is_subscription(doc, operation_name.as_deref());
                    shareable = self
                        .state
                        .schema
                        .shared
                        .shareable(doc, operation_name.as_deref());
                }
                Err(e) => refused = Some(e),
            }
        }
        request.variables = variables;
        request.operation_name = operation_name;
        if let Some(e) = refused {
            self.on_output(Out::Data(
                id.clone(),
                Box::new(async_graphql::Response::from_errors(vec![e])),
            ));
            self.on_output(Out::Done(id));
            return Ok(());
        }
        let key = shareable.then(|| Key::of(&request, &principal));
        let actor = Actor {
            principal,
            request_id: Some(self.up.request_id.clone()),
        };
        let request = request
            .data(RequestCtx::spawning(self.state.db.scoped(), actor))
            .data(self.state.live.clone())
            .data(self.state.auth.clone());
        let (data_id, done_id) = (id.clone(), id.clone());
        let outputs = match key {
            Some(key) => {
                let schema = &self.state.schema;
                schema
                    .shared
                    .join(&schema.ws, key, request)
                    .map(move |f| Out::Frame(data_id.clone(), f))
                    .boxed()
            }
            None => responses(&self.state, request, subscription)
                .map(move |r| Out::Data(data_id.clone(), Box::new(r)))
                .boxed(),
        };
        let (ops, handle) =
            stream::abortable(outputs.chain(stream::once(async move { Out::Done(done_id) })));
        self.active.insert(id, handle);
        self.ops.push(ops.boxed());
        Ok(())
    }

    fn on_output(&mut self, out: Out) {
        let text = match out {
            // graphql-transport-ws: an operation that fails before it executes (invalid,
            // refused) ends with `error` and its errors, which ends it: no `complete` follows.
            Out::Data(id, payload)
                if !self.legacy() && crate::api::exec::is_request_error(&payload) =>
            {
                // Every operation's output ends with `Done`: that one sends nothing.
                self.active.remove(&id);
                self.failed.insert(id.clone());
                json!({ "type": "error", "id": id, "payload": payload.errors }).to_string()
            }
            Out::Data(id, payload) => {
                let ty = if self.legacy() { "data" } else { "next" };
                json!({ "type": ty, "id": id, "payload": payload }).to_string()
            }
            Out::Frame(id, frame) => {
                let id_json = serde_json::to_string(&id).unwrap_or_default();
                match &frame.request_errors {
                    Some(errors) if !self.legacy() => {
                        self.active.remove(&id);
                        self.failed.insert(id);
                        format!(r#"{{"type":"error","id":{id_json},"payload":{errors}}}"#)
                    }
                    _ => {
                        let ty = if self.legacy() { "data" } else { "next" };
                        let payload = &frame.payload;
                        format!(r#"{{"type":"{ty}","id":{id_json},"payload":{payload}}}"#)
                    }
                }
            }
            Out::Done(id) if self.failed.remove(&id) => return,
            Out::Done(id) => {
                self.active.remove(&id);
                json!({ "type": "complete", "id": id }).to_string()
            }
        };
        self.outbox.push(text);
    }
}

/// Whether the operation the request names is a subscription.
/// The responses of one operation: a subscription's stream, or the single answer of a query or
/// mutation, which counts against the replica's execution permits as on HTTP. Shared by the
/// WebSocket and Server-Sent Events transports.
pub(super) fn responses(
    state: &AppState,
    request: async_graphql::Request,
    subscription: bool,
) -> BoxStream<'static, async_graphql::Response> {
    let schema = state.schema.ws.clone();
    if subscription {
        schema.execute_stream(request).boxed()
    } else {
        // Queries and mutations count against the replica's execution permits, as on HTTP.
        // They run on their own task, so a permit is held only while executing: the transport
        // may be stuck writing to a slow client and would not poll them.
        let state = state.clone();
        let run = tokio::spawn(async move {
            let Some(_permit) = super::permit(&state).await else {
                return async_graphql::Response::from_errors(vec![super::busy().to_server_error()]);
            };
            schema.execute(request).await
        });
        stream::once(async move {
            run.await.unwrap_or_else(|_| {
                async_graphql::Response::from_errors(vec![
                    AppError::internal("operation task failed").to_server_error(),
                ])
            })
        })
        .boxed()
    }
}

pub(super) fn is_subscription(
    doc: &async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
) -> bool {
    operation_type(doc, name) == Some(OperationType::Subscription)
}

/// The type of the operation `name` (or the only one) of a document.
pub(super) fn operation_type(
    doc: &async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
) -> Option<OperationType> {
    crate::api::exec::operation(doc, name).map(|op| op.ty)
}

/// The bearer token of a `connection_init` payload: `{"Authorization": "Bearer …"}` (any
/// case) or `{"token": "…"}`.
fn init_token(payload: &serde_json::Value) -> Option<String> {
    let obj = payload.as_object()?;
    if let Some(v) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
    {
        return Some(v.to_owned());
    }
    obj.get("token")
        .and_then(|v| v.as_str())
        .map(|t| format!("Bearer {t}"))
}
