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

    let expected = t.logged_events(session).await;
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

/// Opens a WebSocket with a bearer token.
async fn ws_as(addr: std::net::SocketAddr, token: &str) -> Ws {
    use futures::SinkExt;
    let mut ws = crate::harness::ws_open(addr, PROTOCOL).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({ "type": "connection_init", "payload": { "token": token } }).to_string(),
    ))
    .await
    .expect("init");
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
    ws
}

/// Reads SSE `data:` lines of `next` events until `n` have arrived.
pub async fn sse_events(res: &mut reqwest::Response, n: usize) -> Vec<(Option<String>, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if block.contains("event: next")
                && let Some(d) = data
            {
                out.push((id, d));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_show_a_caller_only_what_it_may_see_on_both_transports() {
    use crate::access::{hs256, post, token, unlimited};
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let (alice, bob) = (token("alice", "user"), token("bob", "user"));
    let session = |tok: String| async move {
        let (_, v) = post(
            addr,
            Some(&tok),
            r#"mutation { createSession(input: { baseUrl: "https://mine.example" }) { id } }"#,
            json!({}),
        )
        .await;
        v["data"]["createSession"]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let (a, b) = (session(alice.clone()).await, session(bob.clone()).await);
    let report = |tok: String, sid: String, title: &'static str| async move {
        let (_, v) = post(
            addr,
            Some(&tok),
            "mutation($s: UUID!, $t: String!) { reportBugs(sessionId: $s, bugs: [{ title: $t, category: FUNCTIONAL, priority: LOW, confidence: 0.5 }]) { id } }",
            json!({ "s": sid, "t": title }),
        )
        .await;
        assert!(v.get("errors").is_none(), "{v}");
    };
    report(alice.clone(), a.clone(), "alice secret").await;
    report(bob.clone(), b.clone(), "bob one").await;

    // Every session Bob may see, from the start of the log: his bug only.
    let q = "subscription { bugReported(after: \"0.0\") { cursor sessionId bug { title } } }";
    let mut ws = ws_as(addr, &bob).await;
    ws_subscribe(&mut ws, PROTOCOL, "1", q, json!({})).await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["data"]["bugReported"]["bug"]["title"], "bob one",
        "{v}"
    );
    quiet(&mut ws, Duration::from_millis(700)).await;
    report(alice.clone(), a.clone(), "alice again").await;
    report(bob.clone(), b.clone(), "bob two").await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["data"]["bugReported"]["bug"]["title"], "bob two",
        "{v}"
    );
    quiet(&mut ws, Duration::from_millis(700)).await;

    // Alice's session does not exist for Bob, and neither do her project's.
    ws_subscribe(
        &mut ws,
        PROTOCOL,
        "2",
        "subscription($s: UUID!) { sessionEvents(sessionId: $s, after: \"0.0\") { cursor } }",
        json!({ "s": a }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{v}"
    );

    // Over SSE: no token is refused; Bob's token streams Bob's events, each with its id.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql/stream");
    let body = json!({ "query": q });
    let res = http
        .post(&url)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
    let mut res = http
        .post(&url)
        .header("accept", "text/event-stream")
        .bearer_auth(&bob)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let got = sse_events(&mut res, 2).await;
    let titles: Vec<&Value> = got
        .iter()
        .map(|(_, d)| &d["data"]["bugReported"]["bug"]["title"])
        .collect();
    assert_eq!(titles, [&json!("bob one"), &json!("bob two")]);
    for (id, d) in &got {
        assert_eq!(
            id.as_ref(),
            d["data"]["bugReported"]["cursor"]
                .as_str()
                .map(str::to_owned)
                .as_ref()
        );
    }
    // Resuming with Last-Event-ID skips what was received.
    let mut res = http
        .post(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", got[0].0.clone().expect("id"))
        .bearer_auth(&bob)
        .json(&body)
        .send()
        .await
        .expect("post");
    let again = sse_events(&mut res, 1).await;
    assert_eq!(again[0].1["data"]["bugReported"]["bug"]["title"], "bob two");

    // EventSource's way: a GET with the token in the query string (it cannot set headers).
    let mut res = http
        .get(&url)
        .query(&[("query", q), ("token", bob.as_str())])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let got = sse_events(&mut res, 2).await;
    assert_eq!(got[1].1["data"]["bugReported"]["bug"]["title"], "bob two");
    let res = http
        .get(&url)
        .query(&[("query", q), ("token", "not-a-token")])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
}

/// Replicas prune the log at the same time without deleting an event twice or recording an
/// older pruned position over a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_safely_on_several_replicas_at_once() {
    let t = TestDb::new().await;
    let c = t.raw().await;
    c.batch_execute(
        "INSERT INTO crawl_sessions (id, base_url) VALUES ('00000000-0000-0000-0000-0000000000e1', 'https://prune.example'); \
         INSERT INTO bugs (session_id, title, category, priority, confidence) \
         SELECT '00000000-0000-0000-0000-0000000000e1', 'bug ' || n, 'functional', 'low', 0.5 \
         FROM generate_series(1, 4500) n",
    )
    .await
    .expect("events");
    let (n, newest): (i64, String) = {
        let r = c
            .query_one(
                "SELECT count(*), max(txid::text || '.' || id::text) FILTER (WHERE (txid, id) = \
                 (SELECT txid, id FROM events ORDER BY txid DESC, id DESC LIMIT 1)) FROM events",
                &[],
            )
            .await
            .expect("count");
        (r.get(0), r.get(1))
    };
    assert!(n > 4500, "{n}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let keep = Duration::from_secs(1);
    use bughive_gateway::store::events::retention::prune_all;
    let (a, b) = tokio::join!(prune_all(&t.db, keep), prune_all(&t.db, keep));
    let (a, b) = (a.expect("prune"), b.expect("prune"));
    assert_eq!(a + b, n, "every event deleted exactly once ({a} + {b})");
    assert_eq!(t.count("SELECT count(*) FROM events").await, 0);
    let pruned: String = c
        .query_one(
            "SELECT txid::text || '.' || id::text FROM event_log_pruned",
            &[],
        )
        .await
        .expect("pruned")
        .get(0);
    assert_eq!(pruned, newest);
}
