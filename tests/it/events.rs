//! The event log and resumable subscriptions: interleaved transactions never make a reader skip
//! an event, and a subscriber that reconnects to another gateway process with its last cursor
//! gets exactly what it missed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestDb, Ws, spawn_gateway, terminate, ws_connect, ws_next, ws_subscribe};

const PROTOCOL: &str = "graphql-transport-ws";
const EVENTS: &str = "subscription($s: UUID!, $a: String) { \
    sessionEvents(sessionId: $s, after: $a) { cursor kind entityId } }";

/// Kills the gateways a test started, even when it fails.
struct Gateways(Vec<std::process::Child>);

impl Drop for Gateways {
    fn drop(&mut self) {
        for g in &mut self.0 {
            terminate(g);
            let _ = g.wait();
        }
    }
}

async fn next_event(ws: &mut Ws) -> Value {
    let v = ws_next(ws).await;
    assert_eq!(v["type"], "next", "{v}");
    assert!(v["payload"].get("errors").is_none(), "{v}");
    v["payload"]["data"]["sessionEvents"].clone()
}

/// Nothing arrives within `wait`.
async fn quiet(ws: &mut Ws, wait: Duration) {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(m))) => {
                let text = m.to_text().unwrap_or_default().to_owned();
                assert!(
                    text.is_empty() || text.contains("\"ping\"") || text.contains("\"pong\""),
                    "an event arrived while an earlier transaction was still open: {text}"
                );
            }
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

async fn bug(c: &tokio_postgres::Client, session: uuid::Uuid, title: &str) {
    c.execute(
        "INSERT INTO bugs (session_id, title, category, priority, confidence) \
         VALUES ($1, $2, 'functional', 'high', 0.5)",
        &[&session, &title],
    )
    .await
    .expect("insert a bug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_commits_and_a_resume_on_another_gateway_lose_and_repeat_nothing() {
    let t = TestDb::new().await;
    let sid = t
        .ok(
            r#"mutation { createSession(input: { baseUrl: "https://events.example" }) { id } }"#,
            json!({}),
        )
        .await["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let session: uuid::Uuid = sid.parse().expect("uuid");
    let (g1, first) = spawn_gateway(&t.url, &[], std::process::Stdio::null()).await;
    let mut gateways = Gateways(vec![g1]);
    let (g2, second) = spawn_gateway(&t.url, &[], std::process::Stdio::null()).await;
    gateways.0.push(g2);

    let mut ws = ws_connect(first, PROTOCOL).await;
    ws_subscribe(
        &mut ws,
        PROTOCOL,
        "1",
        EVENTS,
        json!({ "s": sid, "a": "0.0" }),
    )
    .await;
    let created = next_event(&mut ws).await;
    assert_eq!(created["kind"], "SESSION_CREATED");
    let mut received = vec![created["cursor"].as_str().expect("cursor").to_owned()];

    // A transaction opens early and writes; two others commit while it stays open.
    let early = t.raw().await;
    early.batch_execute("BEGIN").await.expect("begin");
    bug(&early, session, "early").await;
    let other = t.raw().await;
    bug(&other, session, "between 1").await;
    bug(&other, session, "between 2").await;
    // Handing out the later commits now would move readers past the early one's event.
    quiet(&mut ws, Duration::from_millis(1500)).await;
    early.batch_execute("COMMIT").await.expect("commit");
    let e = next_event(&mut ws).await;
    received.push(e["cursor"].as_str().expect("cursor").to_owned());

    // The subscriber goes away mid-stream; more is committed, again out of order.
    drop(ws);
    let late = t.raw().await;
    late.batch_execute("BEGIN").await.expect("begin");
    bug(&late, session, "late").await;
    bug(&other, session, "while away").await;
    late.batch_execute("COMMIT").await.expect("commit");
    t.ok(
        "mutation($s: UUID!) { startSession(id: $s) { status } }",
        json!({ "s": sid }),
    )
    .await;

    let expected: Vec<String> = t
        .raw()
        .await
        .query(
            "SELECT txid::text || '.' || id::text FROM events WHERE session_id = $1 ORDER BY txid, id",
            &[&session],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expected.len(), 7, "{expected:?}");

    // Another gateway process resumes after the last cursor received.
    let last = received.last().cloned();
    let mut ws = ws_connect(second, PROTOCOL).await;
    ws_subscribe(
        &mut ws,
        PROTOCOL,
        "1",
        EVENTS,
        json!({ "s": sid, "a": last }),
    )
    .await;
    while received.len() < expected.len() {
        let e = next_event(&mut ws).await;
        received.push(e["cursor"].as_str().expect("cursor").to_owned());
    }
    quiet(&mut ws, Duration::from_millis(500)).await;
    assert_eq!(
        received, expected,
        "each committed event once, in log order"
    );

    // Retention deletes the log; a cursor from before it expires.
    let db = t.db.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pruned = bughive_gateway::store::events::retention::prune_all(&db, Duration::from_secs(1))
        .await
        .expect("prune");
    assert!(pruned >= 7, "{pruned}");
    let mut ws = ws_connect(second, PROTOCOL).await;
    ws_subscribe(
        &mut ws,
        PROTOCOL,
        "2",
        EVENTS,
        json!({ "s": sid, "a": received[1] }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    let text = v.to_string();
    assert!(text.contains("CURSOR_EXPIRED"), "{text}");
    drop(gateways);
}
