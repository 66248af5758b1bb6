//! Read replicas against a real streaming standby: a primary of the test's own, a replica made
//! from it with `pg_basebackup -R`, and the gateway binary with `DATABASE_READ_URL`. Which server
//! answered is read from each server's `pg_stat_statements`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg, find_bindir};
use serde_json::{Value, json};

use crate::harness::{spawn_gateway, terminate};

async fn client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// Reads of `crawl_sessions` a server has run (statements that are not writes).
async fn session_reads(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
         WHERE query ILIKE 'select%' AND query LIKE '%crawl_sessions%' \
           AND query NOT LIKE '%pg_stat_statements%'",
        &[],
    )
    .await
    .expect("pg_stat_statements")
    .get(0)
}

struct Counts {
    primary: i64,
    replica: i64,
}

async fn counts(p: &tokio_postgres::Client, r: &tokio_postgres::Client) -> Counts {
    Counts {
        primary: session_reads(p).await,
        replica: session_reads(r).await,
    }
}

async fn post(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    query: &str,
    lsn: Option<&str>,
) -> (Value, Option<String>) {
    let mut req = http
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(l) = lsn {
        req = req.header("x-bughive-lsn", l);
    }
    let res = req.send().await.expect("post");
    let header = res
        .headers()
        .get("x-bughive-lsn")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (res.json().await.expect("json"), header)
}

async fn replica_status(http: &reqwest::Client, addr: std::net::SocketAddr) -> Value {
    let ready: Value = http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    ready["replicas"][0].clone()
}

async fn wait_for(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let s = replica_status(http, addr).await;
        if ok(&s) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica never {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops what the test started, even when it fails half way: the gateway (which would keep
/// the test's output open) and the clusters under the test's directory.
struct Cleanup {
    dir: std::path::PathBuf,
    run_as: Option<(u32, u32)>,
    gateways: Vec<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            let _ = g.kill();
            let _ = g.wait();
        }
        for name in ["replica", "primary"] {
            let data = self.dir.join(name);
            if !data.join("postmaster.pid").exists() {
                continue;
            }
            let Ok(bin) = find_bindir() else { return };
            let mut cmd = std::process::Command::new(bin.join("pg_ctl"));
            cmd.arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-s"]);
            if let Some((uid, gid)) = self.run_as {
                cmd.uid(uid).gid(gid);
            }
            let _ = cmd.output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

/// `pg_basebackup -R` of `primary` into `dir`, as the user the server runs as.
fn base_backup(primary: &EmbeddedPg, dir: &Path) {
    let mut cmd = std::process::Command::new(find_bindir().expect("bindir").join("pg_basebackup"));
    cmd.arg("-D")
        .arg(dir)
        .args([
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
            "-U",
            "bughive",
            "-p",
            "5432",
        ])
        .arg("-h")
        .arg(primary.socket_dir());
    if let Some((uid, gid)) = primary.run_as() {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("run pg_basebackup");
    assert!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The primary's socket lives in its data directory, so the copy holds its lock file.
    let _ = std::fs::remove_file(dir.join(".s.PGSQL.5432.lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_streaming_replica_and_fail_over_to_the_primary() {
    let dir = std::env::temp_dir().join(format!(
        "bh-repl-{}",
        &uuid::Uuid::new_v4().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let settings = |o: EmbeddedOptions| {
        o.setting("shared_preload_libraries", "pg_stat_statements")
            .setting("fsync", "off")
    };
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        run_as: None,
        gateways: Vec::new(),
    };
    let primary = EmbeddedPg::start(&settings(EmbeddedOptions::new(dir.join("primary"))))
        .expect("start the primary");
    cleanup.run_as = primary.run_as();
    primary.ensure_database("bughive").await.expect("database");
    let p = client(&primary.url("bughive")).await;
    p.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .expect("pg_stat_statements");
    base_backup(&primary, &dir.join("replica"));
    let replica = EmbeddedPg::start(&settings(EmbeddedOptions::new(dir.join("replica"))))
        .expect("start the replica");
    let replica_url = replica.url("bughive");
    let r = client(&replica.url("bughive")).await;
    let in_recovery: bool = r
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("recovery")
        .get(0);
    assert!(in_recovery, "the replica must be a standby");
    // The gateway migrates the primary as it starts; a replica that has not replayed that yet
    // has no tables, so it must not serve reads however fresh its lag looks.
    r.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");

    let (gateway, addr) = spawn_gateway(
        &primary.url("bughive"),
        &[
            ("DATABASE_READ_URL", &replica_url),
            ("DB_READ_CHECK_MS", "100"),
            ("DB_READ_MAX_LAG_MS", "1500"),
        ],
        std::process::Stdio::inherit(),
    )
    .await;
    cleanup.gateways.push(gateway);
    let http = reqwest::Client::new();
    wait_for(&http, addr, "up", |s| s["up"] == true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = replica_status(&http, addr).await;
    assert_eq!(
        s["usable"], false,
        "a replica without the schema is usable: {s}"
    );
    let (res, _) = post(&http, addr, "{ sessions(first: 1) { nodes { id } } }", None).await;
    assert!(res.get("errors").is_none(), "{res}");
    r.batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    wait_for(&http, addr, "usable", |s| s["usable"] == true).await;

    // A query reads from the replica, not the primary.
    let list = "{ sessions(first: 5) { nodes { id } } }";
    let before = counts(&p, &r).await;
    let (res, _) = post(&http, addr, list, None).await;
    assert!(res.get("errors").is_none(), "{res}");
    let after = counts(&p, &r).await;
    assert_eq!(
        after.primary - before.primary,
        0,
        "a query reached the primary"
    );
    assert!(
        after.replica > before.replica,
        "the query never reached the replica"
    );

    // With replay paused the replica falls behind the next write.
    r.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");
    let before = counts(&p, &r).await;
    let (res, header) = post(
        &http,
        addr,
        r#"mutation { createSession(input: { baseUrl: "https://replica.example" }) { id baseUrl } }"#,
        None,
    )
    .await;
    assert!(res.get("errors").is_none(), "{res}");
    let wrote_at = res["extensions"]["lsn"]
        .as_str()
        .expect("a write returns extensions.lsn")
        .to_owned();
    assert_eq!(
        header.as_deref(),
        Some(wrote_at.as_str()),
        "the header matches"
    );
    let id = res["data"]["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let after = counts(&p, &r).await;
    assert_eq!(
        after.replica, before.replica,
        "the mutation read from the replica"
    );

    // Read your writes: with the write's position the read goes to the primary and sees it.
    let one = format!(r#"{{ session(id: "{id}") {{ id baseUrl }} }}"#);
    let before = counts(&p, &r).await;
    let (res, _) = post(&http, addr, &one, Some(&wrote_at)).await;
    assert_eq!(res["data"]["session"]["id"], json!(id), "{res}");
    let after = counts(&p, &r).await;
    assert_eq!(
        after.replica, before.replica,
        "a read-your-writes read went to a stale replica"
    );
    assert!(after.primary > before.primary);
    // A position that is not one is refused with a clear error.
    let (res, _) = post(&http, addr, &one, Some("yesterday")).await;
    assert_eq!(
        res["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{res}"
    );

    // Past DB_READ_MAX_LAG_MS the replica is skipped for every read, and /ready and the
    // metrics say why.
    let s = wait_for(&http, addr, "marked lagging", |s| s["usable"] == false).await;
    assert_eq!(s["up"], true, "{s}");
    assert!(s["lagMs"].as_u64().is_some_and(|l| l >= 1500), "{s}");
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let gauge = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("replica=\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(gauge("bughive_db_replica_usable"), 0.0);
    assert_eq!(gauge("bughive_db_replica_up"), 1.0);
    assert!(gauge("bughive_db_replica_lag_seconds") >= 1.5);
    let before = counts(&p, &r).await;
    let (res, _) = post(&http, addr, &one, None).await;
    assert_eq!(res["data"]["session"]["id"], json!(id), "{res}");
    let after = counts(&p, &r).await;
    assert_eq!(after.replica, before.replica, "a lagging replica answered");

    // Caught up again, it serves reads, read-your-writes ones included.
    r.batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    wait_for(&http, addr, "caught up", |s| {
        s["usable"] == true
            && s["replayLsn"]
                .as_str()
                .is_some_and(|l| lsn(l) >= lsn(&wrote_at))
    })
    .await;
    let before = counts(&p, &r).await;
    let (res, _) = post(&http, addr, &one, Some(&wrote_at)).await;
    assert_eq!(res["data"]["session"]["id"], json!(id), "{res}");
    let after = counts(&p, &r).await;
    assert_eq!(
        after.primary, before.primary,
        "a caught-up replica was passed over"
    );
    assert!(after.replica > before.replica);

    // A stopped replica: every read still succeeds, from the primary. The second gateway
    // checks its replica only at start-up, so it finds the replica gone when a request asks
    // for a connection, not through a check.
    let (slow, slow_addr) = spawn_gateway(
        &primary.url("bughive"),
        &[
            ("DATABASE_READ_URL", &replica_url),
            ("DB_READ_CHECK_MS", "600000"),
        ],
        std::process::Stdio::inherit(),
    )
    .await;
    cleanup.gateways.push(slow);
    let before = counts(&p, &r).await;
    let (res, _) = post(&http, slow_addr, &one, None).await;
    assert_eq!(res["data"]["session"]["id"], json!(id), "{res}");
    assert!(counts(&p, &r).await.replica > before.replica);
    drop(r);
    replica.stop().expect("stop the replica");
    for gateway in [addr, slow_addr] {
        for _ in 0..10 {
            let (res, _) = post(&http, gateway, &one, None).await;
            assert!(
                res.get("errors").is_none(),
                "a read failed after the replica stopped: {res}"
            );
            assert_eq!(res["data"]["session"]["id"], json!(id));
        }
        let s = replica_status(&http, gateway).await;
        assert_eq!(s["up"], false, "{s}");
        assert_eq!(s["usable"], false, "{s}");
    }
    for g in &cleanup.gateways {
        terminate(g);
    }
    for g in &mut cleanup.gateways {
        let _ = g.wait();
    }
    cleanup.gateways.clear();
}
