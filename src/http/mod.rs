//! The HTTP surface: GraphQL over POST/GET with content negotiation, GraphiQL, WebSocket
//! subscriptions, health and readiness.

mod graphiql;
pub mod rate;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::WebSocketProtocols;
use async_graphql_axum::GraphQLRequest;
use axum::Router;
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::{Actor, Authenticator, Principal};
use crate::db::{Db, migrations_applied};
use crate::error::AppError;
use crate::graphql::{AppSchema, execute};
use crate::live::Live;

/// Response header carrying the number of SQL statements the request issued.
pub const SQL_STATEMENTS_HEADER: &str = "x-sql-statements";

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
    /// Operations executing, or whose response is being sent, at once (`GRAPHQL_MAX_CONCURRENT`).
    /// Running 32 large queries side by side buys no throughput (the CPU is the limit) but
    /// multiplies the memory held by half-built and unsent responses, so the default is two per
    /// core (one per core cut Q1's peak RSS from 126 to 90 MiB but also a sixth of its rate).
    pub max_concurrent: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: crate::graphql::Limits::default().max_body_bytes,
            rate_per_second: 100,
            rate_burst: 200,
            ws_keepalive: Duration::from_secs(15),
            max_concurrent: std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
        }
    }
}

impl HttpConfig {
    pub fn from_env(limits: &crate::graphql::Limits) -> anyhow::Result<Self> {
        use crate::config::env_num;
        let d = HttpConfig::default();
        let keepalive = env_num("WS_KEEPALIVE_SECS", d.ws_keepalive.as_secs())?;
        let concurrent = env_num("GRAPHQL_MAX_CONCURRENT", d.max_concurrent)?;
        Ok(HttpConfig {
            max_body_bytes: limits.max_body_bytes,
            rate_per_second: env_num("RATE_LIMIT_PER_SECOND", d.rate_per_second)?,
            rate_burst: env_num("RATE_LIMIT_BURST", d.rate_burst)?,
            ws_keepalive: Duration::from_secs(keepalive.max(1)),
            max_concurrent: concurrent.max(1),
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
    config: HttpConfig,
}

impl AppState {
    pub fn new(
        schema: AppSchema,
        db: Db,
        live: Live,
        auth: Authenticator,
        config: HttpConfig,
    ) -> Self {
        AppState {
            schema,
            db,
            live,
            auth,
            rate: Arc::new(rate::CallerLimiter::new(
                config.rate_per_second,
                config.rate_burst,
            )),
            limiter: Arc::new(Semaphore::new(config.max_concurrent)),
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
    if let Err(wait) = state.rate.check(&principal.subject) {
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

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
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
    accept.contains("application/json") && !accept.contains("application/graphql-response+json")
}

async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, async_graphql_axum::rejection::GraphQLRejection>,
) -> Response {
    if wants_html(&headers) {
        return graphiql::page().await.into_response();
    }
    match request {
        Ok(req) => run(state, headers, req.into_inner(), true).await,
        Err(rej) => rej.into_response(),
    }
}

/// GraphQL over WebSocket (graphql-transport-ws and the legacy graphql-ws). Each connection gets
/// its own request context, so queries and mutations sent over the socket resolve like HTTP ones,
/// and the replica's live-update hub, which subscriptions read from.
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
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request_id = request_id(&headers);
    // GraphQL messages are small: the 128 KiB default buffers cost 1000 idle subscribers over
    // 100 MiB, and a 64 MiB message limit invites abuse.
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| {
            let keepalive = state.config.ws_keepalive;
            let schema = state.schema.clone();
            let on_init = move |payload: serde_json::Value| async move {
                let token = init_token(&payload).or(header_token);
                let principal = state
                    .auth
                    .authenticate(token.as_deref())
                    .await
                    .map_err(|e| async_graphql::Error::new(e.message()))?;
                // A connection counts as one request of its caller against the rate limit.
                if let Err(wait) = state.rate.check(&principal.subject) {
                    let e = AppError::RateLimited {
                        retry_after_secs: wait.as_secs().max(1),
                    };
                    return Err(async_graphql::Error::new(e.message()));
                }
                let actor = Actor {
                    principal,
                    request_id: Some(request_id),
                };
                let mut data = async_graphql::Data::default();
                data.insert(crate::graphql::context::RequestCtx::spawning(
                    state.db.scoped(),
                    actor,
                ));
                data.insert(state.live.clone());
                data.insert(state.auth.clone());
                Ok(data)
            };
            ws::serve(socket, schema, protocol, on_init, keepalive)
        })
        .into_response()
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

/// The first GraphQL subprotocol the client offers.
fn ws_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().parse().ok())
}

async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: GraphQLRequest,
) -> Response {
    run(state, headers, req.into_inner(), false).await
}

async fn run(
    state: AppState,
    headers: HeaderMap,
    request: async_graphql::Request,
    via_get: bool,
) -> Response {
    let legacy = wants_legacy_json(&headers);
    let mut request = request;
    if via_get && !is_read_only(&mut request) {
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
    let principal = match admit(&state, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let request_id = request_id(&headers);
    let actor = Actor {
        principal,
        request_id: Some(request_id.clone()),
    };
    let request = request.data(state.auth.clone());
    let permit = state.limiter.clone().acquire_owned().await;
    let (response, stats) = execute(&state.schema, &state.db, actor, request).await;
    // GraphQL-over-HTTP: a request that never executed (no data) is a 4xx with the new media type.
    let status =
        if !legacy && response.data == async_graphql::Value::Null && !response.errors.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
    let body = response.to_chunks();
    drop(response);
    let content_type = if legacy {
        "application/json"
    } else {
        "application/graphql-response+json"
    };
    // The permit travels with the body: a finished response still holds its memory until the
    // client has read it, and that must count against the bound too.
    let body = PermitBody {
        remaining: body.len as u64,
        chunks: body.chunks,
        _permit: permit,
    };
    let mut res = (status, axum::body::Body::new(body)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(SQL_STATEMENTS_HEADER, HeaderValue::from(stats.statements()));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    res
}

/// A response body that holds an execution permit until hyper has taken all of it. Its chunks
/// share the pre-rendered fragments of the response (see `graphql::json::Chunks`).
struct PermitBody {
    chunks: std::collections::VecDeque<axum::body::Bytes>,
    remaining: u64,
    _permit: Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
}

impl http_body::Body for PermitBody {
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
        Ok(Ok(true)) => (
            StatusCode::OK,
            axum::Json(json!({ "status": "ready", "listening": state.live.is_listening() })),
        )
            .into_response(),
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
