//! Ingestion benchmark over HTTP against a real gateway and PostgreSQL. Prints figures; it is not
//! a timed test.
//!
//!     cargo bench --bench ingest [-- --rounds N]
//!
//! Each round creates a session, records 10,000 pages in 2 calls of 5,000 (half of them pointing
//! at a parent by URL), then reports 1,000 bugs with evidence on those pages.

use std::time::{Duration, Instant};

use bughive_gateway::config::DbConfig;
use bughive_gateway::http::{AppState, router};
use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg};
use bughive_gateway::store::{Db, build_pool, run_migrations};
use serde_json::{Value, json};

/// The same allocator as the gateway binary, so the in-process server behaves like the real one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn gql(http: &reqwest::Client, url: &str, query: &str, variables: Value) -> Value {
    let v: Value = http
        .post(url)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(v.get("errors").is_none(), "errors: {v}");
    v["data"].clone()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut xs: Vec<f64>) {
    xs.sort_by(f64::total_cmp);
    let median = xs[xs.len() / 2];
    println!(
        "{name:<44} min {:>7.1} ms   median {:>7.1} ms   max {:>7.1} ms",
        xs[0],
        median,
        xs[xs.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let rounds = arg("--rounds", 5).max(1);
    let dir = std::env::temp_dir().join(format!("bughive-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let opts = EmbeddedOptions::new(dir.join("pg"));
    let pg = EmbeddedPg::start(&opts).expect("start PostgreSQL");
    pg.ensure_database("bench").await.expect("database");
    let url = pg.url("bench");
    run_migrations(&url).await.expect("migrate");
    let db = Db::new(build_pool(&DbConfig::from_env(url.clone()).expect("config")).expect("pool"));
    let live = bughive_gateway::live::Live::start(url, db.scoped());
    let auth = bughive_gateway::auth::Authenticator::new(Default::default(), db.scoped());
    let http = bughive_gateway::http::HttpConfig {
        rate_per_second: 0,
        ..Default::default()
    };
    let app = router(AppState::new(
        bughive_gateway::api::build_schema(),
        db,
        live,
        auth,
        http,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}/graphql", listener.local_addr().expect("addr"));
    tokio::spawn(bughive_gateway::http::serve::serve(
        listener,
        app,
        Default::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();

    let (mut pages_total, mut call1, mut call2, mut bugs_total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let sid = gql(
            &http,
            &endpoint,
            "mutation { createSession(input: { baseUrl: \"https://bench.test\" }) { id } }",
            json!({}),
        )
        .await["createSession"]["id"]
            .clone();
        gql(
            &http,
            &endpoint,
            "mutation($id: UUID!) { startSession(id: $id) { id } }",
            json!({ "id": sid }),
        )
        .await;
        let page = |i: usize| {
            let mut p = json!({ "url": format!("https://bench.test/r{round}/p{i}"), "title": format!("Page {i}"), "depth": (i % 5) });
            if i > 0 && i % 2 == 0 {
                p["parentUrl"] = json!(format!("https://bench.test/r{round}/p{}", (i - 1) / 4));
            }
            p
        };
        let batch1: Vec<Value> = (0..5000).map(page).collect();
        let batch2: Vec<Value> = (5000..10000).map(page).collect();
        let q = "mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted duplicates pages { id } } }";
        let t0 = Instant::now();
        let r1 = gql(&http, &endpoint, q, json!({ "s": sid, "p": batch1 })).await;
        let t1 = Instant::now();
        let r2 = gql(&http, &endpoint, q, json!({ "s": sid, "p": batch2 })).await;
        let t2 = Instant::now();
        assert_eq!(r1["recordPages"]["inserted"], 5000);
        assert_eq!(r2["recordPages"]["inserted"], 5000);
        let page_ids: Vec<Value> = r1["recordPages"]["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .map(|p| p["id"].clone())
            .collect();
        let categories = ["UI_UX", "FUNCTIONAL", "PERFORMANCE", "SECURITY"];
        let priorities = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
        let bugs: Vec<Value> = (0..1000)
            .map(|i| {
                json!({
                    "pageId": page_ids[i % page_ids.len()],
                    "title": format!("Bug {i}"),
                    "description": "The submit button overlaps the footer on narrow screens.",
                    "category": categories[i % 4],
                    "priority": priorities[i % 4],
                    "stepsToReproduce": ["Open the page", "Resize to 320px", "Scroll down"],
                    "evidence": [
                        { "type": "screenshot", "url": format!("https://cdn.bench.test/{i}.png") },
                        { "type": "console", "level": "error", "message": "Uncaught TypeError" }
                    ],
                    "confidence": 0.5 + (i % 50) as f64 / 100.0,
                })
            })
            .collect();
        let t3 = Instant::now();
        let r3 = gql(
            &http,
            &endpoint,
            "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id } }",
            json!({ "s": sid, "b": bugs }),
        )
        .await;
        let t4 = Instant::now();
        assert_eq!(r3["reportBugs"].as_array().map(Vec::len), Some(1000));
        if round == 0 {
            continue; // warm-up: connections, prepared statements, allocator
        }
        call1.push(ms(t1 - t0));
        call2.push(ms(t2 - t1));
        pages_total.push(ms(t2 - t0));
        bugs_total.push(ms(t4 - t3));
    }
    println!(
        "ingest benchmark: {rounds} rounds after 1 warm-up, over HTTP on loopback, embedded PostgreSQL"
    );
    summary("recordPages 10,000 pages (2 x 5,000), total", pages_total);
    summary("  first call (5,000 new pages)", call1);
    summary("  second call (5,000 new, parents stored)", call2);
    summary("reportBugs 1,000 bugs with evidence", bugs_total);
    let _ = pg.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
