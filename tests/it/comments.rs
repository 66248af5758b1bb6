//! Comments on bugs: newest first with pagination, by users and agents, edited and deleted by
//! their author only, soft deletion, statements per level, and rejected input.

use bughive_gateway::auth::{Principal, Role};
use serde_json::{Value, json};

use crate::atomicity::snapshot;
use crate::harness::{TestDb, code, seeded};

async fn bug_of(t: &TestDb, who: &Principal) -> String {
    let (v, _) = t
        .gql_as(
            who,
            "mutation { createSession(input: { baseUrl: \"https://c.example\" }) { id } }",
            json!({}),
        )
        .await;
    let sid = v["data"]["createSession"]["id"].clone();
    let (v, _) = t
        .gql_as(
            who,
            "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"Broken\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }",
            json!({ "s": sid }),
        )
        .await;
    v["data"]["reportBugs"][0]["id"]
        .as_str()
        .expect("bug")
        .to_owned()
}

const ADD: &str = "mutation($in: CommentInput!) { addComment(input: $in) { id body isAiGenerated aiMetadata author { subject } agent { name } editedAt } }";

async fn comment(t: &TestDb, who: &Principal, input: Value) -> Value {
    let (v, _) = t.gql_as(who, ADD, json!({ "in": input })).await;
    v
}

const LIST: &str = "query($b: UUID!, $first: Int, $after: String) { bug(id: $b) { comments(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { id body } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_run_newest_first_and_only_their_author_changes_them() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let admin = t.admin().await;
    let bug = bug_of(&t, &alice).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let v = comment(
            &t,
            &alice,
            json!({ "bugId": bug, "body": format!("note {n}") }),
        )
        .await;
        assert_eq!(v["data"]["addComment"]["author"]["subject"], "alice", "{v}");
        assert_eq!(v["data"]["addComment"]["isAiGenerated"], false);
        ids.push(
            v["data"]["addComment"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let agent = t
        .ok(
            "mutation { registerAgent(input: { name: \"triager\", type: \"triage\" }) { id } }",
            json!({}),
        )
        .await["registerAgent"]["id"]
        .clone();
    let by_agent = comment(
        &t,
        &admin,
        json!({ "bugId": bug, "body": "Likely a duplicate of QA-12.", "agentId": agent, "aiMetadata": { "model": "m1" } }),
    )
    .await;
    assert_eq!(
        by_agent["data"]["addComment"]["agent"]["name"], "triager",
        "{by_agent}"
    );
    assert_eq!(by_agent["data"]["addComment"]["isAiGenerated"], true);
    assert_eq!(
        by_agent["data"]["addComment"]["aiMetadata"],
        json!({ "model": "m1" })
    );
    let agents = by_agent["data"]["addComment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Newest first, two at a time.
    let (v, _) = t
        .gql_as(&alice, LIST, json!({ "b": bug, "first": 2 }))
        .await;
    let page = &v["data"]["bug"]["comments"];
    assert_eq!(page["totalCount"], 4, "{v}");
    assert_eq!(
        page["nodes"],
        json!([{ "id": agents, "body": "Likely a duplicate of QA-12." }, { "id": ids[2], "body": "note 3" }])
    );
    let (v, _) = t
        .gql_as(
            &alice,
            LIST,
            json!({ "b": bug, "first": 2, "after": page["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        v["data"]["bug"]["comments"]["nodes"],
        json!([{ "id": ids[1], "body": "note 2" }, { "id": ids[0], "body": "note 1" }])
    );
    assert_eq!(
        v["data"]["bug"]["comments"]["pageInfo"]["hasNextPage"],
        false
    );

    // Only the author edits or deletes; the admin posted the agent's comment, so Alice may not.
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($id: UUID!) { editComment(id: $id, body: \"note one\") { body editedAt } }",
            json!({ "id": ids[0] }),
        )
        .await;
    assert_eq!(v["data"]["editComment"]["body"], "note one", "{v}");
    assert!(v["data"]["editComment"]["editedAt"].is_string());
    let before = snapshot(&t).await;
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($id: UUID!) { editComment(id: $id, body: \"mine now\") { id } }",
            json!({ "id": agents }),
        )
        .await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    let (v, _) = t
        .gql_as(
            &admin,
            "mutation($id: UUID!) { deleteComment(id: $id) }",
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    assert_eq!(snapshot(&t).await, before);

    // Soft deletion: gone from the list, kept in the table and the audit log.
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($id: UUID!) { deleteComment(id: $id) }",
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(v["data"]["deleteComment"], ids[1].as_str(), "{v}");
    let (v, _) = t.gql_as(&alice, LIST, json!({ "b": bug })).await;
    assert_eq!(v["data"]["bug"]["comments"]["totalCount"], 3);
    assert!(!v.to_string().contains(&ids[1]));
    assert_eq!(
        t.count("SELECT count(*) FROM bug_comments WHERE deleted_at IS NOT NULL")
            .await,
        1
    );
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($id: UUID!) { editComment(id: $id, body: \"back\") { id } }",
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(code(&v), "NOT_FOUND", "a deleted comment is gone: {v}");
    assert_eq!(
        t.count("SELECT count(*) FROM audit_logs WHERE resource_type = 'comment'")
            .await,
        6,
        "four additions, an edit, a deletion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_are_the_bug_owners_and_bad_input_changes_nothing() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let bug = bug_of(&t, &alice).await;
    let mine = comment(&t, &alice, json!({ "bugId": bug, "body": "mine" })).await["data"]["addComment"]["id"].clone();
    let before = snapshot(&t).await;
    for (who, input, want) in [
        (&bob, json!({ "bugId": bug, "body": "hi" }), "NOT_FOUND"),
        (
            &alice,
            json!({ "bugId": bug, "body": "  " }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            json!({ "bugId": bug, "body": "x".repeat(10_001) }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            json!({ "bugId": bug, "body": "x", "aiMetadata": "m" }),
            "BAD_USER_INPUT",
        ),
        // Users do not speak for agents; service accounts and staff do.
        (
            &alice,
            json!({ "bugId": bug, "body": "x", "agentId": uuid::Uuid::now_v7() }),
            "FORBIDDEN",
        ),
    ] {
        let v = comment(&t, who, input.clone()).await;
        assert_eq!(code(&v), want, "{v}");
    }
    let (v, _) = t
        .gql_as(
            &bob,
            "mutation($id: UUID!) { editComment(id: $id, body: \"x\") { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(code(&v), "NOT_FOUND", "{v}");
    let (v, _) = t.gql_as(&bob, LIST, json!({ "b": bug })).await;
    assert_eq!(v["data"]["bug"], Value::Null);
    assert_eq!(snapshot(&t).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_reads_take_one_statement_per_level() {
    let q = "{ sessions(first: 20) { nodes { bugs { nodes { comments(first: 2) { totalCount nodes { body agent { name } author { id } } } } } } } }";
    let (big, _) = seeded(12, 2, 3).await;
    let (small, _) = seeded(2, 1, 1).await;
    let (v_big, n_big) = big.gql(q, json!({})).await;
    let (v_small, n_small) = small.gql(q, json!({})).await;
    assert!(
        v_big.get("errors").is_none() && v_small.get("errors").is_none(),
        "{v_big}"
    );
    // sessions; bugs; comments and their count; agents. (Seeded comments have no author, and a
    // level with no keys costs no statement.)
    assert_eq!((n_big, n_small), (5, 5));
    assert!(v_big.to_string().matches("Confirmed: ").count() >= 10);
}
