//! The command line as a user runs it, against a test database.

use std::process::{Command, Output};

use crate::harness::TestDb;

/// A small seed plan: 3 sessions x 4 pages x 2 bugs = 39 rows.
const SEED: &[&str] = &[
    "seed",
    "--sessions",
    "3",
    "--pages-per-session",
    "4",
    "--bugs-per-page",
    "2",
];

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the gateway binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_revert_seed_and_schema() {
    let t = TestDb::new().await;
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('crawl_sessions', 'pages', 'bugs', 'jobs')";

    // Newest first: every migration after jobs keeps the four core tables, then jobs, then the
    // core schema go.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations")
        .count();
    let mut lefts = vec![4; migrations - 2];
    lefts.extend([3, 0]);
    for left in lefts {
        let out = run(&t.url, &["migrate", "--revert"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(t.count(tables).await, left);
    }
    let out = run(&t.url, &["migrate", "--revert"]);
    assert!(
        !out.status.success(),
        "reverting with nothing applied must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No migrations have been run"));

    let out = run(&t.url, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.count(tables).await, 4);

    let out = run(&t.url, SEED);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 60 rows"));
    assert_eq!(t.count("SELECT count(*) FROM bugs").await, 24);
    // Three agents; two executions per started session, costing what their session cost.
    assert_eq!(t.count("SELECT count(*) FROM agent_executions").await, 6);
    // Evidence of the executions for the bugs of each started session's first page.
    assert_eq!(t.count("SELECT count(*) FROM evidence").await, 6);
    assert_eq!(
        t.count("SELECT count(*) FROM bug_comments WHERE is_ai_generated")
            .await,
        6
    );
    assert_eq!(
        t.count(
            "SELECT count(*) FROM crawl_sessions s WHERE total_cost <> \
             (SELECT coalesce(sum(cost), 0) FROM agent_executions e WHERE e.session_id = s.id) \
             AND started_at IS NOT NULL"
        )
        .await,
        0
    );
    // Deterministic ids: seeding again adds nothing.
    let out = run(&t.url, SEED);
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 0 rows"));

    let out = run(&t.url, &["schema"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        bughive_gateway::api::sdl()
    );
}

#[test]
fn a_bad_database_url_is_one_clear_error() {
    let out = run("postgres://nobody@127.0.0.1:1/none", &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn without_a_secret_it_refuses_to_listen_beyond_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY")
        .env_remove("JWT_PUBLIC_KEY_FILE")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && err.contains("JWT_SECRET"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_a_token_the_server_accepts() {
    let mint = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
            .arg("token")
            .args(args)
            .env(
                "JWT_SECRET",
                String::from_utf8_lossy(crate::access::SECRET).as_ref(),
            )
            .output()
            .expect("run")
    };
    let out = mint(&["--sub", "cli-worker", "--role", "service", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let t = TestDb::new().await;
    let addr = t
        .serve_with(crate::access::hs256(), crate::access::unlimited())
        .await;
    let (status, v) = crate::access::post(
        addr,
        Some(&token),
        "{ me { subject role } }",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["me"]["subject"], "cli-worker");
    assert_eq!(v["data"]["me"]["role"], "SERVICE");

    for bad in [
        &["--sub", "x", "--role", "root"][..],
        &["--sub", "x", "--ttl", "soon"][..],
        &["--sub", ""][..],
    ] {
        let out = mint(bad);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error:"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["token", "--sub", "x"])
        .env_remove("JWT_SECRET")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET must be set"));
}

/// A database that was never migrated, on the test cluster.
async fn empty_database(t: &TestDb) -> String {
    let (prefix, _) = t.url.split_once("dbname=").expect("a key=value url");
    let name = format!("empty_{}", uuid::Uuid::new_v4().simple());
    let (admin, conn) =
        tokio_postgres::connect(&format!("{prefix}dbname='postgres'"), tokio_postgres::NoTls)
            .await
            .expect("admin");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create");
    format!("{prefix}dbname='{name}'")
}

/// Replicas that start together migrate once: the others wait on the advisory lock, then find
/// nothing to do. `migrate --check` tells a pipeline whether migrations are pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_check_reports_pending() {
    let t = TestDb::new().await;
    let url = empty_database(&t).await;

    let out = run(&url, &["migrate", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pending migrations must fail the check"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pending: 2026-11-22-000001_core_schema"),
        "{stdout}"
    );

    let procs: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
                .arg("migrate")
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for p in procs {
        let out = p.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM __diesel_schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    let known = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations")
        .count() as i64;
    assert_eq!(n, known);
    let out = run(&url, &["migrate", "--check"]);
    assert_eq!(out.status.code(), Some(0));

    // A database migrated by a newer gateway: this one refuses to run on it.
    client
        .batch_execute("INSERT INTO __diesel_schema_migrations (version) VALUES ('29991231000001')")
        .await
        .expect("a future migration");
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let out = run(&url, args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("29991231000001") && stderr.contains("newer"),
            "{stderr}"
        );
    }
}

/// Serves with the given environment until one request with an `x-request-id` is answered;
/// returns its standard error.
async fn serve_logs(t: &TestDb, env: &[(&str, &str)]) -> String {
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info"));
    let (child, addr) =
        crate::harness::spawn_gateway(&t.url, &env, std::process::Stdio::piped()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/graphql"))
        .header("x-request-id", "req-in-logs-42")
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.headers()["x-request-id"], "req-in-logs-42");
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("health");
    assert!(
        r.headers().get("x-request-id").is_some(),
        "a request id is made up when absent"
    );
    crate::harness::terminate(&child);
    let out = child.wait_with_output().expect("wait");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_with_request_ids_and_plain_logs_have_no_colour_codes() {
    let t = TestDb::new().await;
    let logs = serve_logs(&t, &[("LOG_FORMAT", "json")]).await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["span"]["request_id"] == "req-in-logs-42"),
        "no line carries the request id: {logs}"
    );

    let logs = serve_logs(&t, &[]).await;
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a piped log: {logs:?}"
    );
    assert!(logs.contains("request_id=req-in-logs-42"), "{logs}");
}

/// `backup` writes rotated pg_dump archives; `restore` brings one back into an empty database
/// with every row as it was, the audit log still immutable, and refuses a non-empty database
/// unless forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_round_trip_and_the_audit_log_stays_immutable() {
    let t = TestDb::new().await;
    let out = run(&t.url, SEED);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, _) = t
        .gql(
            "mutation { createSession(input: { baseUrl: \"https://backup.test/\" }) { id } }",
            serde_json::json!({}),
        )
        .await;
    assert!(v.get("errors").is_none(), "{v}");
    assert!(t.count("SELECT count(*) FROM audit_logs").await > 0);

    let dir = std::env::temp_dir().join(format!("bh-backups-{}", uuid::Uuid::new_v4()));
    let dir_s = dir.display().to_string();
    for _ in 0..3 {
        let out = run(&t.url, &["backup", "--dir", &dir_s, "--keep", "2"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("wrote "));
    }
    let mut archives: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    archives.sort();
    assert_eq!(archives.len(), 2, "{archives:?}");
    let newest = archives[1].display().to_string();

    let copy = empty_database(&t).await;
    let out = run(&copy, &["restore", &newest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connect = |url: String| async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c
    };
    let (a, b) = (connect(t.url.clone()).await, connect(copy.clone()).await);
    let tables: Vec<String> = a
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 8, "{tables:?}");
    for table in &tables {
        let q = format!(
            "SELECT count(*)::bigint, coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM \"{table}\" t"
        );
        let (ra, rb) = (
            a.query_one(&q, &[]).await.expect("a"),
            b.query_one(&q, &[]).await.expect("b"),
        );
        let (na, ha): (i64, String) = (ra.get(0), ra.get(1));
        let (nb, hb): (i64, String) = (rb.get(0), rb.get(1));
        assert_eq!((na, &ha), (nb, &hb), "{table} differs after the round trip");
    }
    // The restored audit log is as immutable as the original.
    let err = b
        .batch_execute("UPDATE audit_logs SET action = 'rewritten'")
        .await
        .expect_err("the audit log is immutable");
    assert!(
        err.to_string().contains("db error") || err.as_db_error().is_some(),
        "{err}"
    );
    let err = b
        .batch_execute("TRUNCATE audit_logs")
        .await
        .expect_err("no truncate");
    assert!(err.as_db_error().is_some(), "{err}");

    // Not into a database that has data, unless forced.
    let out = run(&t.url, &["restore", &newest]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let out = run(
        &copy,
        &["restore", "--force", &archives[0].display().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM: the listener stops, a large `recordPages` in flight is either fully written and
/// acknowledged or not written at all, and WebSockets close with 1001 (going away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_writes_in_flight_and_closes_websockets_with_1001() {
    use futures::StreamExt;
    let t = TestDb::new().await;
    let (v, _) = t
        .gql(
            "mutation { createSession(input: { baseUrl: \"https://term.test/\" }) { id } }",
            serde_json::json!({}),
        )
        .await;
    let sid = v["data"]["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    t.gql(
        &format!("mutation {{ startSession(id: \"{sid}\") {{ id }} }}"),
        serde_json::json!({}),
    )
    .await;

    let (child, addr) = crate::harness::spawn_gateway(
        &t.url,
        &[("SHUTDOWN_GRACE_SECS", "30")],
        std::process::Stdio::null(),
    )
    .await;
    let http = reqwest::Client::new();
    let mut ws = crate::harness::ws_connect(addr, "graphql-transport-ws").await;

    let pages: Vec<serde_json::Value> = (0..5_000)
        .map(|i| serde_json::json!({ "url": format!("https://term.test/p{i}"), "depth": 1 }))
        .collect();
    let body = serde_json::json!({
        "query": "mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted } }",
        "variables": { "s": sid, "p": pages },
    });
    let write = tokio::spawn({
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{addr}/graphql"))
                .json(&body)
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["data"]["recordPages"]["inserted"].as_i64()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    crate::harness::terminate(&child);

    // The socket is told the server is going away.
    let code = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("closed within 10 s");
    assert_eq!(code, Some(1001));

    let acknowledged = write.await.expect("task");
    let stored = t
        .count(&format!(
            "SELECT count(*) FROM pages WHERE session_id = '{sid}'"
        ))
        .await;
    match acknowledged {
        Some(n) => assert_eq!((n, stored), (5_000, 5_000), "acknowledged means written"),
        None => assert_eq!(stored, 0, "unacknowledged means not written"),
    }
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success(), "a graceful stop exits 0");
}
