//! `bench live`: subscription fan-out and the job queue, against the gateway binary.
//!
//! 1. N WebSocket clients (graphql-transport-ws) subscribe to `sessionProgress` of one session.
//!    Each round commits one `addSessionCost` over HTTP and measures the time from the committed
//!    response to the last subscriber receiving the new total (and to each subscriber).
//! 2. 10 workers drain a queue of jobs with `claimJob` + `completeJob` over HTTP. A job claimed
//!    twice, or left unfinished, fails the benchmark.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bughive_gateway::store::embedded::EmbeddedPg;
use bughive_gateway::store::run_migrations;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::http::Http;
use crate::{Opts, ms, peak_rss_kib, percentile, reset_peak_rss, rss_kib, start_gateway};

const SUBSCRIPTION: &str = "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind session { id totalCost } } }";

async fn call(http: &mut Http, query: &str, variables: Value) -> anyhow::Result<Value> {
    let body = serde_json::to_vec(&json!({ "query": query, "variables": variables }))?;
    let reply = http.post(&body).await?;
    let v: Value = serde_json::from_slice(&reply.body)?;
    if reply.status != 200 || v.get("errors").is_some() {
        bail!("{query}: HTTP {}: {v}", reply.status);
    }
    Ok(v["data"].clone())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("websocket silent for 30 s")?
            .context("websocket closed")??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "ping" {
                ws.send(Message::text(r#"{"type":"pong"}"#)).await?;
                continue;
            }
            return Ok(v);
        }
    }
}

/// Connects, subscribes and waits for the first state; then forwards every `cost` update's total
/// with its arrival time.
async fn subscriber(
    addr: String,
    session: String,
    out: mpsc::UnboundedSender<(String, Instant)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut req = format!("ws://{addr}/graphql/ws").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    // tungstenite zeroes its whole read buffer (128 KiB by default) before each read: with
    // thousands of sockets in this one process that memset was a fifth of the machine's CPU,
    // taken from the gateway it measures. Its messages are a few hundred bytes.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true).await?;
    ws.send(Message::text(
        json!({ "type": "connection_init" }).to_string(),
    ))
    .await?;
    let ack = next_json(&mut ws).await?;
    if ack["type"] != "connection_ack" {
        bail!("no connection_ack: {ack}");
    }
    ws.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION, "variables": { "id": session } } })
            .to_string(),
    ))
    .await?;
    let first = next_json(&mut ws).await?;
    if first["payload"]["data"]["sessionProgress"]["kind"] != "snapshot" {
        bail!("first message is not the current state: {first}");
    }
    // Thousands of these share the machine with the gateway they measure, so they look for
    // the two fields they need instead of parsing every message into a tree.
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            let t = t.as_str();
            if t.contains(r#""type":"ping""#) {
                if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    return;
                }
                continue;
            }
            if !t.contains(r#""kind":"cost""#) {
                continue;
            }
            let Some(total) = t
                .split_once(r#""totalCost":""#)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(total, _)| total)
            else {
                continue;
            };
            if out.send((total.to_owned(), Instant::now())).is_err() {
                return;
            }
        }
    }))
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit).
fn raise_fd_limit(want: usize) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let want = want as libc::rlim_t;
    if lim.rlim_cur >= want {
        return Ok(());
    }
    if lim.rlim_max < want {
        bail!(
            "{want} open files are needed but the hard limit is {} (raise it with ulimit -Hn)",
            lim.rlim_max
        );
    }
    lim.rlim_cur = want;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub async fn bench(opts: &Opts, pg: &EmbeddedPg) -> anyhow::Result<usize> {
    let (subscribers, rounds, jobs, workers) = if opts.quick {
        (50, 5, 500, 10)
    } else {
        (1_000, 50, 10_000, 10)
    };
    let subscribers = opts.subscribers.unwrap_or(subscribers);
    let rounds = opts.rounds.unwrap_or(rounds);
    // A socket per subscriber in this process and in the gateway, which inherits the limit.
    raise_fd_limit(subscribers + 1_000)?;
    pg.ensure_database("bench").await?;
    let url = pg.url("bench");
    run_migrations(&url).await?;
    let (gw, addr) = start_gateway(opts, &url).await?;
    let pid = gw.0.id();
    let mut failures = 0;

    // ---------------------------------------------------------------- fan-out
    let mut http = Http::connect(&addr).await?;
    let session = call(
        &mut http,
        "mutation { createSession(input: { baseUrl: \"https://bench.test\" }) { id } }",
        json!({}),
    )
    .await?["createSession"]["id"]
        .as_str()
        .context("session id")?
        .to_owned();
    reset_peak_rss(pid);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut readers = Vec::with_capacity(subscribers);
    // Connect in waves so the listen backlog is never the bottleneck.
    for wave in (0..subscribers).collect::<Vec<_>>().chunks(200) {
        let connects: Vec<_> = wave
            .iter()
            .map(|_| tokio::spawn(subscriber(addr.clone(), session.clone(), tx.clone())))
            .collect();
        for c in connects {
            readers.push(c.await??);
        }
    }
    drop(tx);
    println!(
        "{subscribers} subscribers connected and got the current state in {:.0} ms",
        ms(started.elapsed())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid) as f64 / 1024.0;
    // Connecting many subscribers can outlast the server's keep-alive for an idle connection.
    let mut http = Http::connect(&addr).await?;

    let (mut last, mut each) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let expected = format!("{}.{:04}", round / 10_000, round % 10_000);
        call(
            &mut http,
            "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.0001\") { id } }",
            json!({ "id": session }),
        )
        .await?;
        let committed = Instant::now();
        let mut got = 0;
        let mut latest = committed;
        while got < subscribers {
            let Ok(Some((total, at))) =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
            else {
                eprintln!("round {round}: only {got} of {subscribers} subscribers got {expected}");
                failures += subscribers - got;
                break;
            };
            if total != expected {
                continue;
            }
            got += 1;
            let d = at.saturating_duration_since(committed);
            each.push(d);
            latest = latest.max(at);
        }
        last.push(latest.saturating_duration_since(committed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fanout_rss = peak_rss_kib(pid) as f64 / 1024.0;
    for r in &readers {
        r.abort();
    }
    last.sort();
    each.sort();

    // ---------------------------------------------------------------- job drain
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        client
            .execute(
                "INSERT INTO jobs (id, kind, created_at) SELECT gen_random_uuid(), 'bench', now() + g * interval '1 microsecond' FROM generate_series(1, $1::int) g",
                &[&(jobs as i32)],
            )
            .await?;
        drop(client);
        let _ = driver.await;
    }
    let claimed: Arc<Mutex<HashSet<String>>> = Arc::default();
    let duplicates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (addr, claimed, duplicates) = (addr.clone(), claimed.clone(), duplicates.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&addr).await?;
            loop {
                let v = call(
                    &mut http,
                    "mutation { claimJob(kinds: [\"bench\"], leaseSeconds: 60) { id } }",
                    json!({}),
                )
                .await?;
                let Some(id) = v["claimJob"]["id"].as_str() else {
                    return anyhow::Ok(());
                };
                let fresh = claimed
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id.to_owned());
                if !fresh {
                    duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                call(
                    &mut http,
                    "mutation($id: UUID!) { completeJob(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let drain = started.elapsed();
    let duplicates = duplicates.load(std::sync::atomic::Ordering::Relaxed);
    let distinct = claimed
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .len();
    let done = {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM jobs WHERE kind = 'bench' AND status = 'completed' AND attempts = 1",
                &[],
            )
            .await?
            .get(0);
        drop(client);
        let _ = driver.await;
        n as usize
    };
    failures += duplicates + (jobs - done.min(jobs));
    drop(gw);

    let p = |v: &[Duration], q: f64| ms(percentile(v, q));
    println!();
    println!("| live workload | figure | target |");
    println!("|---|---|---|");
    println!(
        "| fan-out: committed change -> last of {subscribers} subscribers ({rounds} changes) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | {} |",
        p(&last, 0.50),
        p(&last, 0.99),
        p(&last, 1.0),
        if subscribers <= 1_000 {
            "p99 <= 50 ms"
        } else if subscribers <= 10_000 {
            "p99 <= 250 ms"
        } else {
            ""
        }
    );
    println!(
        "| fan-out: committed change -> each subscriber | p50 {:.1} ms, p99 {:.1} ms | |",
        p(&each, 0.50),
        p(&each, 0.99)
    );
    let rss_target = if subscribers <= 10_000 {
        "<= 256 MiB"
    } else {
        ""
    };
    println!(
        "| gateway RSS with {subscribers} idle subscribers | {idle_rss:.0} MiB | {rss_target} |"
    );
    println!(
        "| gateway peak RSS with {subscribers} subscribers | {fanout_rss:.0} MiB | {rss_target} |"
    );
    println!(
        "| job drain: {workers} workers, {jobs} jobs (claimJob + completeJob over HTTP) | {:.0} jobs/s ({:.2} s) | |",
        jobs as f64 / drain.as_secs_f64(),
        drain.as_secs_f64()
    );
    println!(
        "| jobs claimed twice / distinct claimed / completed with 1 attempt | {duplicates} / {distinct} / {done} | 0 / {jobs} / {jobs} |"
    );
    println!();
    println!("failed checks: {failures}");
    Ok(failures)
}
