//! GraphQL over Server-Sent Events at `/graphql/stream`: the `graphql-sse` library's protocol in
//! its "distinct connections" mode, for clients behind proxies that block WebSockets and for
//! plain `EventSource`. Each operation is one HTTP response of `next` events and a final
//! `complete`; queries and mutations answer once. The caller, rate limit, trusted documents,
//! document limits and per-caller connection cap are those of the other transports.
//!
//! Resuming: every message of a resumable subscription (`sessionEvents`, `bugReported`) carries
//! `id:` = its cursor, and a request with `Last-Event-ID` (a browser's automatic reconnect)
//! resumes right after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::{AppState, admit, post_body_kind, read_body, refuse, ws};
use crate::api::context::{CursorSlot, RequestCtx, ResumeFrom};
use crate::api::exec::shared::Key;
use crate::auth::{Actor, Principal};
use crate::error::AppError;

/// Idle streams get a comment this often, so proxies do not cut them.
const KEEP_ALIVE: Duration = Duration::from_secs(12);

pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(kind) = post_body_kind(&headers) else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &AppError::bad_input("POST bodies must be application/json"),
        );
    };
    let principal = match admit(&state, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    match read_body(&state, &headers, kind, body).await {
        Ok(request) => stream(state, headers, principal, request, false).await,
        Err(refused) => refused,
    }
}

/// `EventSource` users: `?query=…&variables=…&operationName=…`. A browser's `EventSource`
/// cannot set headers, so the bearer token may come as `&token=…` instead (the gateway's own
/// logs record paths only; a proxy in front may log query strings).
pub(super) async fn get(
    State(state): State<AppState>,
    mut headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(token) = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(header::AUTHORIZATION, v);
    }
    let principal = match admit(&state, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    match async_graphql::http::parse_query_string(query.as_deref().unwrap_or("")) {
        Ok(request) => stream(state, headers, principal, request, true).await,
        Err(e) => refuse(
            StatusCode::BAD_REQUEST,
            &AppError::bad_input(format!("invalid GraphQL GET request: {e}")),
        ),
    }
}

async fn stream(
    state: AppState,
    headers: HeaderMap,
    principal: Principal,
    mut request: async_graphql::Request,
    via_get: bool,
) -> Response {
    if let Err(e) = state
        .documents
        .resolve(&state.db, &state.schema.guard, &principal, &mut request)
        .await
    {
        return refuse(StatusCode::BAD_REQUEST, &e);
    }
    if request.query.trim().is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &AppError::bad_field("query", "the request has no query document"),
        );
    }
    let guard = &state.schema.guard;
    if let Err(e) = guard.scan(&request.query) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "errors": [e] })),
        )
            .into_response();
    }
    let variables = std::mem::take(&mut request.variables);
    let operation_name = request.operation_name.take();
    let mut subscription = false;
    let mut shareable = false;
    let mut mutation = false;
    if let Ok(doc) = request.parsed_query() {
        if let Err(e) = guard.check(doc, &variables) {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "errors": [e] })),
            )
                .into_response();
        }
        subscription = ws::is_subscription(doc, operation_name.as_deref());
        shareable = state
            .schema
            .shared
            .shareable(doc, operation_name.as_deref());
        mutation = ws::operation_type(doc, operation_name.as_deref())
            == Some(async_graphql::parser::types::OperationType::Mutation);
    }
    request.variables = variables;
    request.operation_name = operation_name;
    if via_get && mutation {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            axum::Json(json!({ "errors": [{
                "message": "mutations cannot be sent over GET; use POST",
                "extensions": { "code": "BAD_USER_INPUT" }
            }]})),
        )
            .into_response();
    }
    // Streams count against the caller's connection cap, with its WebSockets.
    let max = state.config.ws.max_connections_per_caller;
    let Some(slot) = ws::Connections::enter(&state.ws_connections, &principal.subject, max) else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &AppError::TooMany(format!(
                "too many open streams for this caller (at most {max})"
            )),
        );
    };
    let cursors = CursorSlot::default();
    let key = shareable.then(|| Key::of(&request, &principal));
    let actor = Actor {
        principal,
        request_id: Some(super::request_id(&headers)),
    };
    let mut request = request
        .data(RequestCtx::spawning(state.db.scoped(), actor))
        .data(state.live.clone())
        .data(state.auth.clone())
        .data(cursors.clone());
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    {
        request = request.data(ResumeFrom(last.trim().to_owned()));
    }
    let mut stopping = state.stopping.subscribe();
    // A replica going away ends its streams; clients reconnect (elsewhere) and resume.
    let shutdown = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let nexts = match key {
        // Shared with identical subscribers on this replica, WebSocket ones included.
        Some(key) => {
            let schema = &state.schema;
            schema
                .shared
                .join(&schema.ws, key, request)
                .map(|frame| Ok(Event::default().event("next").data(&*frame.payload)))
                .boxed()
        }
        None => ws::responses(&state, request, subscription)
            .map(move |response| {
                let data = serde_json::to_string(&response).unwrap_or_else(|_| {
                    r#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#
                        .to_owned()
                });
                let mut event = Event::default().event("next").data(data);
                if let Some(cursor) = cursors.take() {
                    event = event.id(cursor);
                }
                Ok::<_, Infallible>(event)
            })
            .boxed(),
    };
    let events = nexts
        .chain(futures_util::stream::once(async {
            Ok(Event::default().event("complete").data(""))
        }))
        .take_until(shutdown)
        .map(move |e| {
            // The caller's place in the connection cap lasts as long as the stream.
            let _ = &slot;
            e
        });
    // A comment first, so proxies pass the headers on at once.
    let opened = futures_util::stream::once(async { Ok(Event::default().comment("")) });
    let mut res = Sse::new(opened.chain(events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(""))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
