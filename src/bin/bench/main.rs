//! The load benchmark: one command that starts its own PostgreSQL, seeds a fixed dataset, starts
//! the gateway as a separate release process, drives it at a fixed concurrency and compares it
//! with the raw SQL it issues.
//!
//!     cargo run --release --bin bench                 # full run (about two minutes)
//!     cargo run --release --bin bench -- --quick      # a few seconds, no targets
//!     cargo run --release --bin bench -- live         # subscriptions and the job queue
//!     cargo run --release --bin bench -- live --quick
//!
//! Options: --duration SECS (measured time per workload, default 20), --warmup SECS (default 5),
//! --concurrency N (default 32), --gateway PATH (default: the bughive-gateway binary next to this
//! one), --keep (leave the data directory).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bughive_gateway::seed::{self, SeedPlan};
use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg};
use bughive_gateway::store::run_migrations;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod http;
mod live;

use http::Http;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Opts {
    quick: bool,
    /// `bench live`: the subscription fan-out and job-queue benchmark instead of the read load.
    live: bool,
    duration: Duration,
    warmup: Duration,
    concurrency: usize,
    gateway: PathBuf,
    keep: bool,
    /// `bench live --subscribers N`: WebSocket subscribers of the fan-out (1,000 by default).
    subscribers: Option<usize>,
    /// `bench live --rounds N`: committed changes the fan-out measures.
    rounds: Option<usize>,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let secs = |name: &str, full: f64, q: f64| -> anyhow::Result<Duration> {
        let v = match value(name) {
            Some(v) => v.parse::<f64>().with_context(|| format!("{name} {v}"))?,
            None if quick => q,
            None => full,
        };
        Ok(Duration::from_secs_f64(v))
    };
    let gateway = match value("--gateway") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("bughive-gateway"),
    };
    if !gateway.is_file() {
        bail!(
            "gateway binary {} not found: build it (cargo build --release) or pass --gateway",
            gateway.display()
        );
    }
    Ok(Opts {
        quick,
        live: args.iter().any(|a| a == "live"),
        duration: secs("--duration", 20.0, 1.0)?,
        warmup: secs("--warmup", 5.0, 0.3)?,
        concurrency: value("--concurrency")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(if quick { 4 } else { 32 }),
        gateway,
        keep: args.iter().any(|a| a == "--keep"),
        subscribers: value("--subscribers")
            .map(|v| v.parse().with_context(|| format!("--subscribers {v}")))
            .transpose()?,
        rounds: value("--rounds")
            .map(|v| v.parse().with_context(|| format!("--rounds {v}")))
            .transpose()?,
    })
}

/// A request of a workload: a JSON body to POST, or a path and query to GET.
enum Req {
    Post(Vec<u8>),
    Get(String),
}

/// What a workload sends next and how its answer is checked.
trait Workload: Send + Sync + 'static {
    fn request(&self, worker: usize, iteration: u64) -> Req;
    /// Checks a 200 response's body.
    fn check(&self, worker: usize, iteration: u64, body: &[u8]) -> anyhow::Result<()>;
}

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    statements: u64,
    errors: Vec<String>,
}

async fn drive(
    addr: &str,
    w: Arc<dyn Workload>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let w = w.clone();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&addr).await?;
            let mut st = Stats::default();
            let mut i = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let req = w.request(worker, i);
                let t = Instant::now();
                let reply = match &req {
                    Req::Post(body) => http.post(body).await?,
                    Req::Get(path) => http.get(path).await?,
                };
                let took = t.elapsed();
                let ok = if reply.status != 200 {
                    Err(anyhow::anyhow!(
                        "status {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ))
                } else {
                    w.check(worker, i, &reply.body)
                };
                if let Err(e) = ok {
                    st.errors.push(e.to_string());
                }
                if t >= measure_from {
                    st.latencies.push(took);
                    st.statements += reply.statements;
                }
                i += 1;
            }
            anyhow::Ok(st)
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let st = t.await??;
        all.latencies.extend(st.latencies);
        all.statements += st.statements;
        all.errors.extend(st.errors);
    }
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- the workloads

const Q1: &str = "{ sessions(first: 20) { nodes { id baseUrl status pages(first: 50) { nodes { id url title bugs(first: 500) { nodes { id title priority status confidence } } } } } } }";
const Q2: &str = "query($id: UUID!) { session(id: $id) { id baseUrl status pages(first: 500) { nodes { id url title bugs(first: 500) { nodes { id title priority status confidence } } } } } }";

/// Expected shape: sessions newest first, bug counts per page from the seed plan.
struct Expect {
    /// session id -> (pages, bugs)
    per_session: HashMap<String, (usize, usize)>,
    newest: Vec<String>,
}

/// A response's `data`, or its errors. Read lists are parsed into just the counts the checks
/// compare (bugs are skipped, not built): parsing each reply into a `serde_json::Value` tree
/// took a sixth of the machine from the gateway and PostgreSQL under the Q1 load.
fn data<D: serde::de::DeserializeOwned>(body: &[u8]) -> anyhow::Result<D> {
    #[derive(serde::Deserialize)]
    struct Reply<D> {
        data: Option<D>,
        errors: Option<Value>,
    }
    let reply: Reply<D> = serde_json::from_slice(body)?;
    if let Some(e) = reply.errors {
        bail!("errors: {e}");
    }
    reply.data.context("no data")
}

#[derive(serde::Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

#[derive(serde::Deserialize)]
struct SessionPages {
    id: String,
    pages: Nodes<PageBugs>,
}

impl SessionPages {
    /// (pages, bugs)
    fn counts(&self) -> (usize, usize) {
        let bugs = self.pages.nodes.iter().map(|p| p.bugs.nodes.len()).sum();
        (self.pages.nodes.len(), bugs)
    }
}

#[derive(serde::Deserialize)]
struct PageBugs {
    bugs: Nodes<serde::de::IgnoredAny>,
}

struct Q1Load {
    body: Vec<u8>,
    expect: Arc<Expect>,
}

impl Workload for Q1Load {
    fn request(&self, _: usize, _: u64) -> Req {
        Req::Post(self.body.clone())
    }
    fn check(&self, _: usize, _: u64, body: &[u8]) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Q1Data {
            sessions: Nodes<SessionPages>,
        }
        let sessions = data::<Q1Data>(body)?.sessions.nodes;
        if sessions.len() != 20 {
            bail!("expected 20 sessions, got {}", sessions.len());
        }
        for (s, id) in sessions.iter().zip(&self.expect.newest) {
            if s.id != *id {
                bail!("sessions out of order");
            }
            let (pages, bugs) = self.expect.per_session[id];
            let (got_pages, got_bugs) = s.counts();
            if (got_pages, got_bugs) != (pages.min(50), bugs) {
                bail!(
                    "session {id}: expected {pages} pages and {bugs} bugs, got {got_pages} and {got_bugs}"
                );
            }
        }
        Ok(())
    }
}

struct Q2Load {
    expect: Arc<Expect>,
    ids: Vec<String>,
    /// Sent as a persisted query: a GET with the hash alone.
    persisted: bool,
}

/// `{ persistedQuery: { version: 1, sha256Hash } }` of a document.
fn persisted_extension(document: &str) -> Value {
    let hash = bughive_gateway::http::documents::sha256_hex(document);
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

impl Workload for Q2Load {
    fn request(&self, worker: usize, i: u64) -> Req {
        let id = &self.ids[(worker * 7919 + i as usize) % self.ids.len()];
        if self.persisted {
            // The hash alone, as a GET: what Apollo's PersistedQueryLink sends once registered.
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("variables", &json!({ "id": id }).to_string())
                .append_pair("extensions", &persisted_extension(Q2).to_string())
                .finish();
            return Req::Get(format!("/graphql?{query}"));
        }
        Req::Post(
            serde_json::to_vec(&json!({ "query": Q2, "variables": { "id": id } }))
                .unwrap_or_default(),
        )
    }
    fn check(&self, worker: usize, i: u64, body: &[u8]) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Q2Data {
            session: SessionPages,
        }
        let id = &self.ids[(worker * 7919 + i as usize) % self.ids.len()];
        let (pages, bugs) = self.expect.per_session[id];
        let session = data::<Q2Data>(body)?.session;
        if session.id != *id {
            bail!("asked for session {id}, got {}", session.id);
        }
        let (got_pages, got_bugs) = session.counts();
        if (got_pages, got_bugs) != (pages, bugs) {
            bail!("session {id}: expected {pages}/{bugs}, got {got_pages}/{got_bugs}");
        }
        Ok(())
    }
}

/// Writes: each worker records pages and reports bugs into its own running session, and moves
/// pages through their lifecycle.
struct Q3Load {
    sessions: Vec<String>,
    /// Makes every recorded URL new, across measurement slices too.
    seq: std::sync::atomic::AtomicU64,
}

impl Workload for Q3Load {
    fn request(&self, worker: usize, i: u64) -> Req {
        let sid = &self.sessions[worker];
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (query, variables) = match i % 3 {
            0 => {
                let pages: Vec<Value> = (0..20)
                    .map(|k| json!({ "url": format!("https://q3.test/w{worker}/n{n}/p{k}"), "depth": 1 }))
                    .collect();
                (
                    "mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted duplicates } }",
                    json!({ "s": sid, "p": pages }),
                )
            }
            1 => {
                let bugs: Vec<Value> = (0..10)
                    .map(|k| json!({ "title": format!("bug {i}/{k}"), "category": "FUNCTIONAL", "priority": "LOW", "confidence": 0.7, "evidence": [{ "type": "console", "level": "warn", "message": "slow" }] }))
                    .collect();
                (
                    "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id } }",
                    json!({ "s": sid, "b": bugs }),
                )
            }
            _ => (
                "mutation($s: UUID!) { addSessionCost(id: $s, amount: \"0.0010\") { totalCost } }",
                json!({ "s": sid }),
            ),
        };
        Req::Post(
            serde_json::to_vec(&json!({ "query": query, "variables": variables }))
                .unwrap_or_default(),
        )
    }
    fn check(&self, _: usize, i: u64, body: &[u8]) -> anyhow::Result<()> {
        let data: Value = data(body)?;
        let ok = match i % 3 {
            0 => data["recordPages"]["inserted"].as_i64() == Some(20),
            1 => data["reportBugs"].as_array().map(Vec::len) == Some(10),
            _ => data["addSessionCost"]["totalCost"].is_string(),
        };
        if !ok {
            bail!("unexpected write result {data}");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- raw SQL

/// The raw-SQL sides: each runs the same three levels, batched as the gateway batches them, on
/// one connection per worker, and decodes what the GraphQL query returns.
///
/// `Ideal` is what an ideal batched server would run: each level selects only the columns Q1
/// or Q2 returns (and the keys that tie the levels together). `SelectAll` is the gateway's
/// statement shape before it learned to leave columns out: every column of every row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawShape {
    Ideal,
    SelectAll,
}

struct Statements {
    sessions: &'static str,
    session: &'static str,
    pages: &'static str,
    bugs: &'static str,
}

const IDEAL: Statements = Statements {
    sessions: "SELECT id, base_url, status FROM crawl_sessions ORDER BY created_at DESC, id DESC LIMIT 21",
    session: "SELECT id, base_url, status FROM crawl_sessions WHERE id = ANY($1)",
    pages: "SELECT k.parent_key, x.* FROM unnest($1::uuid[]) AS k(parent_key) CROSS JOIN LATERAL (SELECT id, url, title FROM pages WHERE session_id = k.parent_key ORDER BY created_at, id LIMIT $2) x",
    bugs: "SELECT k.parent_key, x.* FROM unnest($1::uuid[]) AS k(parent_key) CROSS JOIN LATERAL (SELECT id, title, priority, status, confidence FROM bugs WHERE page_id = k.parent_key ORDER BY created_at, id LIMIT $2) x",
};

const SELECT_ALL: Statements = Statements {
    sessions: "SELECT * FROM crawl_sessions ORDER BY created_at DESC, id DESC LIMIT 21",
    session: "SELECT * FROM crawl_sessions WHERE id = ANY($1)",
    pages: "SELECT k.parent_key, x.* FROM unnest($1::uuid[]) AS k(parent_key) CROSS JOIN LATERAL (SELECT * FROM pages WHERE session_id = k.parent_key ORDER BY created_at, id LIMIT $2) x",
    bugs: "SELECT k.parent_key, x.* FROM unnest($1::uuid[]) AS k(parent_key) CROSS JOIN LATERAL (SELECT * FROM bugs WHERE page_id = k.parent_key ORDER BY created_at, id LIMIT $2) x",
};

/// Decodes the data the GraphQL query returns (and the keys that tie levels together), which
/// is what a hand-written client of these statements would read.
fn decode(rows: &[tokio_postgres::Row], table: &str) -> usize {
    for r in rows {
        let _: uuid::Uuid = r.get("id");
        match table {
            "sessions" => {
                let _: (String, String) = (r.get("base_url"), r.get("status"));
            }
            "pages" => {
                let _: (uuid::Uuid, String, Option<String>) =
                    (r.get("parent_key"), r.get("url"), r.get("title"));
            }
            _ => {
                let _: (uuid::Uuid, String, String, String, f64) = (
                    r.get("parent_key"),
                    r.get("title"),
                    r.get("priority"),
                    r.get("status"),
                    r.get("confidence"),
                );
            }
        }
    }
    rows.len()
}

/// Transactions completed in the measured time.
async fn raw(
    raw: &Raw,
    shape: RawShape,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<u64> {
    let (url, q2_ids, q1) = (raw.url.as_str(), raw.ids.clone(), raw.q1);
    let sql = match shape {
        RawShape::Ideal => &IDEAL,
        RawShape::SelectAll => &SELECT_ALL,
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let ids = Arc::new(q2_ids);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let s_list = client.prepare(sql.sessions).await?;
            let s_one = client.prepare(sql.session).await?;
            let pages = client.prepare(sql.pages).await?;
            let bugs = client.prepare(sql.bugs).await?;
            let mut done = 0u64;
            let mut i = 0usize;
            while Instant::now() < end {
                let sessions = if q1 {
                    client.query(&s_list, &[]).await?
                } else {
                    client
                        .query(&s_one, &[&vec![ids[(worker * 7919 + i) % ids.len()]]])
                        .await?
                };
                i += 1;
                let sids: Vec<uuid::Uuid> = sessions.iter().take(20).map(|r| r.get("id")).collect();
                let p = client
                    .query(&pages, &[&sids, &(if q1 { 51i64 } else { 501i64 })])
                    .await?;
                let pids: Vec<uuid::Uuid> = p.iter().map(|r| r.get("id")).collect();
                let b = client.query(&bugs, &[&pids, &501i64]).await?;
                let _ = decode(&sessions, "sessions") + decode(&p, "pages") + decode(&b, "bugs");
                if Instant::now() >= measure_from {
                    done += 1;
                }
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

// ---------------------------------------------------------------- orchestration

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss(pid: u32) {
    // Writing 5 to clear_refs resets VmHWM (Linux >= 4.0).
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

struct Gateway(Child);

/// Starts the gateway binary on `url` as a separate process and waits until it is ready.
async fn start_gateway(opts: &Opts, url: &str) -> anyhow::Result<(Gateway, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(&opts.gateway)
        .args(["serve", "--listen", &addr])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        // One caller (the development admin) drives all the load.
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("WS_MAX_CONNECTIONS_PER_CALLER", "100000")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", opts.gateway.display()))?;
    let gw = Gateway(child);
    wait_ready(&addr).await?;
    Ok((gw, addr))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            s.write_all(
                format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if out.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("gateway did not become ready")
}

struct Row {
    name: &'static str,
    rps: f64,
    p50: Duration,
    p99: Duration,
    statements: f64,
    rss_mib: f64,
    /// Transactions per second of the ideal raw side, and of the `SELECT *` one.
    raw_tps: Option<f64>,
    raw_all_tps: Option<f64>,
    errors: usize,
}

/// What the raw-SQL side of a workload runs.
struct Raw {
    url: String,
    ids: Vec<uuid::Uuid>,
    q1: bool,
}

/// Measures a workload, and its raw-SQL counterpart if any, in alternating slices (four in a
/// full run), so that load from other tenants of a shared machine hits both sides alike and the
/// ratio stays meaningful.
async fn measure(
    name: &'static str,
    addr: &str,
    pid: u32,
    w: Arc<dyn Workload>,
    raw_side: Option<Raw>,
    opts: &Opts,
) -> anyhow::Result<Row> {
    reset_peak_rss(pid);
    let slices: u32 = if opts.quick { 1 } else { 4 };
    let slice = opts.duration / slices;
    let mut st = Stats::default();
    let mut raw_tx = 0;
    let mut raw_all_tx = 0;
    for i in 0..slices {
        let warm = if i == 0 {
            opts.warmup
        } else {
            opts.warmup.min(Duration::from_secs(1))
        };
        let s = drive(addr, w.clone(), opts.concurrency, warm, slice).await?;
        st.latencies.extend(s.latencies);
        st.statements += s.statements;
        st.errors.extend(s.errors);
        if let Some(r) = &raw_side {
            raw_tx += raw(r, RawShape::Ideal, opts.concurrency, warm, slice).await?;
            raw_all_tx += raw(r, RawShape::SelectAll, opts.concurrency, warm, slice).await?;
        }
    }
    let dur = slice * slices;
    st.latencies.sort();
    if let Some(e) = st.errors.first() {
        eprintln!("{name}: {} failed responses, first: {e}", st.errors.len());
    }
    let n = st.latencies.len().max(1) as f64;
    Ok(Row {
        name,
        rps: st.latencies.len() as f64 / dur.as_secs_f64(),
        p50: percentile(&st.latencies, 0.50),
        p99: percentile(&st.latencies, 0.99),
        statements: st.statements as f64 / n,
        rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
        raw_tps: raw_side.as_ref().map(|_| raw_tx as f64 / dur.as_secs_f64()),
        raw_all_tps: raw_side.map(|_| raw_all_tx as f64 / dur.as_secs_f64()),
        errors: st.errors.len(),
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Returns the number of responses that failed their checks.
async fn run() -> anyhow::Result<usize> {
    let opts = parse_opts()?;
    let dir = std::env::temp_dir().join(format!("bughive-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pg_opts = EmbeddedOptions::new(dir.join("pg"));
    let pg = EmbeddedPg::start(&pg_opts)?;
    let result = if opts.live {
        live::bench(&opts, &pg).await
    } else {
        bench(&opts, &pg).await
    };
    let _ = pg.stop();
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench(opts: &Opts, pg: &EmbeddedPg) -> anyhow::Result<usize> {
    pg.ensure_database("bench").await?;
    let url = pg.url("bench");
    run_migrations(&url).await?;
    let plan = if opts.quick {
        SeedPlan {
            sessions: 24,
            pages_per_session: 10,
            bugs_per_page: 6,
            vary_bugs: true,
        }
    } else {
        SeedPlan {
            sessions: 200,
            pages_per_session: 50,
            bugs_per_page: 6,
            vary_bugs: true,
        }
    };
    {
        let db = bughive_gateway::store::Db::new(bughive_gateway::store::build_pool(
            &bughive_gateway::config::DbConfig {
                url: url.clone(),
                pool_size: 2,
                pool_timeout_ms: 30_000,
                statement_timeout_ms: 0,
            },
        )?);
        seed::run(&db, plan, false).await?;
        db.pool().close();
    }
    // Both sides measure settled tables: statistics for the planner, and the GIN indexes'
    // pending lists (bugs' search and trigram indexes) merged, not left for autovacuum to do
    // in the middle of a measurement.
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        client.batch_execute("VACUUM ANALYZE").await?;
        drop(client);
        let _ = conn.await;
    }
    let (sessions, _, bugs) = seed::generate(plan);
    let mut per_session: HashMap<String, (usize, usize)> = sessions
        .iter()
        .map(|s| (s.id.to_string(), (plan.pages_per_session, 0)))
        .collect();
    for b in &bugs {
        if let Some(e) = per_session.get_mut(&b.session_id.to_string()) {
            e.1 += 1;
        }
    }
    let mut newest = sessions.clone();
    newest.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
    let newest: Vec<String> = newest.iter().take(20).map(|s| s.id.to_string()).collect();
    let expect = Arc::new(Expect {
        per_session,
        newest,
    });
    println!(
        "dataset: {} sessions x {} pages x 0-{} bugs = {} bugs; concurrency {}; warm-up {:?}, measured {:?} per workload",
        plan.sessions,
        plan.pages_per_session,
        plan.bugs_per_page,
        bugs.len(),
        opts.concurrency,
        opts.warmup,
        opts.duration
    );

    let (gw, addr) = start_gateway(opts, &url).await?;
    let pid = gw.0.id();

    let q1 = Arc::new(Q1Load {
        body: serde_json::to_vec(&json!({ "query": Q1 }))?,
        expect: expect.clone(),
    });
    let mut rows = Vec::new();
    let raw_q1 = Raw {
        url: url.clone(),
        ids: Vec::new(),
        q1: true,
    };
    rows.push(
        measure(
            "Q1 sessions > pages > bugs",
            &addr,
            pid,
            q1,
            Some(raw_q1),
            opts,
        )
        .await?,
    );

    let ids: Vec<String> = sessions.iter().map(|s| s.id.to_string()).collect();
    let uuids = sessions.iter().map(|s| s.id).collect();
    let q2 = Arc::new(Q2Load {
        expect: expect.clone(),
        ids: ids.clone(),
        persisted: false,
    });
    let raw_q2 = Raw {
        url: url.clone(),
        ids: uuids,
        q1: false,
    };
    rows.push(
        measure(
            "Q2 one session, all pages and bugs",
            &addr,
            pid,
            q2,
            Some(raw_q2),
            opts,
        )
        .await?,
    );

    // Q2 again as a persisted query: registered once, then GETs with the hash alone.
    let mut setup = Http::connect(&addr).await?;
    let register = serde_json::to_vec(&json!({
        "query": Q2,
        "variables": { "id": ids[0] },
        "extensions": persisted_extension(Q2),
    }))?;
    let reply = setup.post(&register).await?;
    if reply.status != 200 {
        bail!("registering Q2: {}", String::from_utf8_lossy(&reply.body));
    }
    let q2_get = Arc::new(Q2Load {
        expect: expect.clone(),
        ids,
        persisted: true,
    });
    rows.push(
        measure(
            "Q2 as a persisted GET (hash only)",
            &addr,
            pid,
            q2_get,
            None,
            opts,
        )
        .await?,
    );

    // Q3: one running session per worker.
    let mut setup = Http::connect(&addr).await?;
    let mut q3_sessions = Vec::new();
    for w in 0..opts.concurrency {
        let body = serde_json::to_vec(
            &json!({ "query": format!("mutation {{ createSession(input: {{ baseUrl: \"https://q3.test/w{w}\" }}) {{ id }} }}") }),
        )?;
        let v: Value = serde_json::from_slice(&setup.post(&body).await?.body)?;
        let id = v["data"]["createSession"]["id"]
            .as_str()
            .context("createSession")?
            .to_owned();
        let body = serde_json::to_vec(
            &json!({ "query": "mutation($id: UUID!) { startSession(id: $id) { id } }", "variables": { "id": id } }),
        )?;
        setup.post(&body).await?;
        q3_sessions.push(id);
    }
    rows.push(
        measure(
            "Q3 writes (recordPages/reportBugs/cost)",
            &addr,
            pid,
            Arc::new(Q3Load {
                sessions: q3_sessions,
                seq: Default::default(),
            }),
            None,
            opts,
        )
        .await?,
    );
    drop(gw);

    println!();
    println!(
        "| workload | req/s | p50 ms | p99 ms | p99/p50 | SQL stmts/req | peak RSS MiB | ideal raw tx/s | gateway/ideal | SELECT * raw tx/s | gateway/SELECT * |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let tps = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1}"));
        let ratio = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.2}", r.rps / t));
        let (raw, all) = (tps(r.raw_tps), tps(r.raw_all_tps));
        let (ratio_ideal, ratio_all) = (ratio(r.raw_tps), ratio(r.raw_all_tps));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.name,
            r.rps,
            ms(r.p50),
            ms(r.p99),
            ms(r.p99) / ms(r.p50).max(1e-9),
            r.statements,
            r.rss_mib,
            raw,
            ratio_ideal,
            all,
            ratio_all
        );
    }
    let failed: usize = rows.iter().map(|r| r.errors).sum();
    if let (Some(post), Some(get)) = (rows.get(1), rows.get(2)) {
        println!();
        println!(
            "Q2 as a persisted GET vs a full POST: {:.2} x the requests per second",
            get.rps / post.rps.max(1e-9)
        );
    }
    if !opts.quick {
        let q1 = &rows[0];
        let q2 = &rows[1];
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!();
        println!(
            "targets: Q1 >= 0.5 x ideal raw: {}; Q1 p99 <= 3 x p50: {}; Q2 >= 0.5 x ideal raw: {}; peak RSS under Q1 <= 64 MiB: {}",
            verdict(q1.rps >= 0.5 * q1.raw_tps.unwrap_or(f64::MAX)),
            verdict(q1.p99 <= q1.p50 * 3),
            verdict(q2.rps >= 0.5 * q2.raw_tps.unwrap_or(f64::MAX)),
            verdict(q1.rss_mib <= 64.0)
        );
    }
    println!("failed responses: {failed}");
    Ok(failed)
}
