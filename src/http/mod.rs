//! The HTTP surface: GraphQL over POST/GET with content negotiation, GraphiQL, WebSocket
//! subscriptions, health and readiness.

pub mod documents;
mod graphiql;
pub mod metrics;
pub mod rate;
pub mod serve;
mod sse;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::WebSocketProtocols;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::{AppSchema, execute};
use crate::auth::{Actor, Authenticator, Principal};
use crate::error::AppError;
use crate::live::Live;
use crate::store::replicas::Lsn;
use crate::store::{Db, migrations_applied};

/// Response header carrying the number of SQL statements the request issued.
pub const SQL_STATEMENTS_HEADER: &str = "x-sql-statements";

/// Request header asking for the statements the request ran, with their durations, in the
/// response's `extensions.sql`. Honoured in development mode and for admins only.
pub const SQL_LOG_HEADER: &str = "x-bughive-sql";

/// Read your writes across replicas: a response that wrote carries the primary's WAL position
/// in this header (and in `extensions.lsn`); a request that sends it back is read from a
/// replica only once that replica has replayed it, else from the primary.
pub const LSN_HEADER: &str = "x-bughive-lsn";

/// HTTP-level settings (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body (`GRAPHQL_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Requests per second per caller (`RATE_LIMIT_PER_SECOND`; 0 = no limit).
    pub rate_per_second: u32,
    /// Burst per caller (`RATE_LIMIT_BURST`).
    pub rate_burst: u32,
    /// Interval of WebSocket keep-alive messages (`WS_KEEPALIVE_SECS`).
    pub ws_keepalive: Duration,
    /// Operations executing at once (`GRAPHQL_MAX_CONCURRENT`), over HTTP and WebSocket alike.
    /// Running 32 large queries side by side buys no throughput (the CPU is the limit) but
    /// multiplies the memory held by half-built responses, so the default is two per core (one
    /// per core cut Q1's peak RSS from 126 to 90 MiB but also a sixth of its rate). The permit
    /// is released once the response is serialized: a slow reader must not block the others.
    pub max_concurrent: usize,
    /// How long an operation may wait for an execution permit (`GRAPHQL_QUEUE_TIMEOUT_MS`);
    /// past it the answer is `503 UNAVAILABLE`, so a saturated replica sheds load instead of
    /// holding every waiting request (and its body) for as long as the queue takes.
    pub queue_timeout: Duration,
    /// Connection timeouts (`HTTP_HEADER_TIMEOUT_SECS`, `HTTP_BODY_TIMEOUT_SECS`,
    /// `HTTP_WRITE_TIMEOUT_SECS`, `SHUTDOWN_GRACE_SECS`).
    pub timeouts: serve::Timeouts,
    /// WebSocket limits.
    pub ws: ws::WsLimits,
    /// Persisted queries and trusted documents.
    pub documents: documents::DocumentsConfig,
    /// Where `/metrics` is served (`METRICS_LISTEN`); unset: on the GraphQL address.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A Redis that holds the rate-limit buckets of every replica (`REDIS_URL`); unset: each
    /// replica limits on its own.
    pub redis_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: crate::api::Limits::default().max_body_bytes,
            rate_per_second: 100,
            rate_burst: 200,
            ws_keepalive: Duration::from_secs(15),
            max_concurrent: std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
            queue_timeout: Duration::from_secs(10),
            timeouts: serve::Timeouts::default(),
            ws: ws::WsLimits::default(),
            documents: documents::DocumentsConfig::default(),
            metrics_listen: None,
            redis_url: None,
        }
    }
}

impl HttpConfig {
    pub fn from_env(limits: &crate::api::Limits) -> anyhow::Result<Self> {
        use crate::config::env_num;
        let d = HttpConfig::default();
        let keepalive = env_num("WS_KEEPALIVE_SECS", d.ws_keepalive.as_secs())?;
        let concurrent = env_num("GRAPHQL_MAX_CONCURRENT", d.max_concurrent)?;
        let secs = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(
                env_num(name, default.as_secs())?.max(1),
            ))
        };
        let t = d.timeouts;
        let timeouts = serve::Timeouts {
            header_read: secs("HTTP_HEADER_TIMEOUT_SECS", t.header_read)?,
            body_read: secs("HTTP_BODY_TIMEOUT_SECS", t.body_read)?,
            write_stall: secs("HTTP_WRITE_TIMEOUT_SECS", t.write_stall)?,
            shutdown_grace: secs("SHUTDOWN_GRACE_SECS", t.shutdown_grace)?,
        };
        let w = d.ws;
        let ws = ws::WsLimits {
            max_operations: env_num("WS_MAX_OPERATIONS", w.max_operations)?.max(1),
            max_connections_per_caller: env_num(
                "WS_MAX_CONNECTIONS_PER_CALLER",
                w.max_connections_per_caller,
            )?
            .max(1),
            init_timeout: secs("WS_INIT_TIMEOUT_SECS", w.init_timeout)?,
            recheck: w.recheck,
        };
        Ok(HttpConfig {
            max_body_bytes: limits.max_body_bytes,
            rate_per_second: env_num("RATE_LIMIT_PER_SECOND", d.rate_per_second)?,
            rate_burst: env_num("RATE_LIMIT_BURST", d.rate_burst)?,
            ws_keepalive: Duration::from_secs(keepalive.max(1)),
            max_concurrent: concurrent.max(1),
            queue_timeout: Duration::from_millis(
                env_num(
                    "GRAPHQL_QUEUE_TIMEOUT_MS",
                    d.queue_timeout.as_millis() as u64,
                )?
                .max(1),
            ),
            timeouts,
            ws,
            documents: documents::DocumentsConfig {
                cache_size: env_num("APQ_CACHE_SIZE", d.documents.cache_size)?,
                max_documents: env_num("APQ_MAX_DOCUMENTS", d.documents.max_documents)?.max(1),
                trusted: std::env::var_os("TRUSTED_DOCUMENTS")
                    .filter(|v| !v.is_empty())
                    .map(std::path::PathBuf::from),
                trusted_allow_admins: matches!(
                    std::env::var("TRUSTED_DOCUMENTS_ALLOW_ADMINS").as_deref(),
                    Ok("1" | "true" | "yes")
                ),
            },
            redis_url: match std::env::var("REDIS_URL") {
                Ok(v) if !v.is_empty() => {
                    redis::Client::open(v.as_str())
                        .map_err(|e| anyhow::anyhow!("REDIS_URL {v:?}: {e}"))?;
                    Some(v)
                }
                _ => None,
            },
            metrics_listen: match std::env::var("METRICS_LISTEN") {
                Ok(v) if !v.is_empty() => Some(v.parse().map_err(|e| {
                    anyhow::anyhow!(
                        "METRICS_LISTEN={v:?} is not an address such as 0.0.0.0:9100: {e}"
                    )
                })?),
                _ => None,
            },
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub schema: AppSchema,
    pub db: Db,
    /// This replica's fan-out of committed changes to subscriptions.
    pub live: Live,
    pub auth: Authenticator,
    rate: Arc<rate::CallerLimiter>,
    /// Bounds how many GraphQL operations execute at once.
    limiter: Arc<Semaphore>,
    /// Open WebSocket connections per caller.
    ws_connections: Arc<ws::Connections>,
    /// Persisted queries and trusted documents.
    documents: Arc<documents::Documents>,
    /// Set when the server starts shutting down: WebSockets close with 1001.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    config: HttpConfig,
}

impl AppState {
    /// Tells long-lived connections that the server is going away: each WebSocket closes with
    /// `1001`, so clients reconnect to another replica at once instead of timing out.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    pub fn new(
        schema: AppSchema,
        db: Db,
        live: Live,
        auth: Authenticator,
        config: HttpConfig,
    ) -> Self {
        // Role and activation changes committed on any replica reach this one's caller cache and
        // WebSockets. The task ends with the hub (its sender is dropped).
        let mut changes = live.user_changes();
        let forget = auth.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match changes.recv().await {
                    Ok(user) => forget.forget_user(user),
                    Err(RecvError::Lagged(_)) => forget.forget(None),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        metrics::install();
        AppState {
            schema,
            db,
            live,
            auth,
            rate: Arc::new(match &config.redis_url {
                // The URL was checked at start-up (`HttpConfig::from_env`).
                Some(url) => rate::CallerLimiter::shared(
                    config.rate_per_second,
                    config.rate_burst,
                    url,
                )
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "shared rate limit off; limiting per replica");
                    rate::CallerLimiter::new(config.rate_per_second, config.rate_burst)
                }),
                None => rate::CallerLimiter::new(config.rate_per_second, config.rate_burst),
            }),
            limiter: Arc::new(Semaphore::new(config.max_concurrent)),
            ws_connections: Arc::default(),
            documents: documents::Documents::new(config.documents.clone()),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            config,
        }
    }
}

/// A GraphQL error response for a request refused before execution.
fn refuse(status: StatusCode, err: &AppError) -> Response {
    // A request that never executed has no `data` key (GraphQL over HTTP).
    let body = json!({ "errors": [err.to_server_error()] });
    let mut res = (status, axum::Json(body)).into_response();
    if let AppError::RateLimited { retry_after_secs } = err {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// GraphQL over HTTP is GET and POST only; anything else gets a GraphQL error too.
async fn other_method() -> Response {
    let mut res = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        &AppError::bad_input("GraphQL is served over GET and POST"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    res
}

/// Authenticates the caller and takes a rate-limit token for it.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate(authorization).await {
        Ok(p) => p,
        Err(e) => {
            let status = match e {
                AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                AppError::Forbidden(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return Err(refuse(status, &e));
        }
    };
    if let Err(wait) = state.rate.check(&principal.subject).await {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &AppError::RateLimited {
                retry_after_secs: secs.max(1),
            },
        ));
    }
    Ok(principal)
}

/// The request's `x-request-id`, or a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Request and response header carrying the request id, which audit entries record.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Gives every request an `x-request-id` (the client's, or a new one) before anything logs, and
/// echoes it on the response.
async fn with_request_id(
    mut req: axum::http::Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let id = request_id(req.headers());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
        let mut res = next.run(req).await;
        res.headers_mut().entry(REQUEST_ID_HEADER).or_insert(v);
        return res;
    }
    next.run(req).await
}

/// `/metrics` alone, for `METRICS_LISTEN`: scrapers reach it on an address of its own, which
/// need not be public.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let metrics_here = state.config.metrics_listen.is_none();
    // Only the GraphQL POST handlers read a body: they do so themselves, after authentication, with
    // the body limit and a timeout.
    let routes = Router::new()
        .route(
            "/graphql",
            get(graphql_get).post(graphql_post).fallback(other_method),
        )
        .route("/graphql/ws", get(graphql_ws))
        .route(
            "/graphql/stream",
            get(sse::get).post(sse::post).fallback(other_method),
        )
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/health", get(health))
        .route("/ready", get(ready));
    let routes = if metrics_here {
        routes.route("/metrics", get(metrics::scrape))
    } else {
        routes
    };
    routes
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<Body>| {
                    // Every line logged while serving a request carries its id.
                    let id = req
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let span = tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %id,
                        graphql.operation = tracing::field::Empty,
                        graphql.type = tracing::field::Empty,
                        enduser.id = tracing::field::Empty,
                        http.status_code = tracing::field::Empty,
                    );
                    crate::telemetry::continue_trace(&span, req.headers());
                    span
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(axum::middleware::from_fn(with_request_id))
        .with_state(state)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// `application/json` when the client asks for it (legacy clients), else the GraphQL-over-HTTP
/// media type.
fn wants_legacy_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // No `Accept`, or `*/*`, is a client from before `application/graphql-response+json`:
    // GraphQL over HTTP says to answer it with `application/json`.
    accept.trim().is_empty()
        || (!accept.contains("application/graphql-response+json")
            && (accept.contains("application/json") || accept.contains("*/*")))
}

async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if wants_html(&headers) {
        return graphiql::page(!state.auth.is_dev_mode()).into_response();
    }
    let principal = match admit(&state, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let request = match async_graphql::http::parse_query_string(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &AppError::bad_input(format!("invalid GraphQL GET request: {e}")),
            );
        }
    };
    run(state, headers, principal, request, true).await
}

/// GraphQL over WebSocket (graphql-transport-ws and the legacy graphql-ws): see [`ws`].
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = ws_protocol(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    // A token may come as a header on the upgrade or, as browsers must send it, in the
    // connection_init payload; the connection is authenticated when it is initialized.
    // The protocol axum answers with (the first of ours the client offers) is the one to speak.
    let protocol = upgrade
        .selected_protocol()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(protocol);
    let up = ws::Upgrade {
        protocol,
        header_token: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: request_id(&headers),
    };
    // GraphQL messages are small: the 128 KiB default buffers cost 1000 idle subscribers over
    // 100 MiB, and a 64 MiB message limit invites abuse. tungstenite zeroes its read buffer
    // each time the socket is polled, which is once per message sent, and so keeps it
    // resident: 1 KiB rather than 4 took the gateway with 10,000 subscribers from 204 to
    // 175 MiB (`bench live --subscribers 10000`); a larger client message takes more reads.
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| ws::serve(socket, state, up))
        .into_response()
}

/// The first GraphQL subprotocol the client offers.
fn ws_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().parse().ok())
}

/// Whether a POST body may be read as a GraphQL request. JSON is what clients send; other
/// media types are what a browser sends cross-site without asking (a form, `text/plain`), which
/// in development mode would run mutations as the admin. Those need a header that only a
/// preflighted request can carry (Apollo's CSRF-prevention convention).
fn post_body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Some(BodyKind::Json);
    }
    if essence == "application/graphql" {
        return Some(BodyKind::Document);
    }
    let preflighted = [
        "apollo-require-preflight",
        "x-apollo-operation-name",
        "graphql-require-preflight",
    ]
    .iter()
    .any(|h| headers.get(*h).is_some_and(|v| !v.is_empty()));
    preflighted.then_some(BodyKind::Json)
}

#[derive(Clone, Copy)]
enum BodyKind {
    /// `{"query", "variables", "operationName", "extensions"}`
    Json,
    /// The document itself (`application/graphql`).
    Document,
}

async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(kind) = post_body_kind(&headers) else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &AppError::bad_input(
                "POST bodies must be application/json (other media types need an \
                 apollo-require-preflight header)",
            ),
        );
    };
    // The caller is known before the body is read or parsed.
    let principal = match admit(&state, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let request = match read_body(&state, &headers, kind, body).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    run(state, headers, principal, request, false).await
}

/// Reads and parses a POST body within the size and time limits.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    kind: BodyKind,
    body: Body,
) -> Result<async_graphql::Request, Response> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &AppError::bad_input(format!("the request body exceeds {limit} bytes")),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(state.config.timeouts.body_read, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_large()
            } else {
                refuse(
                    StatusCode::BAD_REQUEST,
                    &AppError::bad_input("the request body could not be read"),
                )
            });
        }
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                &AppError::bad_input(format!(
                    "the request body did not arrive within {} s",
                    state.config.timeouts.body_read.as_secs()
                )),
            ));
        }
    };
    let request = match kind {
        BodyKind::Document => match std::str::from_utf8(&bytes) {
            Ok(q) => async_graphql::Request::new(q),
            Err(_) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    &AppError::bad_input("the document is not UTF-8"),
                ));
            }
        },
        BodyKind::Json => match serde_json::from_slice::<async_graphql::BatchRequest>(&bytes) {
            Ok(async_graphql::BatchRequest::Single(r)) => r,
            Ok(async_graphql::BatchRequest::Batch(_)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    &AppError::bad_input("batched requests are not supported; send one at a time"),
                ));
            }
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    &AppError::bad_input(format!("the body is not a GraphQL request: {e}")),
                ));
            }
        },
    };
    Ok(request)
}

/// An execution permit, waited for at most `queue_timeout`.
async fn permit(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let wait = state.limiter.clone().acquire_owned();
    tokio::time::timeout(state.config.queue_timeout, wait)
        .await
        .ok()?
        .ok()
}

fn busy() -> AppError {
    AppError::Unavailable("the server is busy; try again shortly".into())
}

/// The status of a response: 200 with data; without data, the cause decides. A database that
/// is down or slow is 503 and a bug is 500, so load balancers and clients retry the right ones;
/// the caller's own mistakes are 400 (or 200 for clients that asked for `application/json`,
/// as GraphQL over HTTP says).
fn status_of(response: &async_graphql::Response, legacy: bool) -> StatusCode {
    if response.data != async_graphql::Value::Null || response.errors.is_empty() {
        return StatusCode::OK;
    }
    let codes = response.errors.iter().filter_map(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .and_then(|c| match c {
                async_graphql::Value::String(s) => Some(s.as_str()),
                _ => None,
            })
    });
    let mut status = if legacy {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    for code in codes {
        match AppError::status_of_code(code) {
            500 => return StatusCode::INTERNAL_SERVER_ERROR,
            503 => status = StatusCode::SERVICE_UNAVAILABLE,
            _ => {}
        }
    }
    status
}

async fn run(
    state: AppState,
    headers: HeaderMap,
    principal: Principal,
    request: async_graphql::Request,
    via_get: bool,
) -> Response {
    let legacy = wants_legacy_json(&headers);
    let mut request = request;
    if let Err(e) = state
        .documents
        .resolve(&state.db, &state.schema.guard, &principal, &mut request)
        .await
    {
        let status = match &e {
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            // Apollo's PersistedQueryLink reads the error from any answer; 200 keeps GET
            // caches and proxies from treating the miss as a failure.
            AppError::PersistedQueryNotFound => StatusCode::OK,
            _ => StatusCode::from_u16(AppError::status_of_code(e.code()))
                .unwrap_or(StatusCode::BAD_REQUEST),
        };
        return refuse(status, &e);
    }
    // A request without a document is not a GraphQL request at all: 400 whatever the media
    // type (a document that fails to parse is the client's error inside a valid request).
    if request.query.trim().is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &AppError::bad_field("query", "the request has no query document"),
        );
    }
    if via_get {
        // The read-only check parses the document, which must be scanned first.
        if let Err(e) = state.schema.guard.scan(&request.query) {
            let body = json!({ "errors": [e] });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        if !is_read_only(&mut request) {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "POST")],
                axum::Json(json!({ "errors": [{
                    "message": "only queries may be sent over GET; use POST for mutations",
                    "extensions": { "code": "BAD_USER_INPUT" }
                }]})),
            )
                .into_response();
        }
    }
    let request_id = request_id(&headers);
    // The SQL a request ran tells how the data is stored: for developers and admins only.
    tracing::Span::current().record("enduser.id", principal.subject.as_str());
    let show_sql = headers.contains_key(SQL_LOG_HEADER)
        && (state.auth.is_dev_mode() || principal.role == crate::auth::Role::Admin);
    let actor = Actor {
        principal,
        request_id: Some(request_id.clone()),
    };
    let mut request = request.data(state.auth.clone());
    let Some(permit) = permit(&state).await else {
        let mut res = refuse(StatusCode::SERVICE_UNAVAILABLE, &busy());
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    };
    let min_lsn = match read_after(&headers) {
        Ok(lsn) => lsn,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    let db = if show_sql {
        state.db.recording()
    } else {
        state.db.clone()
    };
    let started = std::time::Instant::now();
    let (op_name, op_kind) = operation_of(&state, &mut request);
    // Queries may read from a replica; a mutation, and everything its response reads, runs on
    // the primary.
    let db = if op_kind == "query" {
        db.for_read(min_lsn)
    } else {
        db
    };
    let (mut response, stats) = execute(&state.schema, &db, actor, request).await;
    let wrote_at = if op_kind == "mutation" && db.replicas().is_some() {
        match db.primary_lsn().await {
            Ok(lsn) => Some(lsn.to_string()),
            Err(e) => {
                tracing::warn!(error = %e.message(), "could not read the primary's WAL position");
                None
            }
        }
    } else {
        None
    };
    if let Some(lsn) = &wrote_at {
        response
            .extensions
            .insert("lsn".into(), async_graphql::Value::String(lsn.clone()));
    }
    if show_sql {
        let log = stats
            .log()
            .into_iter()
            .map(|s| {
                let mut entry = async_graphql::indexmap::IndexMap::new();
                entry.insert(
                    async_graphql::Name::new("statement"),
                    async_graphql::Value::String(s.sql),
                );
                entry.insert(
                    async_graphql::Name::new("ms"),
                    async_graphql::Value::from((s.ms * 1000.0).round() / 1000.0),
                );
                async_graphql::Value::Object(entry)
            })
            .collect();
        response
            .extensions
            .insert("sql".into(), async_graphql::Value::List(log));
    }
    let status = status_of(&response, legacy);
    {
        let span = tracing::Span::current();
        span.record(
            "graphql.operation",
            op_name.as_deref().unwrap_or("anonymous"),
        );
        span.record("graphql.type", op_kind);
        span.record("http.status_code", status.as_u16());
    }
    metrics::record_request(
        op_name.as_deref(),
        op_kind,
        status,
        started.elapsed(),
        stats.statements(),
        response.errors.iter().filter_map(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .and_then(|c| match c {
                    async_graphql::Value::String(s) => Some(s.clone()),
                    _ => None,
                })
        }),
    );
    let body = response.to_chunks();
    drop(response);
    // The permit bounds execution, not delivery: a client that reads slowly must not keep
    // others from executing (the connection's write timeout deals with it).
    drop(permit);
    let content_type = if legacy {
        "application/json"
    } else {
        "application/graphql-response+json"
    };
    // GET answers are cacheable: a strong ETag of the exact body, revalidated every time
    // (`no-cache`; `private`: answers depend on the caller). A client that already holds this
    // body gets 304 and no body.
    let etag = (via_get && status == StatusCode::OK).then(|| etag_of(&body.chunks));
    if let Some(tag) = &etag
        && if_none_match(&headers, tag)
    {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(tag) {
            h.insert(header::ETAG, v);
        }
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(GET_CACHE_CONTROL),
        );
        h.insert(SQL_STATEMENTS_HEADER, HeaderValue::from(stats.statements()));
        return res;
    }
    let body = ChunkBody {
        remaining: body.len as u64,
        chunks: body.chunks,
    };
    let mut res = (status, Body::new(body)).into_response();
    let h = res.headers_mut();
    if let Some(tag) = &etag
        && let Ok(v) = HeaderValue::from_str(tag)
    {
        h.insert(header::ETAG, v);
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(GET_CACHE_CONTROL),
        );
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(SQL_STATEMENTS_HEADER, HeaderValue::from(stats.statements()));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    if let Some(v) = wrote_at.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(LSN_HEADER, v);
    }
    res
}

/// The WAL position a client asks to read after (`x-bughive-lsn`), if it sent one.
fn read_after(headers: &HeaderMap) -> Result<Option<Lsn>, AppError> {
    let Some(v) = headers.get(LSN_HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .map_err(|_| "not text".to_owned())
        .and_then(str::parse)
        .map(Some)
        .map_err(|e| AppError::bad_field(LSN_HEADER, e))
}

/// Cache-Control of GET answers: any cache may keep them only for this caller, and must ask
/// again (with `If-None-Match`) before reusing them.
const GET_CACHE_CONTROL: &str = "private, no-cache";

/// A strong ETag: the SHA-256 of the exact body.
fn etag_of(chunks: &std::collections::VecDeque<axum::body::Bytes>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in chunks {
        h.update(c);
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names this ETag (or `*`).
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// A response body of chunks that share the pre-rendered fragments of the response (see
/// `api::exec::json::Chunks`), with an exact length.
struct ChunkBody {
    chunks: std::collections::VecDeque<axum::body::Bytes>,
    remaining: u64,
}

impl http_body::Body for ChunkBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(d) = &next {
            self.remaining = self.remaining.saturating_sub(d.len() as u64);
        }
        std::task::Poll::Ready(next.map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The name and type of the operation a request runs, for the metrics; parsed only once the
/// guard's scan says the document is safe to parse (execution reuses the parse).
fn operation_of(
    state: &AppState,
    request: &mut async_graphql::Request,
) -> (Option<String>, &'static str) {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    if state.schema.guard.scan(&request.query).is_err() {
        return (None, "invalid");
    }
    let wanted = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return (None, "invalid");
    };
    let (name, ty) = match &doc.operations {
        DocumentOperations::Single(op) => (None, op.node.ty),
        DocumentOperations::Multiple(ops) => {
            let found = match &wanted {
                Some(w) => ops.iter().find(|(n, _)| n.as_str() == w),
                None => ops.iter().next(),
            };
            match found {
                Some((n, op)) => (Some(n.to_string()), op.node.ty),
                None => return (None, "invalid"),
            }
        }
    };
    let kind = match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    (name.or(wanted), kind)
}

/// False when the document holds a mutation or subscription. Unparsable documents pass, so
/// the executor reports their syntax error as usual.
fn is_read_only(request: &mut async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(doc) = request.parsed_query() else {
        return true;
    };
    let query_only = |ty: OperationType| ty == OperationType::Query;
    match &doc.operations {
        DocumentOperations::Single(op) => query_only(op.node.ty),
        DocumentOperations::Multiple(ops) => ops.values().all(|op| query_only(op.node.ty)),
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when the database answers within a second and every migration is applied.
async fn ready(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(Duration::from_secs(1), migrations_applied(&state.db)).await;
    match check {
        Ok(Ok(true)) => {
            let mut body = json!({ "status": "ready", "listening": state.live.is_listening() });
            // A replica that is down or lagging does not make this replica unready: the
            // primary serves its reads meanwhile.
            if let Some(replicas) = state.db.replicas() {
                body["replicas"] = replicas
                    .status()
                    .into_iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "up": r.up,
                            "usable": r.usable,
                            "lagMs": r.lag.map(|l| l.as_millis() as u64),
                            "replayLsn": r.replay_lsn.to_string(),
                            "error": r.error,
                        })
                    })
                    .collect();
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": "migrations pending" })),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": e.message() })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": "database check timed out" })),
        )
            .into_response(),
    }
}
