//! GraphQL over WebSocket with server keep-alives.
//!
//! async-graphql speaks both protocols but never pings on its own, so idle subscriptions behind
//! proxies get cut and clients cannot tell a quiet server from a dead one. This loop runs the
//! protocol and sends a keep-alive at a fixed interval: `{"type":"ping"}` in
//! graphql-transport-ws (clients answer with a pong), `{"type":"ka"}` in the legacy graphql-ws.

use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt, future};

use crate::graphql::AppSchema;

/// Serves one connection; `on_init` turns the `connection_init` payload into the connection's
/// data (its caller), or refuses the connection.
pub async fn serve<F, Fut>(
    socket: WebSocket,
    schema: AppSchema,
    protocol: WebSocketProtocols,
    on_init: F,
    keepalive: Duration,
) where
    F: FnOnce(serde_json::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|res| future::ready(res.is_ok()))
        .filter_map(|msg| {
            future::ready(match msg {
                Ok(Message::Text(t)) => Some(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
        });
    let mut output = async_graphql::http::WebSocket::new(schema.ws, input, protocol)
        .on_connection_init(on_init)
        .boxed();
    let ping = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let start = tokio::time::Instant::now() + keepalive;
    let mut ticks = tokio::time::interval_at(start, keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = output.next() => match msg {
                Some(WsMessage::Text(text)) => Message::Text(text.into()),
                Some(WsMessage::Close(code, reason)) => Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
                None => break,
            },
            _ = ticks.tick() => Message::Text(ping.into()),
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
