//! Full-text search and near-duplicates: ranking, snippets, pagination, filters, visibility,
//! duplicate candidates in `reportBugs`, statements per level, and rejected input.

use bughive_gateway::auth::{Principal, Role};
use serde_json::{Value, json};

use crate::harness::{TestDb, code};

async fn session_as(t: &TestDb, who: &Principal, url: &str) -> String {
    let (v, _) = t
        .gql_as(
            who,
            "mutation($u: String!) { createSession(input: { baseUrl: $u }) { id } }",
            json!({ "u": url }),
        )
        .await;
    v["data"]["createSession"]["id"]
        .as_str()
        .expect("session")
        .to_owned()
}

const REPORT: &str = "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id title duplicateCandidates { score bug { id title } } } }";

async fn report_as(t: &TestDb, who: &Principal, sid: &str, bugs: Value) -> Value {
    let (v, _) = t.gql_as(who, REPORT, json!({ "s": sid, "b": bugs })).await;
    assert!(v.get("errors").is_none(), "{v}");
    v["data"]["reportBugs"].clone()
}

fn bug(title: &str, description: &str, priority: &str) -> Value {
    json!({ "title": title, "description": description, "category": "FUNCTIONAL", "priority": priority, "confidence": 0.9 })
}

const SEARCH: &str = "query($q: String!, $s: UUID, $f: BugFilter, $first: Int, $after: String) { searchBugs(query: $q, sessionId: $s, filter: $f, first: $first, after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } nodes { rank snippet bug { id title } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_visible_matches_with_escaped_snippets() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let mine = session_as(&t, &alice, "https://shop.example").await;
    let theirs = session_as(&t, &bob, "https://shop.example").await;
    report_as(
        &t,
        &alice,
        &mine,
        json!([
            bug(
                "Checkout button unresponsive",
                "Clicking it does nothing on Safari.",
                "HIGH"
            ),
            bug(
                "Footer overlaps content",
                "The footer covers the checkout summary.",
                "LOW"
            ),
            bug(
                "Login form <script> label missing",
                "Screen readers announce nothing & users leave.",
                "MEDIUM"
            ),
        ]),
    )
    .await;
    report_as(
        &t,
        &bob,
        &theirs,
        json!([bug("Checkout crashes", "Bob's own.", "HIGH")]),
    )
    .await;

    let (v, _) = t.gql_as(&alice, SEARCH, json!({ "q": "checkout" })).await;
    let r = &v["data"]["searchBugs"];
    assert_eq!(r["totalCount"], 2, "{v}");
    let titles: Vec<&str> = r["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["bug"]["title"].as_str().expect("title"))
        .collect();
    // A title match outranks a description match; Bob's bug is not Alice's to find.
    assert_eq!(
        titles,
        ["Checkout button unresponsive", "Footer overlaps content"]
    );
    let first = &r["nodes"][0];
    assert!(first["rank"].as_f64().expect("rank") > r["nodes"][1]["rank"].as_f64().expect("rank"));
    assert!(
        first["snippet"]
            .as_str()
            .expect("snippet")
            .contains("<mark>Checkout</mark>"),
        "{first}"
    );

    // Snippets are HTML-escaped around their marks.
    let (v, _) = t.gql_as(&alice, SEARCH, json!({ "q": "label" })).await;
    let snippet = v["data"]["searchBugs"]["nodes"][0]["snippet"]
        .as_str()
        .expect("snippet")
        .to_owned();
    assert!(
        snippet.contains("&lt;script&gt;") && !snippet.contains("<script>"),
        "{snippet}"
    );
    assert!(snippet.contains("<mark>label</mark>"), "{snippet}");

    // Pages follow the ranking; filters and the session narrow it.
    let (v, _) = t
        .gql_as(&alice, SEARCH, json!({ "q": "checkout", "first": 1 }))
        .await;
    let page = &v["data"]["searchBugs"];
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let (v, _) = t
        .gql_as(
            &alice,
            SEARCH,
            json!({ "q": "checkout", "first": 1, "after": page["pageInfo"]["endCursor"] }),
        )
        .await;
    let next = &v["data"]["searchBugs"];
    assert_eq!(
        next["nodes"][0]["bug"]["title"], "Footer overlaps content",
        "{v}"
    );
    assert_eq!(next["pageInfo"]["hasNextPage"], false);
    assert_eq!(next["pageInfo"]["hasPreviousPage"], true);
    let (v, _) = t
        .gql_as(
            &alice,
            SEARCH,
            json!({ "q": "checkout", "f": { "priority": ["LOW"] } }),
        )
        .await;
    assert_eq!(v["data"]["searchBugs"]["totalCount"], 1, "{v}");
    let (v, _) = t.gql(SEARCH, json!({ "q": "checkout", "s": theirs })).await;
    assert_eq!(
        v["data"]["searchBugs"]["nodes"][0]["bug"]["title"],
        "Checkout crashes"
    );
    // Web-search syntax: a phrase, and an exclusion.
    let (v, _) = t
        .gql_as(&alice, SEARCH, json!({ "q": "checkout -footer" }))
        .await;
    assert_eq!(v["data"]["searchBugs"]["totalCount"], 1, "{v}");
    // Only stop words or punctuation: nothing matches, and that is not an error.
    let (v, _) = t.gql_as(&alice, SEARCH, json!({ "q": "the !!" })).await;
    assert_eq!(v["data"]["searchBugs"]["totalCount"], 0, "{v}");

    for (vars, field) in [
        (json!({ "q": "   " }), "query"),
        (json!({ "q": "x".repeat(501) }), "query"),
        (json!({ "q": "checkout", "after": "not-a-cursor" }), "after"),
        (json!({ "q": "checkout", "first": 101 }), "first"),
    ] {
        let (v, _) = t.gql_as(&alice, SEARCH, vars).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
        assert_eq!(v["errors"][0]["extensions"]["field"], field, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_bugs_names_likely_originals_and_similar_lists_batch_per_level() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let monday = session_as(&t, &alice, "https://shop.example").await;
    let elsewhere = session_as(&t, &alice, "https://other.example").await;
    let bobs = session_as(&t, &bob, "https://shop.example").await;
    let original = report_as(
        &t,
        &alice,
        &monday,
        json!([bug("Checkout button does not respond", "", "HIGH")]),
    )
    .await[0]["id"]
        .clone();
    report_as(
        &t,
        &alice,
        &elsewhere,
        json!([bug("Checkout button does not respond", "", "HIGH")]),
    )
    .await;
    report_as(
        &t,
        &bob,
        &bobs,
        json!([bug("Checkout button does not respond!", "", "HIGH")]),
    )
    .await;

    // Tuesday's crawl of the same site: the first bug is a likely duplicate of Monday's, the
    // second is new, and the two are not each other's originals.
    let tuesday = session_as(&t, &alice, "https://shop.example").await;
    let reported = report_as(
        &t,
        &alice,
        &tuesday,
        json!([
            bug("Checkout button does not respond on click", "", "HIGH"),
            bug("Checkout button does not respond on tap", "", "HIGH"),
            bug("Newsletter popup covers the menu", "", "LOW"),
        ]),
    )
    .await;
    let candidates = &reported[0]["duplicateCandidates"];
    assert_eq!(candidates.as_array().map(Vec::len), Some(1), "{reported}");
    assert_eq!(candidates[0]["bug"]["id"], original);
    let score = candidates[0]["score"].as_f64().expect("score");
    assert!((0.6..=1.0).contains(&score), "{score}");
    assert_eq!(
        reported[1]["duplicateCandidates"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(reported[2]["duplicateCandidates"], json!([]));

    // `similar` looks both ways in time, within the site, among what Alice may see.
    let (v, _) = t
        .gql_as(
            &alice,
            "query($id: UUID!) { bug(id: $id) { similar { score bug { title session { baseUrl } } } } }",
            json!({ "id": original }),
        )
        .await;
    let similar = v["data"]["bug"]["similar"]
        .as_array()
        .expect("similar")
        .clone();
    assert_eq!(similar.len(), 2, "{v}");
    for s in &similar {
        assert_eq!(s["bug"]["session"]["baseUrl"], "https://shop.example/");
        assert!(
            s["bug"]["title"].as_str().expect("title").contains("on "),
            "{s}"
        );
    }
    assert!(similar[0]["score"].as_f64() >= similar[1]["score"].as_f64());

    // One statement per level, however many bugs ask.
    let q = "query($s: UUID!) { session(id: $s) { bugs { nodes { title similar(first: 3) { score bug { title } } duplicateCandidates { score } } } } }";
    let (small, n_small) = t.gql_as(&alice, q, json!({ "s": monday })).await;
    let (big, n_big) = t.gql_as(&alice, q, json!({ "s": tuesday })).await;
    assert!(
        small.get("errors").is_none() && big.get("errors").is_none(),
        "{big}"
    );
    assert_eq!(n_small, n_big);
    assert_eq!(n_big, 4, "session, bugs, similar, duplicate candidates");

    let (v, _) = t
        .gql_as(
            &alice,
            "query($id: UUID!) { bug(id: $id) { similar(minScore: 1.5) { score } } }",
            json!({ "id": original }),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
}
