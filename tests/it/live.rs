//! Live subscriptions end to end: a real WebSocket client, the real server, PostgreSQL
//! LISTEN/NOTIFY; plus two replicas, a PostgreSQL restart, slow subscribers and keep-alives.

use std::time::Duration;

use bughive_gateway::live::Live;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{TestDb, Ws, code, ws_connect, ws_next, ws_subscribe};
use crate::jobs::{claim, enqueue};
use crate::mutations::{create_session, record};

const JOB_SUB: &str =
    "subscription($id: UUID!) { jobUpdated(jobId: $id) { id status progress message attempts } }";
const SESSION_SUB: &str = "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind at session { id status pagesDiscovered bugsFound totalCost } job { id status progress } } }";

/// Subscribes to `sessionProgress` over graphql-transport-ws and checks the first message is
/// the session's current state.
async fn watch_session(addr: std::net::SocketAddr, sid: &str) -> Ws {
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "1",
        SESSION_SUB,
        json!({ "id": sid }),
    )
    .await;
    assert_eq!(
        next_data(&mut ws).await["sessionProgress"]["kind"],
        "snapshot"
    );
    ws
}

/// The data of the next `next`/`data` message of a subscription.
async fn next_data(ws: &mut Ws) -> Value {
    let v = ws_next(ws).await;
    assert!(
        v["type"] == "next" || v["type"] == "data",
        "expected data, got {v}"
    );
    assert!(v["payload"].get("errors").is_none(), "errors: {v}");
    v["payload"]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_updates_arrive_over_graphql_transport_ws() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let job = enqueue(&t, "analyze", None, 3).await;
    let id = job["id"].as_str().expect("id").to_owned();

    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "1",
        JOB_SUB,
        json!({ "id": id }),
    )
    .await;
    let first = next_data(&mut ws).await;
    assert_eq!(
        first["jobUpdated"]["status"], "PENDING",
        "first message is the current state"
    );

    claim(&t, &["analyze"]).await;
    let v = next_data(&mut ws).await;
    assert_eq!(v["jobUpdated"]["status"], "RUNNING");
    assert_eq!(v["jobUpdated"]["attempts"], 1);

    for p in [0.25, 0.5] {
        t.ok(
            "mutation($id: UUID!, $p: Float!) { heartbeatJob(id: $id, progress: $p, message: \"crawling\") { id } }",
            json!({ "id": id, "p": p }),
        )
        .await;
        let v = next_data(&mut ws).await;
        assert_eq!(v["jobUpdated"]["progress"], p);
        assert_eq!(v["jobUpdated"]["message"], "crawling");
    }
    t.ok(
        "mutation($id: UUID!) { completeJob(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(
        next_data(&mut ws).await["jobUpdated"]["status"],
        "COMPLETED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_progress_arrives_over_the_legacy_protocol() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let sid = create_session(&t).await;

    let mut ws = ws_connect(addr, "graphql-ws").await;
    ws_subscribe(
        &mut ws,
        "graphql-ws",
        "s",
        SESSION_SUB,
        json!({ "id": sid }),
    )
    .await;
    let first = next_data(&mut ws).await;
    assert_eq!(first["sessionProgress"]["kind"], "snapshot");
    assert_eq!(first["sessionProgress"]["session"]["status"], "PENDING");

    // A crawl job drives the session: the claim's transaction moves both, and subscribers get
    // the session's change and the job's (kind `job`, with the job).
    let job = enqueue(&t, "crawl", Some(&sid), 3).await;
    let created = next_data(&mut ws).await;
    assert_eq!(created["sessionProgress"]["kind"], "job");
    assert_eq!(created["sessionProgress"]["job"]["status"], "PENDING");
    claim(&t, &["crawl"]).await;
    let (mut saw_status, mut saw_job) = (false, false);
    while !(saw_status && saw_job) {
        let v = next_data(&mut ws).await;
        let p = &v["sessionProgress"];
        assert_eq!(p["session"]["status"], "RUNNING", "{v}");
        match p["kind"].as_str() {
            Some("status") => saw_status = true,
            Some("job") => {
                assert_eq!(p["job"]["status"], "RUNNING", "{v}");
                saw_job = true;
            }
            other => panic!("unexpected kind {other:?}: {v}"),
        }
    }

    record(
        &t,
        &sid,
        json!([{ "url": "https://a.test/", "depth": 0 }, { "url": "https://a.test/b", "depth": 1 }]),
    )
    .await;
    let v = next_data(&mut ws).await;
    assert_eq!(v["sessionProgress"]["kind"], "pages");
    assert_eq!(v["sessionProgress"]["session"]["pagesDiscovered"], 2);

    t.ok(
        "mutation($id: UUID!) { heartbeatJob(id: $id, progress: 0.4) { id } }",
        json!({ "id": job["id"] }),
    )
    .await;
    let v = next_data(&mut ws).await;
    assert_eq!(v["sessionProgress"]["kind"], "job");
    assert_eq!(v["sessionProgress"]["job"]["progress"], 0.4);

    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.0100\") { id } }",
        json!({ "id": sid }),
    )
    .await;
    let v = next_data(&mut ws).await;
    assert_eq!(v["sessionProgress"]["kind"], "cost");
    assert_eq!(v["sessionProgress"]["session"]["totalCost"], "0.0100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = ws_connect(addr, protocol).await;
        for (i, q) in [JOB_SUB, SESSION_SUB].into_iter().enumerate() {
            let id = format!("q{i}");
            ws_subscribe(
                &mut ws,
                protocol,
                &id,
                q,
                json!({ "id": "00000000-0000-0000-0000-000000000009" }),
            )
            .await;
            let v = ws_next(&mut ws).await;
            assert_eq!(v["id"], json!(id));
            assert_eq!(
                v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{protocol}: {v}"
            );
            assert_eq!(ws_next(&mut ws).await["type"], "complete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_get_keep_alives() {
    let t = TestDb::new().await;
    let http = bughive_gateway::http::HttpConfig {
        ws_keepalive: Duration::from_millis(100),
        ..Default::default()
    };
    let addr = t.serve_with(Default::default(), http).await;
    for (protocol, ty) in [("graphql-transport-ws", "ping"), ("graphql-ws", "ka")] {
        let mut ws = ws_connect(addr, protocol).await;
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a keep-alive within 5 s")
            .expect("open")
            .expect("ok");
        let v: Value = serde_json::from_str(msg.to_text().expect("text")).expect("json");
        assert_eq!(v["type"], ty, "{protocol}");
    }
}

/// Waits until the hub's listener connection is up.
async fn listening(live: Live) -> Live {
    for _ in 0..500 {
        if live.is_listening() {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the listener never connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_serves_every_subscriber_of_a_row() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let live = listening(Live::start(t.url.clone(), t.db.scoped())).await;
    let uuid: uuid::Uuid = sid.parse().expect("uuid");
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut s = Box::pin(
            live.watch_session(uuid, false)
                .await
                .map_err(|e| e.message())
                .expect("watch"),
        );
        let first = s.next().await.expect("first state");
        assert_eq!(first.kind, "snapshot");
        streams.push(s);
    }
    let loads = live.loads();
    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"1\") { id } }",
        json!({ "id": sid }),
    )
    .await;
    for s in &mut streams {
        let u = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("the change within 10 s")
            .expect("an update");
        assert_eq!(u.kind, "cost");
        assert_eq!(u.row.expect("row").total_cost.to_string(), "1.0000");
    }
    assert_eq!(live.loads() - loads, 1, "one load for 50 subscribers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_skips_to_the_newest_state_without_stalling_others() {
    let t = TestDb::new().await;
    let job = enqueue(&t, "long", None, 3).await;
    claim(&t, &["long"]).await;
    let id: uuid::Uuid = job["id"].as_str().expect("id").parse().expect("uuid");
    let live = listening(Live::start(t.url.clone(), t.db.scoped())).await;
    let mut slow = Box::pin(
        live.watch_job(id, false)
            .await
            .map_err(|e| e.message())
            .expect("watch"),
    );
    let mut fast = Box::pin(
        live.watch_job(id, false)
            .await
            .map_err(|e| e.message())
            .expect("watch"),
    );
    slow.next().await.expect("first");
    fast.next().await.expect("first");

    // 40 committed changes; the fast subscriber sees each while the slow one reads nothing.
    for i in 1..=40 {
        let p = f64::from(i) / 40.0;
        t.ok(
            "mutation($id: UUID!, $p: Float!) { heartbeatJob(id: $id, progress: $p) { id } }",
            json!({ "id": id, "p": p }),
        )
        .await;
        loop {
            let u = tokio::time::timeout(Duration::from_secs(10), fast.next())
                .await
                .expect("the fast subscriber is not held back")
                .expect("update");
            if u.row.expect("row").progress == p {
                break;
            }
        }
    }
    // The slow one lost the middle (its buffer holds 16) and lands on the newest state.
    let mut seen = 0;
    let mut last = 0.0;
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_millis(300), slow.next()).await {
        seen += 1;
        last = u.row.expect("row").progress;
    }
    assert_eq!(last, 1.0, "the slow subscriber reaches the newest state");
    assert!(seen < 40, "the slow subscriber skipped, saw {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_reaches_a_subscriber_of_another() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let (a, mut pa) = spawn_replica(&t.url).await;
    let (b, mut pb) = spawn_replica(&t.url).await;

    let mut ws = watch_session(b, &sid).await;

    let v: Value = reqwest::Client::new()
        .post(format!("http://{a}/graphql"))
        .json(&json!({
            "query": "mutation($id: UUID!) { startSession(id: $id) { status } }",
            "variables": { "id": sid }
        }))
        .send()
        .await
        .expect("post to replica A")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"]["startSession"]["status"], "RUNNING", "{v}");
    let v = next_data(&mut ws).await;
    assert_eq!(v["sessionProgress"]["kind"], "status");
    assert_eq!(v["sessionProgress"]["session"]["status"], "RUNNING");
    drop(ws);
    for p in [&mut pa, &mut pb] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Runs the gateway binary on `url` as a separate process, as a replica would run.
async fn spawn_replica(url: &str) -> (std::net::SocketAddr, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn a replica");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
            && r.status() == 200
            && r.json::<Value>()
                .await
                .is_ok_and(|v| v["listening"] == true)
        {
            return (addr, child);
        }
        assert!(child.try_wait().expect("wait").is_none(), "replica exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!("replica never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_recover_when_postgres_restarts() {
    use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg};
    let dir = std::env::temp_dir().join(format!("bughive-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let opts = EmbeddedOptions::new(dir.join("pg")).setting("fsync", "off");
    let pg = EmbeddedPg::start(&opts).expect("own cluster");
    pg.ensure_database("app").await.expect("db");
    let url = pg.url("app");
    bughive_gateway::store::run_migrations(&url)
        .await
        .expect("migrate");
    let t = TestDb::on_url(url.clone());
    let addr = t.serve().await;
    let sid = create_session(&t).await;

    let mut ws = watch_session(addr, &sid).await;

    let restart = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || {
            pg.restart(&opts).expect("restart PostgreSQL");
            pg
        })
    };
    let pg = restart.await.expect("restart task");

    // After reconnecting, the listener sends every watched row again.
    let v = next_data(&mut ws).await;
    assert_eq!(v["sessionProgress"]["kind"], "resync", "{v}");
    assert_eq!(v["sessionProgress"]["session"]["status"], "PENDING");

    // And changes committed after the restart flow again. Pooled connections broke with the
    // restart, so the first attempts may report UNAVAILABLE.
    let mut done = false;
    for _ in 0..50 {
        let (v, _) = t
            .gql(
                "mutation($id: UUID!) { startSession(id: $id) { status } }",
                json!({ "id": sid }),
            )
            .await;
        if v.get("errors").is_none() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the gateway recovered from the restart");
    let mut v = next_data(&mut ws).await;
    while v["sessionProgress"]["kind"] == "resync" {
        v = next_data(&mut ws).await;
    }
    assert_eq!(v["sessionProgress"]["kind"], "status");
    assert_eq!(v["sessionProgress"]["session"]["status"], "RUNNING");
    drop(ws);
    let _ = pg.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_carry_codes_and_limits_apply() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    let aliases: String = (0..31).map(|i| format!("a{i}: __typename ")).collect();
    for (id, q, want) in [
        ("1", "subscription { nope }".to_owned(), "BAD_USER_INPUT"),
        (
            "2",
            format!("subscription {{ {aliases} }}"),
            "QUERY_TOO_COMPLEX",
        ),
    ] {
        ws_subscribe(&mut ws, "graphql-transport-ws", id, &q, json!({})).await;
        let v = ws_next(&mut ws).await;
        assert_eq!(v["id"], id);
        assert_eq!(code(&v["payload"]), want, "{q}: {v}");
        // The operation ends with its error: the protocol's `error` message.
        assert_eq!(v["type"], "error", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_watched_session_ends_its_subscription() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let sid = create_session(&t).await;
    let mut ws = watch_session(addr, &sid).await;
    t.ok(
        "mutation($id: UUID!) { deleteSession(id: $id) }",
        json!({ "id": sid }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{v}"
    );
    assert_eq!(ws_next(&mut ws).await["type"], "complete");
}

/// A WebSocket initialized with `bearer`'s token.
async fn ws_as(addr: std::net::SocketAddr, bearer: &str) -> Ws {
    use futures::SinkExt;
    let mut ws = crate::harness::ws_open(addr, "graphql-transport-ws").await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {bearer}") } })
            .to_string(),
    ))
    .await
    .expect("init");
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
    ws
}

/// Waits until this replica runs `executions` shared executions for `subscribers` subscribers.
async fn wait_shared(
    shared: &bughive_gateway::api::exec::shared::Shared,
    executions: usize,
    subscribers: usize,
) {
    let started = std::time::Instant::now();
    while shared.executions() != executions || shared.subscribers() != subscribers {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "executions {} subscribers {}",
            shared.executions(),
            shared.subscribers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next message's payload, whatever it holds.
async fn next_payload(ws: &mut Ws) -> Value {
    let v = ws_next(ws).await;
    assert_eq!(v["type"], "next", "{v}");
    v["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_subscribers_share_one_execution_and_each_sees_only_its_own_answer() {
    use crate::access::{hs256, post, token, unlimited};
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let (alice, bob, admin) = (
        token("alice", "user"),
        token("bob", "user"),
        token("root", "admin"),
    );
    let (_, v) = post(
        addr,
        Some(&alice),
        "mutation { createSession(input: { baseUrl: \"https://shared.example\" }) { id } }",
        json!({}),
    )
    .await;
    let sid = v["data"]["createSession"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    let costs = "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind session { id totalCost } } }";
    let pages = "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind session { id status pagesDiscovered } } }";
    let subscribe = async |bearer: &str, query: &str| {
        let mut ws = ws_as(addr, bearer).await;
        ws_subscribe(
            &mut ws,
            "graphql-transport-ws",
            "1",
            query,
            json!({ "id": sid }),
        )
        .await;
        let first = next_payload(&mut ws).await;
        (ws, first)
    };

    // Alice three times with one selection (one after the other, so the later ones join a
    // running execution), once with another; the admin with the first; Bob, who may not see
    // the session.
    let mut same = Vec::new();
    for _ in 0..3 {
        let (ws, first) = subscribe(&alice, costs).await;
        assert_eq!(
            first["data"]["sessionProgress"]["kind"], "snapshot",
            "{first}"
        );
        assert_eq!(
            first["data"]["sessionProgress"]["session"],
            json!({ "id": sid, "totalCost": "0.0000" })
        );
        same.push(ws);
    }
    // Server-Sent Events subscribers share executions with WebSocket ones.
    let mut sse = reqwest::Client::new()
        .post(format!("http://{addr}/graphql/stream"))
        .header("accept", "text/event-stream")
        .bearer_auth(&alice)
        .json(&json!({ "query": costs, "variables": { "id": sid } }))
        .send()
        .await
        .expect("post");
    assert_eq!(sse.status(), 200);
    let first = crate::events::sse_events(&mut sse, 1).await;
    assert_eq!(first[0].1["data"]["sessionProgress"]["kind"], "snapshot");
    let (mut other_fields, first) = subscribe(&alice, pages).await;
    assert_eq!(
        first["data"]["sessionProgress"]["session"],
        json!({ "id": sid, "status": "PENDING", "pagesDiscovered": 0 })
    );
    let (mut admin_ws, first) = subscribe(&admin, costs).await;
    assert_eq!(first["data"]["sessionProgress"]["kind"], "snapshot");
    let (_bob_ws, first) = subscribe(&bob, costs).await;
    assert_eq!(
        first["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "another user's session leaked through a shared execution: {first}"
    );
    assert!(first["data"].is_null(), "{first}");

    // One execution per (operation, variables, caller): Alice's two selections and the admin's.
    let shared = &t.schema.shared;
    wait_shared(shared, 3, 6).await;

    let (_, v) = post(
        addr,
        Some(&alice),
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.5\") { id } }",
        json!({ "id": sid }),
    )
    .await;
    assert!(v.get("errors").is_none(), "{v}");
    // The next message of every subscriber is the change: the snapshots that later joiners
    // asked for never reach those who already had theirs.
    let mut bytes = Vec::new();
    for ws in &mut same {
        let v = ws_next(ws).await;
        assert_eq!(
            v["payload"]["data"]["sessionProgress"]["kind"], "cost",
            "{v}"
        );
        assert_eq!(
            v["payload"]["data"]["sessionProgress"]["session"],
            json!({ "id": sid, "totalCost": "0.5000" })
        );
        bytes.push(v["payload"].to_string());
    }
    let over_sse = crate::events::sse_events(&mut sse, 1).await;
    bytes.push(over_sse[0].1.to_string());
    assert!(bytes.windows(2).all(|w| w[0] == w[1]), "{bytes:?}");
    let v = next_payload(&mut admin_ws).await;
    assert_eq!(
        v["data"]["sessionProgress"]["session"],
        json!({ "id": sid, "totalCost": "0.5000" })
    );
    let v = next_payload(&mut other_fields).await;
    assert_eq!(v["data"]["sessionProgress"]["kind"], "cost");
    assert_eq!(
        v["data"]["sessionProgress"]["session"],
        json!({ "id": sid, "status": "PENDING", "pagesDiscovered": 0 })
    );

    // Leaving ends a shared execution only with its last subscriber.
    same.truncate(1);
    drop(other_fields);
    drop(sse);
    wait_shared(shared, 2, 2).await;
}
