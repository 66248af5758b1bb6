//! No half-writes: every rejected mutation leaves the database byte-for-byte unchanged.

use serde_json::json;

use crate::harness::TestDb;
use crate::mutations::{bug, create_session, record, report, start};

/// A digest of every row of every table.
pub async fn snapshot(t: &TestDb) -> String {
    let c = t.raw().await;
    let mut out = String::new();
    for table in [
        "crawl_sessions",
        "pages",
        "bugs",
        "jobs",
        "audit_logs",
        "users",
        "projects",
        "agents",
        "agent_executions",
        "session_credentials",
        "evidence",
        "evidence_links",
        "bug_comments",
    ] {
        let row = c
            .query_one(&format!("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"), &[])
            .await
            .expect("snapshot");
        let s: String = row.get(0);
        out.push_str(&format!("{table}={s} "));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_mutations_change_nothing() {
    let t = TestDb::new().await;
    let open = create_session(&t).await;
    start(&t, &open).await;
    let done = create_session(&t).await;
    start(&t, &done).await;
    t.ok(
        "mutation($id: UUID!) { completeSession(id: $id) { id } }",
        json!({ "id": done }),
    )
    .await;
    let r = record(&t, &open, json!([{ "url": "https://a.test/", "depth": 0 }])).await;
    let page = r["pages"][0]["id"].as_str().expect("id").to_owned();
    let v = report(&t, &open, json!([bug("one")])).await;
    let bug_id = v["data"]["reportBugs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    t.ok(
        "mutation($id: UUID!) { dismissBug(id: $id, reason: \"noise\") { id } }",
        json!({ "id": bug_id }),
    )
    .await;
    t.ok(
        "mutation($id: UUID!) { setPageStatus(id: $id, status: SKIPPED) { id } }",
        json!({ "id": page }),
    )
    .await;

    // Close to the NUMERIC(10,4) cap, so one more unit overflows in the database.
    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"999999.5\") { id } }",
        json!({ "id": open }),
    )
    .await;

    let before = snapshot(&t).await;
    let vars = json!({ "open": open, "done": done, "page": page, "bug": bug_id });
    for (q, want) in [
        (
            "mutation { createSession(input: { baseUrl: \"gopher://x\" }) { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($open: UUID!) { startSession(id: $open) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($done: UUID!) { completeSession(id: $done) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($done: UUID!) { failSession(id: $done, error: \"x\") { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($open: UUID!) { failSession(id: $open, error: \" \") { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($done: UUID!) { cancelSession(id: $done) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($open: UUID!) { addSessionCost(id: $open, amount: \"-1\") { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($open: UUID!) { addSessionCost(id: $open, amount: \"1\") { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($open: UUID!) { recordPages(sessionId: $open, pages: [{ url: \"https://a.test/new\", depth: 0 }, { url: \"https://a.test/orphan\", depth: 1, parentUrl: \"https://a.test/missing\" }]) { inserted } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($done: UUID!) { recordPages(sessionId: $done, pages: [{ url: \"https://a.test/late\", depth: 0 }]) { inserted } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($page: UUID!) { setPageStatus(id: $page, status: CRAWLING) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($open: UUID!, $page: UUID!) { reportBugs(sessionId: $open, bugs: [{ title: \"ok\", category: SEO, priority: LOW, confidence: 0.5, pageId: $page }, { title: \"bad\", category: SEO, priority: LOW, confidence: 0.5, pageId: \"00000000-0000-0000-0000-000000000009\" }]) { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "mutation($done: UUID!) { reportBugs(sessionId: $done, bugs: [{ title: \"late\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($bug: UUID!) { validateBug(id: $bug) { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($bug: UUID!) { markBugReported(id: $bug, linearIssueId: \"QA-9\") { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation($bug: UUID!) { dismissBug(id: $bug, reason: \"again\") { id } }",
            "INVALID_TRANSITION",
        ),
        (
            "mutation { reopenBug(id: \"00000000-0000-0000-0000-000000000009\") { id } }",
            "NOT_FOUND",
        ),
    ] {
        let (v, _) = t.gql(q, vars.clone()).await;
        let got = v["errors"]
            .as_array()
            .and_then(|e| e.last())
            .map(|e| e["extensions"]["code"].clone());
        assert_eq!(got, Some(json!(want)), "{q}: {v}");
        assert_eq!(snapshot(&t).await, before, "{q} changed the database");
    }
}
