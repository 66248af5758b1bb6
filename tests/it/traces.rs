//! OpenTelemetry traces, received by a small OTLP/HTTP receiver of the test's own (decoding the
//! protobuf with `opentelemetry-proto`): the request's span continues the caller's
//! `traceparent`, and each SQL statement is a child span of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::harness::seeded;

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        a.value.as_ref().and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            Some(AnyValue::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_their_sql_are_traced_over_otlp() {
    let (t, _) = seeded(2, 2, 1).await;
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                    let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
                    for rs in req.resource_spans {
                        for ss in rs.scope_spans {
                            all.extend(ss.spans);
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });

    let endpoint = format!("http://{otlp}");
    let (child, addr) = crate::harness::spawn_gateway(
        &t.url,
        &[
            ("RUST_LOG", "info"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let http = reqwest::Client::new();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let r = http
        .post(format!("http://{addr}/graphql"))
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .json(&serde_json::json!({
            "query": "query Traced { sessions { nodes { pages { nodes { bugs { nodes { id } } } } } } }"
        }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    // A graceful stop flushes the spans still buffered.
    crate::harness::terminate(&child);
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success());

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let started = Instant::now();
    let (request, sql) = loop {
        let all = spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let request = all
            .iter()
            .find(|s| s.name == "request" && hex(&s.trace_id) == trace_id)
            .cloned();
        if let Some(request) = request {
            let sql: Vec<Span> = all
                .iter()
                .filter(|s| s.name == "sql" && s.parent_span_id == request.span_id)
                .cloned()
                .collect();
            if sql.len() >= 3 {
                break (request, sql);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "spans received: {:?}",
            all.iter()
                .map(|s| (&s.name, hex(&s.trace_id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        hex(&request.parent_span_id),
        parent_id,
        "continues the caller's span"
    );
    assert_eq!(
        attr(&request, "graphql.operation").as_deref(),
        Some("Traced")
    );
    assert_eq!(attr(&request, "graphql.type").as_deref(), Some("query"));
    assert_eq!(attr(&request, "enduser.id").as_deref(), Some("dev:admin"));
    assert_eq!(attr(&request, "http.status_code").as_deref(), Some("200"));
    // The three reads (and, on a caller's first request, its provisioning).
    assert!(sql.len() >= 3, "one span per statement: {sql:?}");
    assert!(sql.iter().all(|s| hex(&s.trace_id) == trace_id));
    assert!(
        sql.iter()
            .all(|s| attr(s, "db.statement").is_some_and(|q| !q.contains("binds"))),
        "bound values stay out of traces: {sql:?}"
    );
    assert!(
        sql.iter()
            .any(|s| attr(s, "db.statement").is_some_and(|q| q.contains("LATERAL"))),
        "{sql:?}"
    );
}
