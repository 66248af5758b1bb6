//! The HTTP surface: GraphQL over POST/GET with content negotiation, GraphiQL, WebSocket
//! subscriptions, health and readiness.

mod graphiql;
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

use crate::db::{Db, migrations_applied};
use crate::graphql::{AppSchema, execute};
use crate::live::Live;

/// Response header carrying the number of SQL statements the request issued.
pub const SQL_STATEMENTS_HEADER: &str = "x-sql-statements";

#[derive(Clone)]
pub struct AppState {
    pub schema: AppSchema,
    pub db: Db,
    /// This replica's fan-out of committed changes to subscriptions.
    pub live: Live,
    /// Bounds how many GraphQL operations execute at once (`GRAPHQL_MAX_CONCURRENT`).
    limiter: Arc<Semaphore>,
    /// Interval of WebSocket keep-alive messages (`WS_KEEPALIVE_SECS`, default 15).
    ws_keepalive: Duration,
}

impl AppState {
    pub fn new(schema: AppSchema, db: Db, live: Live) -> Self {
        AppState {
            schema,
            db,
            live,
            limiter: Arc::new(Semaphore::new(max_concurrent())),
            ws_keepalive: Duration::from_secs(
                std::env::var("WS_KEEPALIVE_SECS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|s| *s > 0)
                    .unwrap_or(15),
            ),
        }
    }

    /// Overrides the WebSocket keep-alive interval.
    pub fn with_ws_keepalive(mut self, every: Duration) -> Self {
        self.ws_keepalive = every;
        self
    }
}

/// Operations executing at once; the rest wait in FIFO order. On a small machine, running 32
/// large queries side by side buys no throughput (the CPU is the limit) but multiplies the
/// memory held by half-built responses, so the default is a few per core.
fn max_concurrent() -> usize {
    std::env::var("GRAPHQL_MAX_CONCURRENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get() * 2))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(RequestBodyLimitLayer::new(8 * 1024 * 1024))
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
    // GraphQL messages are small: the 128 KiB default buffers cost 1000 idle subscribers over
    // 100 MiB, and a 64 MiB message limit invites abuse.
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| {
            let mut data = async_graphql::Data::default();
            data.insert(crate::graphql::context::RequestCtx::spawning(
                state.db.scoped(),
            ));
            data.insert(state.live.clone());
            ws::serve(socket, state.schema, protocol, data, state.ws_keepalive)
        })
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
    let permit = state.limiter.clone().acquire_owned().await;
    let (response, stats) = execute(&state.schema, &state.db, request).await;
    // GraphQL-over-HTTP: a request that never executed (no data) is a 4xx with the new media type.
    let status =
        if !legacy && response.data == async_graphql::Value::Null && !response.errors.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
    let body = match serde_json::to_vec(&response) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize response");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    drop(response);
    drop(permit);
    let content_type = if legacy {
        "application/json"
    } else {
        "application/graphql-response+json"
    };
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(SQL_STATEMENTS_HEADER, HeaderValue::from(stats.statements()));
    res
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
