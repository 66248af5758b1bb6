//! The read path: nested connections, batching, ordering, pagination and filters.

use std::collections::HashSet;

use bughive_gateway::seed::{self, SeedPlan};
use bughive_gateway::store::bugs::model::{BugPriority, BugStatus};
use bughive_gateway::store::pages::model::PageStatus;
use serde_json::{Value, json};

use crate::harness::{TestDb, code, seeded};

const NESTED: &str = "query($s: Int, $p: Int) { sessions(first: $s) { nodes { id pages(first: $p) { nodes { id bugs { nodes { id } } } } } } }";
const NESTED_COUNTS: &str = "query($s: Int, $p: Int) { sessions(first: $s) { totalCount nodes { id pages(first: $p) { totalCount nodes { id bugs { totalCount nodes { id } } } } } } }";

/// The ids the nested query must return, computed from the seed plan: sessions newest first,
/// pages and bugs in creation order.
fn expected_tree(plan: SeedPlan) -> Value {
    let (sessions, pages, bugs) = seed::generate(plan);
    let mut sessions = sessions;
    sessions.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
    let tree: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let mut ps: Vec<_> = pages.iter().filter(|p| p.session_id == s.id).collect();
            ps.sort_by_key(|p| (p.created_at, p.id));
            let ps: Vec<Value> = ps
                .iter()
                .map(|p| {
                    let mut bs: Vec<_> = bugs.iter().filter(|b| b.page_id == Some(p.id)).collect();
                    bs.sort_by_key(|b| (b.created_at, b.id));
                    json!({ "id": p.id, "bugs": { "nodes": bs.iter().map(|b| json!({ "id": b.id })).collect::<Vec<_>>() } })
                })
                .collect();
            json!({ "id": s.id, "pages": { "nodes": ps } })
        })
        .collect();
    json!({ "sessions": { "nodes": tree } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_read_issues_a_constant_number_of_statements() {
    let (big, big_plan) = seeded(20, 50, 3).await;
    let (small, small_plan) = seeded(2, 5, 3).await;

    let (v_big, n_big) = big.gql(NESTED, json!({ "s": 20, "p": 50 })).await;
    let (v_small, n_small) = small.gql(NESTED, json!({ "s": 20, "p": 50 })).await;
    assert!(v_big.get("errors").is_none(), "{v_big}");
    assert!(n_big <= 3, "20x50x3 took {n_big} statements");
    assert_eq!(
        n_big, n_small,
        "statement count must not depend on row count"
    );

    // Exact rows and order, level by level.
    assert_eq!(v_big["data"], expected_tree(big_plan));
    assert_eq!(v_small["data"], expected_tree(small_plan));
    let pages: usize = v_big["data"]["sessions"]["nodes"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["pages"]["nodes"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(pages, 1000);

    // totalCount costs one grouped statement per level that asks for it.
    let (v_big, n_big) = big.gql(NESTED_COUNTS, json!({ "s": 20, "p": 50 })).await;
    let (_, n_small) = small.gql(NESTED_COUNTS, json!({ "s": 20, "p": 50 })).await;
    assert!(n_big <= 6, "with totalCount: {n_big} statements");
    assert_eq!(n_big, n_small);
    let s0 = &v_big["data"]["sessions"];
    assert_eq!(s0["totalCount"], 20);
    assert_eq!(s0["nodes"][0]["pages"]["totalCount"], 50);
    assert_eq!(s0["nodes"][0]["pages"]["nodes"][0]["bugs"]["totalCount"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_parent_limits_apply_to_each_parent() {
    let (t, _) = seeded(4, 12, 3).await;
    let (v, n) = t
        .gql(
            "{ sessions(first: 4) { nodes { pages(first: 5) { pageInfo { hasNextPage } nodes { bugs(first: 2) { pageInfo { hasNextPage } nodes { id } } } } } } }",
            json!({}),
        )
        .await;
    assert!(n <= 3, "{n} statements");
    for s in v["data"]["sessions"]["nodes"].as_array().expect("sessions") {
        let pages = s["pages"]["nodes"].as_array().expect("pages");
        assert_eq!(pages.len(), 5);
        assert_eq!(s["pages"]["pageInfo"]["hasNextPage"], true);
        for p in pages {
            assert_eq!(p["bugs"]["nodes"].as_array().map(Vec::len), Some(2));
            assert_eq!(p["bugs"]["pageInfo"]["hasNextPage"], true);
        }
    }
}

/// Walks a connection to its end with `first`/`after` and returns every id in order.
async fn walk(t: &TestDb, query: &str, path: &[&str], first: i64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let data = t.ok(query, json!({ "first": first, "after": after })).await;
        let mut conn = &data;
        for p in path {
            conn = &conn[*p];
        }
        let nodes = conn["edges"].as_array().expect("edges");
        assert!(nodes.len() as i64 <= first);
        for e in nodes {
            ids.push(e["node"]["id"].as_str().expect("id").to_owned());
        }
        pages += 1;
        assert!(pages < 100, "pagination does not terminate");
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], !after.is_null());
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(
            conn["pageInfo"]["endCursor"],
            nodes.last().expect("a full page")["cursor"]
        );
        after = conn["pageInfo"]["endCursor"].clone();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_round_trip_through_every_connection() {
    let (t, plan) = seeded(9, 11, 3).await;
    let (sessions, pages, bugs) = seed::generate(plan);

    let all = walk(
        &t,
        "query($first: Int, $after: String) { sessions(first: $first, after: $after) { pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { id } } } }",
        &["sessions"],
        4,
    )
    .await;
    let mut expected: Vec<_> = sessions.iter().collect();
    expected.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
    assert_eq!(
        all,
        expected
            .iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
    );

    let sid = sessions[3].id;
    let q = format!(
        "query($first: Int, $after: String) {{ session(id: \"{sid}\") {{ pages(first: $first, after: $after) {{ pageInfo {{ hasNextPage hasPreviousPage endCursor }} edges {{ cursor node {{ id }} }} }} }} }}"
    );
    let got = walk(&t, &q, &["session", "pages"], 3).await;
    let want: Vec<String> = pages
        .iter()
        .filter(|p| p.session_id == sid)
        .map(|p| p.id.to_string())
        .collect();
    assert_eq!(got, want);

    let q = format!(
        "query($first: Int, $after: String) {{ session(id: \"{sid}\") {{ bugs(first: $first, after: $after) {{ pageInfo {{ hasNextPage hasPreviousPage endCursor }} edges {{ cursor node {{ id }} }} }} }} }}"
    );
    let got = walk(&t, &q, &["session", "bugs"], 7).await;
    let want: Vec<String> = bugs
        .iter()
        .filter(|b| b.session_id == sid)
        .map(|b| b.id.to_string())
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_match_the_data() {
    let (t, plan) = seeded(6, 20, 3).await;
    let (sessions, pages, bugs) = seed::generate(plan);
    let s = &sessions[1];

    // sessions by status and baseUrl
    let data = t
        .ok(
            "{ sessions(status: COMPLETED, first: 50) { totalCount nodes { id status } } }",
            json!({}),
        )
        .await;
    let want = sessions
        .iter()
        .filter(|s| s.status.as_db() == "completed")
        .count();
    assert_eq!(data["sessions"]["totalCount"], want as i64);
    assert_eq!(
        data["sessions"]["nodes"].as_array().map(Vec::len),
        Some(want)
    );
    let data = t
        .ok(
            "query($u: String) { sessions(baseUrl: $u) { totalCount nodes { baseUrl } } }",
            json!({ "u": s.base_url }),
        )
        .await;
    assert_eq!(data["sessions"]["totalCount"], 1);
    assert_eq!(data["sessions"]["nodes"][0]["baseUrl"], s.base_url);

    // pages by status and depth
    let data = t
        .ok(
            "query($id: UUID!) { session(id: $id) { analyzed: pages(status: ANALYZED, first: 100) { totalCount nodes { status } } shallow: pages(maxDepth: 1, first: 100) { totalCount nodes { depth } } } }",
            json!({ "id": s.id }),
        )
        .await;
    let want = pages
        .iter()
        .filter(|p| p.session_id == s.id && p.status == PageStatus::Analyzed)
        .count();
    assert_eq!(data["session"]["analyzed"]["totalCount"], want as i64);
    assert!(
        data["session"]["analyzed"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|p| p["status"] == "ANALYZED")
    );
    let want = pages
        .iter()
        .filter(|p| p.session_id == s.id && p.depth <= 1)
        .count();
    assert_eq!(data["session"]["shallow"]["totalCount"], want as i64);
    assert_eq!(
        data["session"]["shallow"]["nodes"].as_array().map(Vec::len),
        Some(want)
    );

    // bugs by status, priority, category and confidence
    let data = t
        .ok(
            "query($id: UUID!) { session(id: $id) { bugs(first: 500, filter: { status: [DETECTED, VALIDATED], priority: [HIGH, CRITICAL], minConfidence: 0.7 }) { totalCount nodes { id status priority confidence } } } }",
            json!({ "id": s.id }),
        )
        .await;
    let want: Vec<String> = bugs
        .iter()
        .filter(|b| {
            b.session_id == s.id
                && matches!(b.status, BugStatus::Detected | BugStatus::Validated)
                && matches!(b.priority, BugPriority::High | BugPriority::Critical)
                && b.confidence >= 0.7
        })
        .map(|b| b.id.to_string())
        .collect();
    assert!(!want.is_empty());
    let got: Vec<String> = data["session"]["bugs"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, want);
    assert_eq!(data["session"]["bugs"]["totalCount"], want.len() as i64);

    let data = t
        .ok(
            "query($id: UUID!) { session(id: $id) { bugs(first: 500, filter: { category: [SECURITY] }) { totalCount } } }",
            json!({ "id": s.id }),
        )
        .await;
    let want = bugs
        .iter()
        .filter(|b| b.session_id == s.id && b.category.as_db() == "security")
        .count();
    assert_eq!(data["session"]["bugs"]["totalCount"], want as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_statistics_are_correct() {
    let (t, plan) = seeded(3, 10, 2).await;
    let (sessions, pages, bugs) = seed::generate(plan);
    let page = &pages[4]; // session 0, j = 4: parent is page 1
    let data = t
        .ok(
            "query($id: UUID!) { page(id: $id) { id url depth session { id } parent { id parent { id parent { id } } } children { totalCount nodes { id } } bugs { nodes { id session { id } page { id } } } } }",
            json!({ "id": page.id }),
        )
        .await;
    let p = &data["page"];
    assert_eq!(p["session"]["id"], json!(page.session_id));
    assert_eq!(p["parent"]["id"], json!(page.parent_page_id));
    assert_eq!(p["parent"]["parent"]["id"], json!(pages[0].id));
    assert_eq!(p["parent"]["parent"]["parent"], Value::Null);
    let kids: Vec<Value> = pages
        .iter()
        .filter(|c| c.parent_page_id == Some(page.id))
        .map(|c| json!({ "id": c.id }))
        .collect();
    assert_eq!(p["children"]["nodes"], json!(kids));
    assert_eq!(p["children"]["totalCount"], kids.len() as i64);
    assert_eq!(p["bugs"]["nodes"][0]["page"]["id"], json!(page.id));
    assert_eq!(
        p["bugs"]["nodes"][0]["session"]["id"],
        json!(page.session_id)
    );

    let s = &sessions[2];
    let data = t
        .ok(
            "query($id: UUID!) { session(id: $id) { bugsFound totalCost statistics { totalBugs avgConfidence byPriority { priority count } byCategory { category count } byStatus { status count } } } }",
            json!({ "id": s.id }),
        )
        .await;
    let st = &data["session"]["statistics"];
    let mine: Vec<_> = bugs.iter().filter(|b| b.session_id == s.id).collect();
    assert_eq!(st["totalBugs"], mine.len() as i64);
    let avg = mine.iter().map(|b| b.confidence).sum::<f64>() / mine.len() as f64;
    assert!((st["avgConfidence"].as_f64().unwrap_or(-1.0) - avg).abs() < 1e-9);
    let crit = mine
        .iter()
        .filter(|b| b.priority == BugPriority::Critical)
        .count();
    assert_eq!(
        st["byPriority"][0],
        json!({ "priority": "CRITICAL", "count": crit })
    );
    assert_eq!(st["byCategory"].as_array().map(Vec::len), Some(8));
    let sum: i64 = st["byStatus"]
        .as_array()
        .expect("byStatus")
        .iter()
        .map(|c| c["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(sum, mine.len() as i64);
    assert_eq!(
        data["session"]["totalCost"],
        json!(format!("{}", s.total_cost.with_scale(4)))
    );

    // Statistics for many sessions are one statement.
    let (v, n) = t
        .gql(
            "{ sessions { nodes { statistics { totalBugs } } } }",
            json!({}),
        )
        .await;
    assert!(v.get("errors").is_none());
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_null_and_bad_arguments_are_user_errors() {
    let (t, _) = seeded(2, 3, 1).await;
    let data = t
        .ok(
            "{ session(id: \"00000000-0000-0000-0000-000000000001\") { id } page(id: \"00000000-0000-0000-0000-000000000001\") { id } bug(id: \"00000000-0000-0000-0000-000000000001\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(data, json!({ "session": null, "page": null, "bug": null }));

    for q in [
        "{ sessions(first: 501) { nodes { id } } }",
        "{ sessions(first: -1) { nodes { id } } }",
        "{ sessions(after: \"not-a-cursor\") { nodes { id } } }",
        "{ sessions { nodes { pages(first: 1000) { nodes { id } } } } }",
        "{ sessions { nodes { bugs(filter: { minConfidence: 2 }) { nodes { id } } } } }",
        "{ session(id: \"nope\") { id } }",
        "{ sessions { nodes { nonexistent } } }",
        "{ sessions { ",
    ] {
        let (v, _) = t.gql(q, json!({})).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{q}: {v}");
    }
    let (v, _) = t
        .gql("{ sessions(first: 501) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "first");
    // `first: 500` is the cap, not an error.
    let (v, _) = t
        .gql("{ sessions(first: 500) { nodes { id } } }", json!({}))
        .await;
    assert!(v.get("errors").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_without_children_gets_an_empty_connection() {
    let (t, _) = seeded(1, 3, 0).await;
    let data = t
        .ok("{ sessions { nodes { bugs { totalCount nodes { id } pageInfo { hasNextPage startCursor endCursor } } pages { nodes { bugs { totalCount nodes { id } } } } } } }", json!({}))
        .await;
    let s = &data["sessions"]["nodes"][0];
    assert_eq!(
        s["bugs"],
        json!({ "totalCount": 0, "nodes": [], "pageInfo": { "hasNextPage": false, "startCursor": null, "endCursor": null } })
    );
    assert_eq!(
        s["pages"]["nodes"][2]["bugs"],
        json!({ "totalCount": 0, "nodes": [] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_keys_follow_the_selection_order() {
    let (t, _) = seeded(2, 3, 2).await;
    let q = "query Q { sessions { pageInfo { hasNextPage } totalCount nodes { ...S } } } \
             fragment S on CrawlSession { status pages { totalCount nodes { url bugs { totalCount nodes { title } } } } id }";
    let req = async_graphql::Request::new(q);
    let (resp, _) =
        bughive_gateway::api::execute(&t.schema, &t.db, crate::harness::anonymous_admin(), req)
            .await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    let text = String::from_utf8(resp.to_json()).expect("utf-8");
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing in {text}"))
    };
    assert!(
        pos("\"pageInfo\"") < pos("\"totalCount\"") && pos("\"totalCount\"") < pos("\"nodes\""),
        "{text}"
    );
    assert!(
        pos("\"status\"") < pos("\"pages\"") && pos("\"pages\"") < pos("\"id\""),
        "{text}"
    );
    // Inside a page: totalCount (a batched count) still comes before nodes.
    let page = &text[pos("\"bugs\"")..];
    assert!(
        page.find("\"totalCount\"") < page.find("\"nodes\""),
        "{page}"
    );

    // Anonymous operations and aliases too.
    let (resp, _) = bughive_gateway::api::execute(
        &t.schema,
        &t.db,
        crate::harness::anonymous_admin(),
        async_graphql::Request::new(
            "{ b: sessions { nodes { id } totalCount } a: sessions { totalCount } }",
        ),
    )
    .await;
    let text = String::from_utf8(resp.to_json()).expect("utf-8");
    assert!(text.starts_with(r#"{"data":{"b":{"nodes":"#), "{text}");
}

/// Bugs and pages answer plain columns without the generic resolver (`graphql::fast`); a
/// fragment sends the same selection through the generic path, and both must agree exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_object_path_answers_like_the_generic_one() {
    let (t, _) = seeded(2, 3, 2).await;
    let bug_fields = "__typename id title description category priority status confidence expectedBehavior actualBehavior affectedUsers linearIssueId dismissReason createdAt updatedAt stepsToReproduce evidence page { id } session { id }";
    let page_fields = "__typename id url title status depth crawledAt createdAt updatedAt analysisResult parent { id } session { id } children { totalCount }";
    let plain = format!(
        "{{ sessions {{ nodes {{ pages {{ nodes {{ {page_fields} renamed: url bugs {{ nodes {{ {bug_fields} again: title }} }} }} }} }} }} }}"
    );
    let generic = format!(
        "{{ sessions {{ nodes {{ pages {{ nodes {{ ...P bugs {{ nodes {{ ...B }} }} }} }} }} }} }} \
         fragment P on Page {{ {page_fields} renamed: url }} fragment B on Bug {{ {bug_fields} again: title }}"
    );
    let (a, stmts_a) = t.gql(&plain, json!({})).await;
    let (b, stmts_b) = t.gql(&generic, json!({})).await;
    assert!(a.get("errors").is_none(), "{a}");
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json"),
        "same key order"
    );
    // A key selected twice merges both selections, as the generic path does.
    let twice = "{ sessions { nodes { pages { nodes { bugs { nodes { page { id } page { url } title } } } } } } }";
    let (v, _) = t.gql(twice, json!({})).await;
    let page = &v["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["nodes"][0]["page"];
    assert!(page["id"].is_string() && page["url"].is_string(), "{v}");
    let first_bug = &a["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["nodes"][0];
    assert_eq!(first_bug["__typename"], "Bug");
    assert_eq!(first_bug["again"], first_bug["title"]);
    // Batched the same way: one statement per relation and level.
    assert_eq!(stmts_a, stmts_b);
}

/// An error raised inside a pre-rendered list (`graphql::fast`) must come back exactly as the
/// generic resolver reports it: same message, same path, the same nulls around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_fast_lists_match_the_generic_path() {
    let (t, _) = seeded(2, 2, 2).await;
    let plain =
        "{ sessions { nodes { id pages { nodes { url bugs(first: 501) { nodes { id } } } } } } }";
    let generic = "{ sessions { nodes { id pages { nodes { ...P } } } } } \
                   fragment P on Page { url bugs(first: 501) { nodes { id } } }";
    let (mut a, _) = t.gql(plain, json!({})).await;
    let (mut b, _) = t.gql(generic, json!({})).await;
    // The two texts place `bugs` at different columns; everything else must agree.
    for v in [&mut a, &mut b] {
        for e in v["errors"].as_array_mut().expect("errors") {
            assert!(e["locations"][0]["column"].is_number(), "{e}");
            e["locations"].take();
        }
    }
    assert_eq!(a, b);
    let errors = a["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 4, "one per page: {a}");
    assert_eq!(code(&a), "BAD_USER_INPUT", "{a}");
    assert_eq!(
        errors[1]["path"],
        json!(["sessions", "nodes", 0, "pages", "nodes", 1, "bugs"]),
        "{a}"
    );
    // bugs is nullable, so the page survives with its other fields.
    let page = &a["data"]["sessions"]["nodes"][0]["pages"]["nodes"][1];
    assert!(page["url"].is_string() && page["bugs"].is_null(), "{a}");
    // Through a WebSocket, where async-graphql serializes the response itself, the same.
    let addr = t.serve().await;
    let mut ws = crate::harness::ws_connect(addr, "graphql-transport-ws").await;
    crate::harness::ws_subscribe(&mut ws, "graphql-transport-ws", "1", plain, json!({})).await;
    let mut msg = crate::harness::ws_next(&mut ws).await;
    assert_eq!(msg["type"], "next", "{msg}");
    let mut payload = msg["payload"].take();
    for e in payload["errors"].as_array_mut().expect("errors over ws") {
        e["locations"].take();
    }
    assert_eq!(payload["data"], a["data"], "{payload}");
    assert_eq!(payload["errors"], a["errors"], "{payload}");
}

/// Row structs decode `sql_query` rows by position with a name check (`db::row`): a statement
/// whose columns are elsewhere, reordered or followed by extras still decodes by name, field
/// for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_decode_by_position_or_by_name_alike() {
    use bughive_gateway::store::bugs::model::BugRow;
    use diesel_async::RunQueryDsl;
    let (t, _) = seeded(1, 1, 3).await;
    let mut conn = t.db.conn().await.expect("conn");
    let order = " ORDER BY created_at, id";
    let load = |sql: String| diesel::sql_query(sql);
    let plain: Vec<BugRow> = load(format!("SELECT * FROM bugs{order}"))
        .load(&mut conn)
        .await
        .expect("plain");
    let extra: Vec<BugRow> = load(format!("SELECT *, 'x' AS title_2 FROM bugs{order}"))
        .load(&mut conn)
        .await
        .expect("extra column");
    let reversed: Vec<BugRow> = load(format!(
        "SELECT updated_at, created_at, dismiss_reason, linear_issue_id, affected_users, \
         actual_behavior, expected_behavior, confidence, evidence, steps_to_reproduce, status, \
         priority, category, description, title, page_id, session_id, id FROM bugs{order}"
    ))
    .load(&mut conn)
    .await
    .expect("reversed");
    assert_eq!(plain.len(), 3);
    let dump = |rows: &[BugRow]| format!("{rows:?}");
    assert_eq!(dump(&plain), dump(&extra));
    assert_eq!(dump(&plain), dump(&reversed));
    // A missing column is an error, not a silent default.
    let missing = load(format!("SELECT id FROM bugs{order}"))
        .load::<BugRow>(&mut conn)
        .await;
    assert!(missing.is_err());
}

/// Lists read only the columns the operation selects: a bug list that asks for `id title`
/// leaves description, steps, evidence and every other column but its key and cursor in the
/// table (each is selected as NULL), in the same number of statements as a list that asks for
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_fetch_only_the_columns_the_operation_selects() {
    let (t, _) = crate::harness::seeded(2, 2, 2).await;
    let addr = t.serve().await;
    let run = |query: &'static str| async move {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/graphql"))
            .header("x-bughive-sql", "1")
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .expect("post");
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(v.get("errors").is_none(), "{v}");
        let sql: Vec<String> = v["extensions"]["sql"]
            .as_array()
            .expect("extensions.sql")
            .iter()
            .map(|s| s["statement"].as_str().unwrap_or_default().to_owned())
            .collect();
        (v, sql)
    };
    let bugs_sql = |sql: &[String]| {
        sql.iter()
            .find(|s| s.contains("FROM bugs"))
            .cloned()
            .expect("a bug list statement")
    };

    let (slim, slim_sql) =
        run("{ sessions { nodes { pages { nodes { bugs { nodes { id title } } } } } } }").await;
    let stmt = bugs_sql(&slim_sql);
    for left_out in [
        "NULL AS description",
        "NULL AS steps_to_reproduce",
        "NULL AS evidence",
        "NULL AS expected_behavior",
        "NULL AS session_id",
        "NULL AS priority",
        "NULL AS updated_at",
    ] {
        assert!(stmt.contains(left_out), "{left_out} missing: {stmt}");
    }
    assert!(!stmt.contains("NULL AS title"), "{stmt}");
    let pages = slim_sql
        .iter()
        .find(|s| s.contains("FROM pages"))
        .expect("a page list statement");
    assert!(pages.contains("NULL AS analysis_result"), "{pages}");
    assert!(pages.contains("NULL AS url"), "{pages}");
    assert!(
        slim["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["nodes"][0]["title"]
            .is_string()
    );

    // Asked for, through a fragment on edges, a column is fetched; the statement count stays.
    let (full, full_sql) = run(
        "{ sessions { nodes { pages { nodes { analysisResult bugs { edges { node { ...B } } } } } } } } \
         fragment B on Bug { id description evidence }",
    )
    .await;
    let stmt = bugs_sql(&full_sql);
    assert!(!stmt.contains("AS description"), "{stmt}");
    assert!(!stmt.contains("AS evidence"), "{stmt}");
    assert!(stmt.contains("AS steps_to_reproduce"), "{stmt}");
    assert_eq!(full_sql.len(), slim_sql.len());
    let stored: String =
        t.raw()
            .await
            .query_one(
                "SELECT description FROM bugs WHERE id = $1",
                &[
                    &full["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["edges"][0]
                        ["node"]["id"]
                        .as_str()
                        .and_then(|s| s.parse::<uuid::Uuid>().ok())
                        .expect("id"),
                ],
            )
            .await
            .expect("bug")
            .get(0);
    assert_eq!(
        full["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["edges"][0]["node"]["description"],
        serde_json::json!(stored)
    );
}

/// Every field of `Bug` and `Page`, selected alone in a list (so the list leaves out every
/// column no selected field is declared to read), answers exactly what it answers when the list
/// selects everything. A field that reads a column its type does not declare (`SlimNode::NEEDS`)
/// would read the column's placeholder here. Fields come from introspection, so new ones are
/// covered without touching this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_field_reads_what_it_needs_when_selected_alone() {
    let (t, _) = crate::harness::seeded(2, 3, 3).await;
    let addr = t.serve().await;
    let run = |query: String| checked_post(addr, query);
    let selections = |ty: &'static str| field_selections(addr, ty);
    let bugs = selections("Bug").await;
    // `Page.bugs` is the list this test reads bugs through.
    let pages: Vec<String> = selections("Page")
        .await
        .into_iter()
        .filter(|p| p.split([' ', '(']).next() != Some("bugs"))
        .collect();
    assert!(bugs.len() > 15 && pages.len() > 10, "{bugs:?} {pages:?}");
    let list = |page: &str, bug: &str| {
        format!(
            "{{ sessions {{ nodes {{ pages {{ nodes {{ id {page} bugs {{ nodes {{ id {bug} }} }} }} }} }} }} }}"
        )
    };
    let everything = run(list(&pages.join(" "), &bugs.join(" "))).await;
    let all_pages = &everything["data"]["sessions"]["nodes"];
    for (page_sel, bug_sel) in pages
        .iter()
        .map(|p| (p.as_str(), ""))
        .chain(bugs.iter().map(|b| ("", b.as_str())))
    {
        let alone = run(list(page_sel, bug_sel)).await;
        let field = |sel: &str| sel.split([' ', '(']).next().unwrap_or_default().to_owned();
        let (pf, bf) = (field(page_sel), field(bug_sel));
        for (s, session) in alone["data"]["sessions"]["nodes"]
            .as_array()
            .expect("sessions")
            .iter()
            .enumerate()
        {
            for (p, page) in session["pages"]["nodes"]
                .as_array()
                .expect("pages")
                .iter()
                .enumerate()
            {
                let full_page = &all_pages[s]["pages"]["nodes"][p];
                assert_eq!(page["id"], full_page["id"]);
                if !pf.is_empty() {
                    assert_eq!(page[&pf], full_page[&pf], "Page.{pf} alone");
                }
                for (b, bug) in page["bugs"]["nodes"]
                    .as_array()
                    .expect("bugs")
                    .iter()
                    .enumerate()
                {
                    let full_bug = &full_page["bugs"]["nodes"][b];
                    assert_eq!(bug["id"], full_bug["id"]);
                    if !bf.is_empty() {
                        assert_eq!(bug[&bf], full_bug[&bf], "Bug.{bf} alone");
                    }
                }
            }
        }
    }
}

/// By-id loads read only the columns their field selects too: each field of `CrawlSession`
/// and `Page`, selected alone through `session(id)`, `page(id)`, `Bug.session` and
/// `Bug.page`, answers what the whole row answers; and two selections of one level with
/// different columns share one statement that reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_id_loads_read_only_what_their_field_selects() {
    let (t, _) = crate::harness::seeded(2, 2, 2).await;
    let addr = t.serve().await;
    let run = |query: String| checked_post(addr, query);
    let fields = |ty: &'static str| field_selections(addr, ty);
    let sessions = fields("CrawlSession").await;
    let pages = fields("Page").await;
    let listed = run("{ sessions { nodes { id pages(first: 1) { nodes { id bugs(first: 1) { nodes { id } } } } } } }".into()).await;
    let session = &listed["data"]["sessions"]["nodes"][0];
    let (sid, pid) = (
        session["id"].as_str().expect("session id"),
        session["pages"]["nodes"][0]["id"]
            .as_str()
            .expect("page id"),
    );
    let key = |sel: &str| sel.split([' ', '(']).next().unwrap_or_default().to_owned();
    for (root, all) in [
        (format!("session(id: \"{sid}\")"), &sessions),
        (format!("page(id: \"{pid}\")"), &pages),
        (
            format!("page(id: \"{pid}\") {{ bugs(first: 1) {{ nodes {{ session"),
            &sessions,
        ),
        (
            format!("page(id: \"{pid}\") {{ bugs(first: 1) {{ nodes {{ page"),
            &pages,
        ),
    ] {
        let close = "}".repeat(root.matches('{').count());
        let whole = run(format!("{{ {root} {{ id {} }} {close} }}", all.join(" "))).await;
        for sel in all.iter() {
            let alone = run(format!("{{ {root} {{ id {sel} }} {close} }}")).await;
            let (mut a, mut w) = (&alone["data"], &whole["data"]);
            while let Some(next) = a.as_object().and_then(|o| o.values().next()) {
                if a.get("id").is_some() {
                    break;
                }
                let k = a
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_default();
                a = if next.is_array() { &next[0] } else { next };
                w = if w[&k].is_array() { &w[&k][0] } else { &w[&k] };
            }
            let f = key(sel);
            assert_eq!(a[&f], w[&f], "{root} {f} alone");
            assert!(!a[&f].is_null() || w[&f].is_null());
        }
    }

    // Left out, in the statement.
    let v = run(format!("{{ session(id: \"{sid}\") {{ id baseUrl }} }}")).await;
    let sql: Vec<&str> = v["extensions"]["sql"]
        .as_array()
        .expect("sql")
        .iter()
        .filter_map(|s| s["statement"].as_str())
        .collect();
    assert!(
        sql.iter()
            .any(|s| s.contains("NULL AS config") && !s.contains("NULL AS base_url")),
        "{sql:?}"
    );

    // One level, two selections with different columns: one statement with both.
    let one = run(format!(
        "{{ page(id: \"{pid}\") {{ bugs {{ nodes {{ page {{ url }} }} }} }} }}"
    ))
    .await;
    let both = run(format!(
        "{{ page(id: \"{pid}\") {{ bugs {{ nodes {{ a: page {{ url }} b: page {{ title depth }} }} }} }} }}"
    ))
    .await;
    let count = |v: &serde_json::Value| v["extensions"]["sql"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&one), count(&both), "{both}");
    let page = run(format!("{{ page(id: \"{pid}\") {{ url title depth }} }}")).await;
    let page = &page["data"]["page"];
    let bug = &both["data"]["page"]["bugs"]["nodes"][0];
    assert_eq!(bug["a"]["url"], page["url"]);
    assert_eq!(bug["b"]["title"], page["title"]);
    assert_eq!(bug["b"]["depth"], page["depth"]);
}

/// A query's answer, with the statements it ran (`extensions.sql`); it must have no errors.
async fn checked_post(addr: std::net::SocketAddr, query: String) -> serde_json::Value {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("x-bughive-sql", "1")
        .json(&serde_json::json!({ "query": query }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!(v.get("errors").is_none(), "{query}: {v}");
    v
}

/// Each field of a type (from introspection) with a selection that reads it: scalars alone,
/// objects by `id`, connections by `totalCount`, statistics by `totalBugs`.
async fn field_selections(addr: std::net::SocketAddr, ty: &str) -> Vec<String> {
    let v = checked_post(addr, type_fields(ty)).await;
    selections(&v["data"])
}

/// Every field of a type with a selection that reads it, as one selection set's text.
pub async fn field_names(t: &TestDb, ty: &str) -> String {
    selections(&t.ok(&type_fields(ty), serde_json::json!({})).await).join(" ")
}

fn type_fields(ty: &str) -> String {
    format!(
        "{{ __type(name: \"{ty}\") {{ fields {{ name type {{ kind name ofType {{ kind name ofType {{ kind name ofType {{ kind name }} }} }} }} }} }} }}"
    )
}

fn selections(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in v["__type"]["fields"].as_array().expect("fields") {
        let name = f["name"].as_str().expect("name").to_owned();
        let mut ty = &f["type"];
        while ty["name"].is_null() {
            assert!(ty.is_object(), "type of {name} deeper than the query");
            ty = &ty["ofType"];
        }
        let object = ty["name"].as_str().unwrap_or_default();
        out.push(match ty["kind"].as_str() {
            Some("OBJECT") if object.ends_with("Connection") => {
                format!("{name}(first: 1) {{ totalCount }}")
            }
            Some("OBJECT") if object == "SessionStatistics" => format!("{name} {{ totalBugs }}"),
            Some("OBJECT") if object == "AgentUsage" => format!("{name} {{ cost }}"),
            Some("OBJECT") if object == "SimilarBug" => format!("{name}(first: 1) {{ score }}"),
            Some("OBJECT") => format!("{name} {{ id }}"),
            _ => name,
        });
    }
    out
}
