//! Real concurrency over many connections: racing callers never both win, counters never drift.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{TestDb, code};
use crate::mutations::{bug, create_session, record, report, start};

async fn shared(pool: usize) -> Arc<TestDb> {
    Arc::new(TestDb::with_pool(pool, 30_000).await)
}

async fn all<F, Fut>(n: usize, f: F) -> Vec<Value>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Value> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_record_pages_of_one_url_store_one_page() {
    let t = shared(40).await;
    let sid = create_session(&t).await;
    let results = all(100, |_| {
        let t = t.clone();
        let sid = sid.clone();
        async move {
            t.gql(
                "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://race.test/same\", depth: 0 }]) { inserted duplicates } }",
                json!({ "s": sid }),
            )
            .await
            .0
        }
    })
    .await;
    assert!(
        results.iter().all(|v| v.get("errors").is_none()),
        "{:?}",
        results.iter().find(|v| v.get("errors").is_some())
    );
    let inserted: i64 = results
        .iter()
        .map(|v| v["data"]["recordPages"]["inserted"].as_i64().unwrap_or(0))
        .sum();
    let dups: i64 = results
        .iter()
        .map(|v| v["data"]["recordPages"]["duplicates"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!((inserted, dups), (1, 99));
    assert_eq!(t.count("SELECT count(*) FROM pages").await, 1);
    assert_eq!(
        t.count("SELECT pages_discovered::bigint FROM crawl_sessions")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_validations_have_one_winner() {
    let t = shared(40).await;
    let sid = create_session(&t).await;
    let v = report(&t, &sid, json!([bug("raced")])).await;
    let id = v["data"]["reportBugs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let results = all(50, |_| {
        let t = t.clone();
        let id = id.clone();
        async move {
            t.gql(
                "mutation($id: UUID!) { validateBug(id: $id) { status } }",
                json!({ "id": id }),
            )
            .await
            .0
        }
    })
    .await;
    let ok = results.iter().filter(|v| v.get("errors").is_none()).count();
    let lost = results
        .iter()
        .filter(|v| code(v) == "INVALID_TRANSITION")
        .count();
    assert_eq!((ok, lost), (1, 49));
    assert!(
        results
            .iter()
            .filter(|v| v.get("errors").is_some())
            .all(|v| v["errors"][0]["extensions"]["from"] == "VALIDATED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_costs_sum_exactly() {
    let t = shared(40).await;
    let sid = create_session(&t).await;
    let results = all(200, |_| {
        let t = t.clone();
        let sid = sid.clone();
        async move {
            t.gql(
                "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.0001\") { id } }",
                json!({ "id": sid }),
            )
            .await
            .0
        }
    })
    .await;
    assert!(results.iter().all(|v| v.get("errors").is_none()));
    let d = t
        .ok(
            "query($id: UUID!) { session(id: $id) { totalCost } }",
            json!({ "id": sid }),
        )
        .await;
    assert_eq!(d["session"]["totalCost"], "0.0200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_the_truth_after_a_mixed_workload() {
    let t = shared(30).await;
    let s1 = create_session(&t).await;
    let s2 = create_session(&t).await;
    start(&t, &s1).await;
    // Seed pages both sessions' workers will fight over.
    for s in [&s1, &s2] {
        let pages: Vec<Value> = (0..40)
            .map(|i| json!({ "url": format!("https://mix.test/{i}"), "depth": 0 }))
            .collect();
        record(&t, s, Value::Array(pages)).await;
    }
    let ids: Vec<String> = t
        .raw()
        .await
        .query("SELECT id::text FROM pages ORDER BY url, session_id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ids = Arc::new(ids);
    let results = all(120, |i| {
        let t = t.clone();
        let sid = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        let ids = ids.clone();
        async move {
            match i % 4 {
                0 | 1 => {
                    // Overlapping batches: URLs i..i+30 modulo 60, partly new, partly stored.
                    let pages: Vec<Value> = (0..30).map(|k| json!({ "url": format!("https://mix.test/{}", (i + k) % 60), "depth": 1 })).collect();
                    t.gql("mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted } }", json!({ "s": sid, "p": pages }))
                        .await
                        .0
                }
                2 => {
                    let id = &ids[i % ids.len()];
                    let first = t.gql("mutation($id: UUID!) { setPageStatus(id: $id, status: CRAWLING) { id } }", json!({ "id": id })).await.0;
                    let second = t.gql("mutation($id: UUID!) { setPageStatus(id: $id, status: ANALYZED) { id } }", json!({ "id": id })).await.0;
                    json!([first, second])
                }
                _ => {
                    let bugs: Vec<Value> = (0..5).map(|k| bug(&format!("bug {i}/{k}"))).collect();
                    t.gql("mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id } }", json!({ "s": sid, "b": bugs }))
                        .await
                        .0
                }
            }
        }
    })
    .await;
    // Only lifecycle losers may fail (two workers moving the same page).
    for v in &results {
        for r in v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]) {
            if r.get("errors").is_some() {
                assert_eq!(code(&r), "INVALID_TRANSITION", "{r}");
            }
        }
    }
    let drift = t
        .count(
            "SELECT count(*) FROM crawl_sessions s WHERE \
               s.pages_discovered <> (SELECT count(*) FROM pages p WHERE p.session_id = s.id) \
            OR s.pages_crawled <> (SELECT count(*) FROM pages p WHERE p.session_id = s.id AND p.status IN ('analyzed', 'failed')) \
            OR s.bugs_found <> (SELECT count(*) FROM bugs b WHERE b.session_id = s.id)",
        )
        .await;
    assert_eq!(drift, 0, "a counter drifted from its COUNT(*) truth");
    assert_eq!(t.count("SELECT count(*) FROM pages").await, 120);
    assert_eq!(
        t.count("SELECT sum(bugs_found)::bigint FROM crawl_sessions")
            .await,
        30 * 5
    );
    assert!(
        t.count("SELECT sum(pages_crawled)::bigint FROM crawl_sessions")
            .await
            > 0
    );
}

/// Deleting a session while its crawl job completes and its pages move never deadlocks: each
/// call either wins or finds the session gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_session_races_its_jobs_pages_and_bug_notes_without_deadlock() {
    let t = shared(20).await;
    for _ in 0..15 {
        let sid = create_session(&t).await;
        let job = crate::jobs::enqueue(&t, "crawl", Some(&sid), 3).await;
        crate::jobs::claim(&t, &["crawl"]).await;
        let r = record(
            &t,
            &sid,
            json!([{ "url": "https://a.test/", "depth": 0 }, { "url": "https://a.test/b", "depth": 1 }]),
        )
        .await;
        let pages: Vec<String> = r["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_owned())
            .collect();
        let mut calls: Vec<(String, Value)> = vec![
            (
                "mutation($id: UUID!) { deleteSession(id: $id) }".into(),
                json!({ "id": sid }),
            ),
            (
                "mutation($id: UUID!) { completeJob(id: $id) { id } }".into(),
                json!({ "id": job["id"] }),
            ),
        ];
        for p in &pages {
            calls.push((
                "mutation($id: UUID!) { setPageStatus(id: $id, status: CRAWLING) { id } }".into(),
                json!({ "id": p }),
            ));
        }
        // Writes that refer to a bug of the session: they hold the session before the bug,
        // in the delete's order.
        let (v, _) = t
            .gql(
                "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"Race\", category: OTHER, priority: LOW, confidence: 0.5 }]) { id } }",
                json!({ "s": sid }),
            )
            .await;
        let bug = v["data"]["reportBugs"][0]["id"].clone();
        calls.push((
            "mutation($b: UUID!) { addComment(input: { bugId: $b, body: \"seen\" }) { id } }"
                .into(),
            json!({ "b": bug }),
        ));
        calls.push((
            "mutation($b: UUID!) { addEvidence(input: { bugId: $b, sourceType: OTHER, summary: \"seen\", credibility: 0.5 }) { id } }".into(),
            json!({ "b": bug }),
        ));
        let results = all(calls.len(), |i| {
            let t = t.clone();
            let (q, vars) = calls[i].clone();
            async move { t.gql(&q, vars).await.0 }
        })
        .await;
        for v in &results {
            if v.get("errors").is_some() {
                assert_eq!(code(v), "NOT_FOUND", "{v}");
            }
        }
        assert_eq!(
            t.count(&format!(
                "SELECT count(*) FROM crawl_sessions WHERE id = '{sid}'"
            ))
            .await,
            0
        );
    }
}
