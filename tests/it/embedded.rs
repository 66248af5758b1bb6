//! The embedded default: create, reuse, adopt a leftover postmaster, stop; and the binary's
//! own start-up and shutdown as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg, locate_bindir};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bughive-emb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn query_one(pg: &EmbeddedPg, db: &str, sql: &str) -> Result<i64, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&pg.url(db), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client.query_one(sql, &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_reuses_adopts_and_stops_a_cluster() {
    let dir = scratch("lifecycle");
    let opts = EmbeddedOptions::new(dir.join("pg"));

    let pg = EmbeddedPg::start(&opts).expect("first start");
    assert!(pg.created && !pg.adopted);
    pg.ensure_database("app").await.expect("create db");
    pg.ensure_database("app")
        .await
        .expect("create db twice is fine");
    let (client, conn) = tokio_postgres::connect(&pg.url("app"), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        .await
        .expect("write");
    drop(client);
    // Unix socket only: nothing listens on TCP.
    let conf: String = {
        let (c, conn) = tokio_postgres::connect(&pg.url("app"), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c.query_one("SHOW listen_addresses", &[])
            .await
            .expect("show")
            .get(0)
    };
    assert_eq!(conf, "");

    // A process that dies without stopping leaves the postmaster running: the next start adopts it.
    drop(pg);
    let pg = EmbeddedPg::start(&opts).expect("start over a live postmaster");
    assert!(!pg.created && pg.adopted);
    assert_eq!(
        query_one(&pg, "app", "SELECT n::bigint FROM kept")
            .await
            .expect("data"),
        42
    );

    pg.stop().expect("stop");
    assert!(
        query_one(&pg, "app", "SELECT 1::bigint").await.is_err(),
        "still reachable after stop"
    );
    assert!(!dir.join("pg/postmaster.pid").exists());

    // A second start reuses the data directory.
    let pg = EmbeddedPg::start(&opts).expect("restart");
    assert!(!pg.created && !pg.adopted);
    assert_eq!(
        query_one(&pg, "app", "SELECT n::bigint FROM kept")
            .await
            .expect("data kept"),
        42
    );
    pg.stop().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_binaries_give_one_clear_line() {
    let err = locate_bindir(
        None,
        Path::new("/nonexistent/postgresql"),
        "/nonexistent/pg_config",
    )
    .expect_err("nothing to find");
    let msg = err.to_string();
    assert!(!msg.contains('\n'));
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("DATABASE_URL"), "{msg}");

    let err = locate_bindir(
        Some(PathBuf::from("/nonexistent/bin")),
        Path::new("/usr/lib/postgresql"),
        "pg_config",
    )
    .expect_err("explicit PG_BINDIR without initdb");
    assert!(err.to_string().contains("PG_BINDIR"));
    assert!(locate_bindir(None, Path::new("/usr/lib/postgresql"), "pg_config").is_ok());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn_server(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        .env("BUGHIVE_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the gateway")
}

async fn wait_ready(port: u16, child: &mut Child) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            && r.status() == 200
        {
            return started.elapsed();
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "gateway exited early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn session_count(port: u16) -> i64 {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .json(&serde_json::json!({ "query": "{ sessions { totalCount } }" }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    v["data"]["sessions"]["totalCount"].as_i64().unwrap_or(-1)
}

fn terminate(child: &mut Child) {
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "gateway exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_its_own_database_and_cleans_up() {
    let dir = scratch("binary");
    let data = dir.join("pg");

    let port = free_port();
    let mut child = spawn_server(&data, port);
    let cold = wait_ready(port, &mut child).await;
    assert_eq!(session_count(port).await, 12, "demo data on first start");
    terminate(&mut child);
    assert!(
        !data.join("postmaster.pid").exists(),
        "SIGTERM must stop PostgreSQL"
    );

    let port = free_port();
    let mut child = spawn_server(&data, port);
    let warm = wait_ready(port, &mut child).await;
    assert_eq!(
        session_count(port).await,
        12,
        "data reused, demo not seeded twice"
    );
    // A killed gateway leaves PostgreSQL running; the next start adopts it.
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(data.join("postmaster.pid").exists());

    let port = free_port();
    let mut child = spawn_server(&data, port);
    let adopted = wait_ready(port, &mut child).await;
    assert_eq!(session_count(port).await, 12);
    terminate(&mut child);
    assert!(!data.join("postmaster.pid").exists());
    eprintln!(
        "embedded default, time to /ready: cold {cold:?}, warm {warm:?}, after a kill {adopted:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
