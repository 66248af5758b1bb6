//! `/metrics`: a real scrape after real traffic, every line parsed as the Prometheus text format.

use std::collections::HashMap;

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{seeded, ws_connect, ws_next};

/// One sample: its name, labels and value.
type Sample = (String, HashMap<String, String>, f64);

/// Parses the text format strictly: `# HELP`/`# TYPE` lines, blank lines, and samples
/// `name{label="value",…} number`. Panics on anything else.
fn parse(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next(), parts.next());
            match (kind, name) {
                (Some("HELP"), Some(n)) => assert!(name_ok(n), "{line}"),
                (Some("TYPE"), Some(n)) => {
                    assert!(name_ok(n), "{line}");
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                }
                _ => panic!("bad comment line: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = HashMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(k), "bad label name in {line}");
                    // Values escape `\`, `"` and newlines.
                    let mut v = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => {
                                if let Some((_, c)) = chars.next() {
                                    v.push(c);
                                }
                            }
                            Some((i, '"')) => break i,
                            Some((_, c)) => v.push(c),
                            None => panic!("unterminated label in {line}"),
                        }
                    };
                    labels.insert(k.to_owned(), v);
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "bad metric name in {line}");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_parses_and_counts_the_traffic() {
    let (t, _) = seeded(2, 2, 1).await;
    let addr = t.serve().await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");
    for _ in 0..3 {
        let r = http
            .post(&url)
            .json(&json!({ "query": "query Dashboard { sessions { nodes { id pages { nodes { id } } } } }" }))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
    }
    http.post(&url)
        .json(&json!({ "query": "{ nope }" }))
        .send()
        .await
        .expect("post");
    let (v, _) = t
        .gql(
            "mutation { enqueueJob(input: { kind: \"report\" }) { id } }",
            json!({}),
        )
        .await;
    assert!(v.get("errors").is_none(), "{v}");
    // A socket with a subscription open while scraping.
    let sid = {
        let (v, _) = t
            .gql("{ sessions(first: 1) { nodes { id } } }", json!({}))
            .await;
        v["data"]["sessions"]["nodes"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "type": "subscribe", "id": "1", "payload": {
            "query": format!("subscription {{ sessionProgress(sessionId: \"{sid}\") {{ kind }} }}") } })
        .to_string(),
    ))
    .await
    .expect("subscribe");
    assert_eq!(ws_next(&mut ws).await["type"], "next");

    let r = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.expect("text");
    let samples = parse(&text);
    let find = |name: &str, want: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    };
    let requests = find(
        "bughive_graphql_requests_total",
        &[("operation", "Dashboard"), ("type", "query")],
    )
    .unwrap_or_else(|| panic!("no request counter:\n{text}"));
    assert!(requests >= 3.0, "{requests}");
    assert!(
        find(
            "bughive_graphql_request_duration_seconds_bucket",
            &[("operation", "Dashboard"), ("le", "+Inf")]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        find(
            "bughive_graphql_errors_total",
            &[("code", "BAD_USER_INPUT")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        find("bughive_sql_statements_per_request_count", &[]).is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        find("bughive_db_pool_connections", &[("state", "idle")]).is_some(),
        "{text}"
    );
    assert!(find("bughive_db_pool_waiting", &[]).is_some(), "{text}");
    assert!(
        find("bughive_db_pool_timeouts_total", &[]).is_some(),
        "{text}"
    );
    assert!(
        find("bughive_websocket_connections", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        find("bughive_subscriptions_active", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(find("bughive_listener_connected", &[]), Some(1.0), "{text}");
    assert!(
        find("bughive_jobs", &[("kind", "report"), ("status", "pending")])
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        find("bughive_table_rows_estimate", &[("table", "bugs")]).is_some(),
        "{text}"
    );
}
