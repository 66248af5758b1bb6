//! Lifecycle mutations and bulk ingestion through GraphQL.

use serde_json::{Value, json};

use crate::harness::{TestDb, code};

pub async fn create_session(t: &TestDb) -> String {
    let d = t
        .ok("mutation { createSession(input: { baseUrl: \"https://Shop.Example.COM\" }) { id status baseUrl config } }", json!({}))
        .await;
    assert_eq!(d["createSession"]["status"], "PENDING");
    assert_eq!(d["createSession"]["baseUrl"], "https://shop.example.com/");
    assert_eq!(d["createSession"]["config"], json!({}));
    d["createSession"]["id"].as_str().expect("id").to_owned()
}

pub async fn start(t: &TestDb, id: &str) {
    t.ok(
        "mutation($id: UUID!) { startSession(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
}

pub async fn record(t: &TestDb, sid: &str, pages: Value) -> Value {
    t.ok(
        "mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted duplicates pages { id url depth parent { url } } } }",
        json!({ "s": sid, "p": pages }),
    )
    .await["recordPages"]
        .clone()
}

pub fn bug(title: &str) -> Value {
    json!({ "title": title, "category": "FUNCTIONAL", "priority": "HIGH", "confidence": 0.9 })
}

pub async fn report(t: &TestDb, sid: &str, bugs: Value) -> Value {
    t.gql(
        "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id status title page { id } evidence stepsToReproduce confidence } }",
        json!({ "s": sid, "b": bugs }),
    )
    .await
    .0
}

async fn session(t: &TestDb, id: &str) -> Value {
    t.ok(
        "query($id: UUID!) { session(id: $id) { status pagesDiscovered pagesCrawled bugsFound totalCost errorMessage startedAt completedAt } }",
        json!({ "id": id }),
    )
    .await["session"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_only_along_their_lifecycle() {
    let t = TestDb::new().await;
    let id = create_session(&t).await;

    let (v, _) = t
        .gql(
            "mutation($id: UUID!) { completeSession(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&v), "INVALID_TRANSITION");
    assert_eq!(v["errors"][0]["extensions"]["from"], "PENDING");
    assert_eq!(v["errors"][0]["extensions"]["to"], "COMPLETED");

    start(&t, &id).await;
    let s = session(&t, &id).await;
    assert_eq!(s["status"], "RUNNING");
    assert!(s["startedAt"].is_string() && s["completedAt"].is_null());
    let (v, _) = t
        .gql(
            "mutation($id: UUID!) { startSession(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(v["errors"][0]["extensions"]["from"], "RUNNING");

    t.ok(
        "mutation($id: UUID!) { failSession(id: $id, error: \"browser crashed\") { id } }",
        json!({ "id": id }),
    )
    .await;
    let s = session(&t, &id).await;
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["errorMessage"], "browser crashed");
    assert!(s["completedAt"].is_string());
    let (v, _) = t
        .gql(
            "mutation($id: UUID!) { cancelSession(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&v), "INVALID_TRANSITION");

    // PENDING -> CANCELLED and RUNNING -> COMPLETED
    let a = create_session(&t).await;
    t.ok(
        "mutation($id: UUID!) { cancelSession(id: $id) { status } }",
        json!({ "id": a }),
    )
    .await;
    assert_eq!(session(&t, &a).await["status"], "CANCELLED");
    let b = create_session(&t).await;
    start(&t, &b).await;
    let d = t
        .ok(
            "mutation($id: UUID!) { completeSession(id: $id) { status completedAt } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(d["completeSession"]["status"], "COMPLETED");

    let (v, _) = t
        .gql(
            "mutation { startSession(id: \"00000000-0000-0000-0000-000000000009\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&v), "NOT_FOUND");
    for bad in ["ftp://x.test", "not a url", ""] {
        let (v, _) = t
            .gql(
                "mutation($u: String!) { createSession(input: { baseUrl: $u }) { id } }",
                json!({ "u": bad }),
            )
            .await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{bad}");
    }
    let (v, _) = t.gql("mutation { createSession(input: { baseUrl: \"https://x.test\", config: [1] }) { id } }", json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "input.config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_an_exact_decimal_sum() {
    let t = TestDb::new().await;
    let id = create_session(&t).await;
    for amount in ["0.0500", "1.25", "0.05000", "3"] {
        t.ok("mutation($id: UUID!, $a: Decimal!) { addSessionCost(id: $id, amount: $a) { totalCost } }", json!({ "id": id, "a": amount }))
            .await;
    }
    assert_eq!(session(&t, &id).await["totalCost"], "4.3500");
    for (bad, why) in [
        ("-0.01", "negative"),
        ("0.00001", "5 decimals"),
        ("1000000", "over the cap"),
        ("abc", "not a number"),
        ("1e3", "exponent"),
    ] {
        let (v, _) = t.gql("mutation($id: UUID!, $a: Decimal!) { addSessionCost(id: $id, amount: $a) { totalCost } }", json!({ "id": id, "a": bad })).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{why}: {v}");
    }
    let (v, _) = t
        .gql(
            "mutation($id: UUID!) { addSessionCost(id: $id, amount: 0.1) { totalCost } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "floats are not exact");
    // A sum past NUMERIC(10,4) is refused and changes nothing.
    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"999990\") { totalCost } }",
        json!({ "id": id }),
    )
    .await;
    let (v, _) = t
        .gql(
            "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"10\") { totalCost } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert_eq!(session(&t, &id).await["totalCost"], "999994.3500");
    let (v, _) = t.gql("mutation { addSessionCost(id: \"00000000-0000-0000-0000-000000000009\", amount: \"1\") { totalCost } }", json!({})).await;
    assert_eq!(code(&v), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_pages_is_idempotent_and_resolves_parents() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let r = record(
        &t,
        &sid,
        json!([
            { "url": "https://shop.test/a", "depth": 1, "parentUrl": "https://shop.test/" },
            { "url": "https://SHOP.test:443/", "depth": 0, "title": "Home" },
            { "url": "https://shop.test/a#reviews", "depth": 1 },
        ]),
    )
    .await;
    assert_eq!(
        (r["inserted"].as_i64(), r["duplicates"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(r["pages"][0]["url"], "https://shop.test/a");
    assert_eq!(r["pages"][0]["parent"]["url"], "https://shop.test/");
    assert_eq!(r["pages"][1]["url"], "https://shop.test/");

    // A parent already stored; a page seen again.
    let r = record(
        &t,
        &sid,
        json!([
            { "url": "https://shop.test/a/b", "depth": 2, "parentUrl": "https://shop.test/a" },
            { "url": "https://shop.test/a", "depth": 1 },
        ]),
    )
    .await;
    assert_eq!(
        (r["inserted"].as_i64(), r["duplicates"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["pages"][0]["parent"]["url"], "https://shop.test/a");
    assert_eq!(session(&t, &sid).await["pagesDiscovered"], 3);
    assert_eq!(t.count("SELECT count(*) FROM pages").await, 3);

    let bad = |pages: Value| {
        let t = &t;
        let sid = sid.clone();
        async move {
            t.gql("mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted } }", json!({ "s": sid, "p": pages }))
                .await
                .0
        }
    };
    let v = bad(json!([{ "url": "https://shop.test/ok", "depth": 0 }, { "url": "mailto:x@y.z", "depth": 0 }])).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "pages[1].url");
    let v = bad(json!([{ "url": "https://shop.test/x", "depth": -1 }])).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "pages[0].depth");
    let v = bad(json!([{ "url": "https://shop.test/x", "depth": 1, "parentUrl": "https://shop.test/nowhere" }])).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "pages[0].parentUrl");
    let long = format!("https://shop.test/{}", "x".repeat(2050));
    let v = bad(json!([{ "url": long, "depth": 0 }])).await;
    assert_eq!(code(&v), "BAD_USER_INPUT");
    let many: Vec<Value> = (0..5001)
        .map(|i| json!({ "url": format!("https://shop.test/p{i}"), "depth": 0 }))
        .collect();
    let v = bad(Value::Array(many)).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "pages");
    assert_eq!(
        t.count("SELECT count(*) FROM pages").await,
        3,
        "rejected batches write nothing"
    );

    // Only while PENDING or RUNNING.
    t.ok(
        "mutation($id: UUID!) { cancelSession(id: $id) { id } }",
        json!({ "id": sid }),
    )
    .await;
    let v = bad(json!([{ "url": "https://shop.test/late", "depth": 0 }])).await;
    assert_eq!(code(&v), "INVALID_TRANSITION");
    assert_eq!(v["errors"][0]["extensions"]["from"], "CANCELLED");
    let (v, _) = t
        .gql("mutation { recordPages(sessionId: \"00000000-0000-0000-0000-000000000009\", pages: []) { inserted } }", json!({}))
        .await;
    assert_eq!(code(&v), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_status_moves_and_counts_crawled_pages() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let r = record(&t, &sid, json!([{ "url": "https://a.test/1", "depth": 0 }, { "url": "https://a.test/2", "depth": 0 }])).await;
    let p1 = r["pages"][0]["id"].as_str().expect("id").to_owned();
    let p2 = r["pages"][1]["id"].as_str().expect("id").to_owned();
    let set = |id: String, status: &'static str| {
        let t = &t;
        async move {
            t.gql(
                "mutation($id: UUID!, $s: PageStatus!) { setPageStatus(id: $id, status: $s, analysisResult: { score: 3 }) { status crawledAt analysisResult } }",
                json!({ "id": id, "s": status }),
            )
            .await
            .0
        }
    };
    let v = set(p1.clone(), "ANALYZED").await;
    assert_eq!(v["errors"][0]["extensions"]["from"], "DISCOVERED");
    assert_eq!(v["errors"][0]["extensions"]["to"], "ANALYZED");
    let v = set(p1.clone(), "CRAWLING").await;
    assert_eq!(v["data"]["setPageStatus"]["crawledAt"], Value::Null);
    let v = set(p1.clone(), "ANALYZED").await;
    assert!(v["data"]["setPageStatus"]["crawledAt"].is_string());
    assert_eq!(
        v["data"]["setPageStatus"]["analysisResult"],
        json!({ "score": 3 })
    );
    let v = set(p2.clone(), "SKIPPED").await;
    assert_eq!(v["data"]["setPageStatus"]["status"], "SKIPPED");
    let v = set(p2, "CRAWLING").await;
    assert_eq!(code(&v), "INVALID_TRANSITION");
    assert_eq!(session(&t, &sid).await["pagesCrawled"], 1);
    let v = set("00000000-0000-0000-0000-000000000009".into(), "CRAWLING").await;
    assert_eq!(code(&v), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_bugs_validates_every_item_and_is_atomic() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let other = create_session(&t).await;
    let r = record(&t, &sid, json!([{ "url": "https://a.test/", "depth": 0 }])).await;
    let page = r["pages"][0]["id"].as_str().expect("id").to_owned();
    let r2 = record(
        &t,
        &other,
        json!([{ "url": "https://b.test/", "depth": 0 }]),
    )
    .await;
    let foreign = r2["pages"][0]["id"].as_str().expect("id").to_owned();

    let mut full = bug("Checkout button does nothing");
    full["pageId"] = json!(page);
    full["stepsToReproduce"] = json!(["Open /cart", "Click checkout"]);
    full["evidence"] = json!([{ "type": "console", "level": "error", "message": "TypeError" }, { "type": "network", "method": "POST", "url": "https://a.test/api", "status": 500 }]);
    let v = report(&t, &sid, json!([full, bug("Second")])).await;
    assert!(v.get("errors").is_none(), "{v}");
    let bugs = v["data"]["reportBugs"].as_array().expect("bugs");
    assert_eq!(bugs.len(), 2);
    assert_eq!(bugs[0]["title"], "Checkout button does nothing");
    assert_eq!(bugs[0]["status"], "DETECTED");
    assert_eq!(bugs[0]["page"]["id"], json!(page));
    assert_eq!(
        bugs[0]["stepsToReproduce"],
        json!(["Open /cart", "Click checkout"])
    );
    assert_eq!(bugs[1]["evidence"], json!([]));
    assert_eq!(session(&t, &sid).await["bugsFound"], 2);

    let with = |field: &str, value: Value| {
        let mut b = bug("x");
        b[field] = value;
        json!([bug("fine"), b])
    };
    for (bugs, field) in [
        (with("confidence", json!(1.5)), "bugs[1].confidence"),
        (with("confidence", json!(-0.1)), "bugs[1].confidence"),
        (with("title", json!("   ")), "bugs[1].title"),
        (with("pageId", json!(foreign)), "bugs[1].pageId"),
        (
            with("pageId", json!("00000000-0000-0000-0000-000000000009")),
            "bugs[1].pageId",
        ),
        (
            with(
                "evidence",
                json!([{ "type": "network", "method": "GET", "url": "u" }]),
            ),
            "bugs[1].evidence[0].status",
        ),
        (
            with("evidence", json!({ "screenshot": "x" })),
            "bugs[1].evidence",
        ),
    ] {
        let v = report(&t, &sid, bugs).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{field}: {v}");
        assert_eq!(v["errors"][0]["extensions"]["field"], field, "{v}");
    }
    // A bad enum value is refused by the schema, naming the item.
    let v = report(&t, &sid, with("category", json!("BROKEN"))).await;
    assert_eq!(code(&v), "BAD_USER_INPUT");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("1"),
        "{v}"
    );
    let many = Value::Array(vec![bug("b"); 1001]);
    let v = report(&t, &sid, many).await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "bugs");

    assert_eq!(
        t.count("SELECT count(*) FROM bugs").await,
        2,
        "rejected batches write nothing"
    );
    assert_eq!(session(&t, &sid).await["bugsFound"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bugs_move_only_along_their_lifecycle() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    let v = report(&t, &sid, json!([bug("a")])).await;
    let id = v["data"]["reportBugs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let m = |q: &'static str| {
        let t = &t;
        let id = id.clone();
        async move { t.gql(q, json!({ "id": id })).await.0 }
    };
    let v =
        m("mutation($id: UUID!) { markBugReported(id: $id, linearIssueId: \"QA-1\") { status } }")
            .await;
    assert_eq!(
        (
            v["errors"][0]["extensions"]["from"].as_str(),
            v["errors"][0]["extensions"]["to"].as_str()
        ),
        (Some("DETECTED"), Some("REPORTED"))
    );
    let v = m("mutation($id: UUID!) { validateBug(id: $id) { status } }").await;
    assert_eq!(v["data"]["validateBug"]["status"], "VALIDATED");
    let v = m("mutation($id: UUID!) { markBugReported(id: $id, linearIssueId: \"\") { status } }")
        .await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "linearIssueId");
    let v = m("mutation($id: UUID!) { markBugReported(id: $id, linearIssueId: \"QA-1\") { status linearIssueId } }").await;
    assert_eq!(
        v["data"]["markBugReported"],
        json!({ "status": "REPORTED", "linearIssueId": "QA-1" })
    );
    let v = m("mutation($id: UUID!) { reopenBug(id: $id) { status } }").await;
    assert_eq!(code(&v), "INVALID_TRANSITION");
    let v = m("mutation($id: UUID!) { dismissBug(id: $id, reason: \"duplicate of QA-0\") { status dismissReason } }").await;
    assert_eq!(
        v["data"]["dismissBug"],
        json!({ "status": "DISMISSED", "dismissReason": "duplicate of QA-0" })
    );
    let v = m("mutation($id: UUID!) { dismissBug(id: $id, reason: \"again\") { status } }").await;
    assert_eq!(v["errors"][0]["extensions"]["from"], "DISMISSED");
    let v = m("mutation($id: UUID!) { reopenBug(id: $id) { status dismissReason } }").await;
    assert_eq!(
        v["data"]["reopenBug"],
        json!({ "status": "DETECTED", "dismissReason": null })
    );
    let (v, _) = t
        .gql(
            "mutation { validateBug(id: \"00000000-0000-0000-0000-000000000009\") { status } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&v), "NOT_FOUND");
}
