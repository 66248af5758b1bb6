//! `GET /metrics` in the Prometheus text format, through the `metrics` facade and its Prometheus
//! exporter. Counters and histograms are recorded where things happen (requests here, pool
//! timeouts in the store); gauges of state (pool, listener, subscribers, sockets, jobs, table
//! sizes) are read when scraped.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// The process's recorder: installed once, shared by every server in the process.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let statements = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 50.0];
        // The bucket lists are constant and valid; should the exporter refuse them, its
        // defaults still make every histogram a summary rather than nothing.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("bughive_sql_statements_per_request".into()),
                    &statements,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test's) may be installed already: then these metrics go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Makes sure the recorder exists before the first request records anything.
pub fn install() {
    let _ = handle();
}

/// Operation names are chosen by clients: the first 200 distinct ones are labels, the rest
/// are counted as `other`, so a client cannot blow up the series count.
fn operation_label(name: Option<&str>) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Some(name) = name else {
        return "anonymous".into();
    };
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if seen.contains(name) {
        return name.to_owned();
    }
    if seen.len() < 200 {
        seen.insert(name.to_owned());
        return name.to_owned();
    }
    "other".into()
}

/// Records one executed GraphQL request.
pub fn record_request(
    operation: Option<&str>,
    kind: &'static str,
    status: StatusCode,
    took: Duration,
    statements: u64,
    codes: impl Iterator<Item = String>,
) {
    let labels = [
        ("operation", operation_label(operation)),
        ("type", kind.to_owned()),
    ];
    metrics::counter!("bughive_graphql_requests_total", &labels).increment(1);
    metrics::histogram!("bughive_graphql_request_duration_seconds", &labels)
        .record(took.as_secs_f64());
    metrics::histogram!("bughive_sql_statements_per_request").record(statements as f64);
    if !status.is_success() {
        metrics::counter!("bughive_http_responses_total", "status" => status.as_u16().to_string())
            .increment(1);
    }
    for code in codes {
        metrics::counter!("bughive_graphql_errors_total", "code" => code).increment(1);
    }
}

/// One more open WebSocket until the guard is dropped.
pub struct SocketGauge;

impl SocketGauge {
    pub fn open() -> Self {
        metrics::gauge!("bughive_websocket_connections").increment(1.0);
        SocketGauge
    }
}

impl Drop for SocketGauge {
    fn drop(&mut self) {
        metrics::gauge!("bughive_websocket_connections").decrement(1.0);
    }
}

pub async fn scrape(State(state): State<AppState>) -> Response {
    let handle = handle();
    let status = state.db.pool().status();
    metrics::gauge!("bughive_db_pool_max_connections").set(status.max_size as f64);
    metrics::gauge!("bughive_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("bughive_db_pool_connections", "state" => "in_use")
        .set(status.size.saturating_sub(status.available) as f64);
    metrics::gauge!("bughive_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("bughive_listener_connected").set(if state.live.is_listening() {
        1.0
    } else {
        0.0
    });
    // A shared execution follows its row once for all its subscribers: count those instead.
    let shared = &state.schema.shared;
    let executions = shared.executions();
    metrics::gauge!("bughive_subscriptions_active")
        .set((state.live.subscribers() + shared.subscribers()).saturating_sub(executions) as f64);
    metrics::gauge!("bughive_subscription_shared_executions").set(executions as f64);
    if let Some(replicas) = state.db.replicas() {
        for r in replicas.status() {
            let up = if r.up { 1.0 } else { 0.0 };
            let usable = if r.usable { 1.0 } else { 0.0 };
            metrics::gauge!("bughive_db_replica_up", "replica" => r.name.clone()).set(up);
            metrics::gauge!("bughive_db_replica_usable", "replica" => r.name.clone()).set(usable);
            if let Some(lag) = r.lag {
                metrics::gauge!("bughive_db_replica_lag_seconds", "replica" => r.name)
                    .set(lag.as_secs_f64());
            }
        }
    }
    // Make sure the counters exist from the first scrape, at zero.
    metrics::counter!("bughive_db_pool_timeouts_total").increment(0);
    metrics::gauge!("bughive_websocket_connections").increment(0.0);
    // Database-wide figures, read with the pool and its statement timeout; a failure leaves the
    // last values and is counted.
    let db = state.db.scoped();
    let read = async {
        let mut conn = db.conn().await?;
        let jobs = crate::store::jobs::repo::counts(&mut conn).await?;
        drop(conn);
        let tables = crate::store::table_rows_estimate(&db).await?;
        crate::error::AppResult::Ok((jobs, tables))
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok((jobs, tables))) => {
            for (kind, st, n) in jobs {
                metrics::gauge!("bughive_jobs", "kind" => kind, "status" => st).set(n as f64);
            }
            for (table, rows) in tables {
                metrics::gauge!("bughive_table_rows_estimate", "table" => table).set(rows);
            }
        }
        _ => metrics::counter!("bughive_metrics_database_read_failures_total").increment(1),
    }
    let mut res = handle.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
