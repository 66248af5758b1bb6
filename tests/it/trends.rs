//! Trends: served from the daily rollups (stale until refreshed, exact after), per day and
//! week, owner-only, in a fixed number of statements, and rejected windows.

use bughive_gateway::auth::Role;
use serde_json::{Value, json};

use crate::harness::{code, seeded};

const TRENDS: &str = "query($from: DateTime!, $to: DateTime!, $b: TrendBucket, $url: String) { trends(from: $from, to: $to, bucket: $b, baseUrl: $url) { bucket refreshedAt points { start bugs sessions cost bugsByPriority { priority count } bugsByCategory { category count } sessionsByStatus { status count } } } }";

fn totals(v: &Value) -> (i64, i64) {
    v["data"]["trends"]["points"]
        .as_array()
        .expect("points")
        .iter()
        .fold((0, 0), |(b, s), p| {
            (
                b + p["bugs"].as_i64().expect("bugs"),
                s + p["sessions"].as_i64().expect("sessions"),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trends_are_exact_after_a_refresh_and_only_the_callers() {
    // 60 sessions an hour apart from 2026-01-01: three days.
    let (t, _) = seeded(60, 2, 1).await;
    let window = json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-04T00:00:00Z" });

    // Seeded after the rollups were last refreshed: not in them yet.
    let (before, n) = t.gql(TRENDS, window.clone()).await;
    assert!(before.get("errors").is_none(), "{before}");
    assert_eq!(n, 3, "bugs, sessions, refresh time");
    assert_eq!(totals(&before), (0, 0));

    assert!(
        bughive_gateway::store::trends::repo::refresh(&t.db, std::time::Duration::ZERO)
            .await
            .expect("refresh")
    );
    // Just refreshed: a replica whose turn comes within the interval skips it.
    assert!(
        !bughive_gateway::store::trends::repo::refresh(&t.db, std::time::Duration::from_secs(60))
            .await
            .expect("refresh")
    );
    let (v, _) = t.gql(TRENDS, window.clone()).await;
    let points = v["data"]["trends"]["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    assert_eq!(points[0]["start"], "2026-01-01T00:00:00+00:00");
    assert!(
        v["data"]["trends"]["refreshedAt"].as_str()
            > before["data"]["trends"]["refreshedAt"].as_str()
    );
    // Each day against the base tables.
    let c = t.raw().await;
    for (i, p) in points.iter().enumerate() {
        let day = format!("2026-01-0{}", i + 1);
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM bugs WHERE created_at::date = $1::text::date), \
                 (SELECT count(*) FROM crawl_sessions WHERE created_at::date = $1::text::date), \
                 (SELECT coalesce(sum(total_cost), 0)::numeric(14,4)::text FROM crawl_sessions WHERE created_at::date = $1::text::date)",
                &[&day],
            )
            .await
            .expect("truth");
        assert_eq!(p["bugs"].as_i64(), Some(row.get::<_, i64>(0)), "{day}");
        assert_eq!(p["sessions"].as_i64(), Some(row.get::<_, i64>(1)), "{day}");
        assert_eq!(
            p["cost"].as_str(),
            Some(row.get::<_, String>(2).as_str()),
            "{day}"
        );
        let by_priority: i64 = p["bugsByPriority"]
            .as_array()
            .expect("priorities")
            .iter()
            .map(|c| c["count"].as_i64().expect("count"))
            .sum();
        assert_eq!(by_priority, p["bugs"].as_i64().expect("bugs"));
        assert_eq!(p["sessionsByStatus"].as_array().map(Vec::len), Some(5));
    }
    assert_eq!(totals(&v), (120, 60));

    // Weeks start on Monday: 2026-01-01 is a Thursday.
    let mut weekly = window.clone();
    weekly["b"] = json!("WEEK");
    let (w, _) = t.gql(TRENDS, weekly).await;
    let points = w["data"]["trends"]["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{w}");
    assert_eq!(points[0]["start"], "2025-12-29T00:00:00+00:00");
    assert_eq!(totals(&w), (120, 60));

    // One site: the seed spreads sessions over ten.
    let mut site = window.clone();
    site["url"] = json!("https://site-3.example.test");
    let (s, _) = t.gql(TRENDS, site).await;
    assert_eq!(totals(&s), (12, 6), "{s}");

    // The seed's sessions have no owner: a user sees none of them, only its own.
    let alice = t.user("alice", Role::User).await;
    let (mine, _) = t.gql_as(&alice, TRENDS, window.clone()).await;
    assert_eq!(totals(&mine), (0, 0), "{mine}");
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation { createSession(input: { baseUrl: \"https://alice.example\" }) { id } }",
            json!({}),
        )
        .await;
    let sid = v["data"]["createSession"]["id"].clone();
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"Broken\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }",
            json!({ "s": sid }),
        )
        .await;
    assert!(v.get("errors").is_none(), "{v}");
    bughive_gateway::store::trends::repo::refresh(&t.db, std::time::Duration::ZERO)
        .await
        .expect("refresh");
    let today = chrono::Utc::now().date_naive();
    let now = json!({
        "from": format!("{today}T00:00:00Z"),
        "to": format!("{}T00:00:00Z", today + chrono::Duration::days(1)),
        "url": "https://alice.example/",
    });
    let (mine, _) = t.gql_as(&alice, TRENDS, now.clone()).await;
    assert_eq!(totals(&mine), (1, 1), "{mine}");
    assert_eq!(
        mine["data"]["trends"]["points"][0]["bugsByCategory"][6],
        json!({ "category": "SEO", "count": 1 })
    );

    for (vars, field) in [
        (
            json!({ "from": "2026-01-02T00:00:00Z", "to": "2026-01-02T12:00:00Z" }),
            "to",
        ),
        (
            json!({ "from": "2026-01-01T00:00:00Z", "to": "2028-01-01T00:00:00Z" }),
            "to",
        ),
        (
            json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "url": "ftp://x" }),
            "baseUrl",
        ),
    ] {
        let (v, _) = t.gql(TRENDS, vars).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
        assert_eq!(v["errors"][0]["extensions"]["field"], field, "{v}");
    }
}
