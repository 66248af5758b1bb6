//! The evidence registry: credibility, verification, symmetric links, owner-only access,
//! statements per level, and rejected input that changes nothing.

use bughive_gateway::auth::{Principal, Role};
use serde_json::{Value, json};

use crate::atomicity::snapshot;
use crate::harness::{TestDb, code, seeded};

async fn bug_of(t: &TestDb, who: &Principal, url: &str) -> (String, String) {
    let (v, _) = t
        .gql_as(
            who,
            "mutation($u: String!) { createSession(input: { baseUrl: $u }) { id } }",
            json!({ "u": url }),
        )
        .await;
    let sid = v["data"]["createSession"]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    let (v, _) = t
        .gql_as(
            who,
            "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"Broken cart\", category: FUNCTIONAL, priority: HIGH, confidence: 0.7 }]) { id } }",
            json!({ "s": sid }),
        )
        .await;
    (
        sid,
        v["data"]["reportBugs"][0]["id"]
            .as_str()
            .expect("bug")
            .to_owned(),
    )
}

const ADD: &str = "mutation($in: EvidenceInput!) { addEvidence(input: $in) { id sourceType summary data credibility isVerified verifiedAt execution { id } related { id } contradicts { id } } }";

async fn add(t: &TestDb, who: &Principal, input: Value) -> Value {
    let (v, _) = t.gql_as(who, ADD, json!({ "in": input })).await;
    v
}

fn id(v: &Value) -> String {
    v["data"]["addEvidence"]["id"]
        .as_str()
        .expect("evidence")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_scored_verified_and_linked_both_ways() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let (sid, bug) = bug_of(&t, &admin, "https://shop.example").await;
    let agent = t
        .ok(
            "mutation { registerAgent(input: { name: \"a\", type: \"validator\" }) { id } }",
            json!({}),
        )
        .await["registerAgent"]["id"]
        .clone();
    let exec = t
        .ok(
            "mutation($a: UUID!, $s: UUID!) { startExecution(input: { agentId: $a, sessionId: $s }) { id } }",
            json!({ "a": agent, "s": sid }),
        )
        .await["startExecution"]["id"]
        .clone();

    let shot = add(&t, &admin, json!({ "bugId": bug, "sourceType": "SCREENSHOT", "summary": "Cart button greyed out", "data": { "url": "https://x/1.png" }, "credibility": 0.9 })).await;
    assert!(shot.get("errors").is_none(), "{shot}");
    let shot = id(&shot);
    let ai = add(&t, &admin, json!({ "bugId": bug, "executionId": exec, "sourceType": "AI_ANALYSIS", "summary": "The handler throws", "credibility": 0.6, "relatedTo": [shot] })).await;
    assert_eq!(ai["data"]["addEvidence"]["execution"]["id"], exec);
    assert_eq!(
        ai["data"]["addEvidence"]["related"],
        json!([{ "id": shot }])
    );
    let ai = id(&ai);
    let human = add(&t, &admin, json!({ "bugId": bug, "sourceType": "HUMAN_REPORT", "summary": "Works for me", "credibility": 0.3, "contradicts": [shot] })).await;
    let human = id(&human);

    let read = "query($b: UUID!, $e: UUID!) { bug(id: $b) { credibility evidenceItems { totalCount nodes { id related { id } contradicts { id } } } } execution(id: $e) { evidence { nodes { id } } } }";
    let d = t.ok(read, json!({ "b": bug, "e": exec })).await;
    let c = d["bug"]["credibility"].as_f64().expect("credibility");
    assert!((c - 0.6).abs() < 1e-9, "mean of 0.9, 0.6, 0.3: {c}");
    assert_eq!(d["bug"]["evidenceItems"]["totalCount"], 3);
    // Links go both ways.
    assert_eq!(
        d["bug"]["evidenceItems"]["nodes"][0],
        json!({ "id": shot, "related": [{ "id": ai }], "contradicts": [{ "id": human }] })
    );
    assert_eq!(d["execution"]["evidence"]["nodes"], json!([{ "id": ai }]));

    // Verified evidence counts twice; verifying again is a refused move.
    let v = t
        .ok(
            "mutation($id: UUID!) { verifyEvidence(id: $id) { isVerified verifiedAt verifiedBy { subject } } }",
            json!({ "id": shot }),
        )
        .await;
    assert_eq!(v["verifyEvidence"]["isVerified"], true);
    assert_eq!(v["verifyEvidence"]["verifiedBy"]["subject"], "dev:admin");
    let (again, _) = t
        .gql(
            "mutation($id: UUID!) { verifyEvidence(id: $id) { id } }",
            json!({ "id": shot }),
        )
        .await;
    assert_eq!(code(&again), "INVALID_TRANSITION", "{again}");
    let d = t.ok(read, json!({ "b": bug, "e": exec })).await;
    let c = d["bug"]["credibility"].as_f64().expect("credibility");
    assert!(
        (c - 2.7 / 4.0).abs() < 1e-9,
        "(2 x 0.9 + 0.6 + 0.3) / 4: {c}"
    );

    let (v, _) = t
        .gql(
            "mutation($a: UUID!, $b: UUID!) { linkEvidence(id: $a, otherId: $b, kind: CONTRADICTS) { contradicts { id } } }",
            json!({ "a": ai, "b": human }),
        )
        .await;
    assert_eq!(
        v["data"]["linkEvidence"]["contradicts"],
        json!([{ "id": human }]),
        "{v}"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM audit_logs WHERE resource_type = 'evidence'")
            .await,
        5,
        "three additions, a verification, a link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_the_bug_owners_and_bad_input_changes_nothing() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let (_, bug) = bug_of(&t, &alice, "https://alice.example").await;
    let (_, bobs_bug) = bug_of(&t, &bob, "https://bob.example").await;
    let mine = id(&add(
        &t,
        &alice,
        json!({ "bugId": bug, "sourceType": "OTHER", "summary": "x", "credibility": 0.5 }),
    )
    .await);
    let bobs = id(&add(
        &t,
        &bob,
        json!({ "bugId": bobs_bug, "sourceType": "OTHER", "summary": "y", "credibility": 0.5 }),
    )
    .await);
    let before = snapshot(&t).await;

    let (v, _) = t
        .gql_as(
            &bob,
            "query($id: UUID!) { evidence(id: $id) { id } bug(id: $id) { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(v["data"]["evidence"], Value::Null, "{v}");
    for (who, input, want) in [
        (
            &bob,
            json!({ "bugId": bug, "sourceType": "OTHER", "summary": "x", "credibility": 0.5 }),
            "NOT_FOUND",
        ),
        (
            &alice,
            json!({ "bugId": bug, "sourceType": "OTHER", "summary": "x", "credibility": 1.5 }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            json!({ "bugId": bug, "sourceType": "OTHER", "summary": "  ", "credibility": 0.5 }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            json!({ "bugId": bug, "sourceType": "OTHER", "summary": "x", "credibility": 0.5, "data": [1] }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            json!({ "bugId": bug, "sourceType": "OTHER", "summary": "x", "credibility": 0.5, "relatedTo": [bobs] }),
            "NOT_FOUND",
        ),
        (
            &alice,
            json!({ "bugId": bug, "sourceType": "NOPE", "summary": "x", "credibility": 0.5 }),
            "BAD_USER_INPUT",
        ),
    ] {
        let v = add(&t, who, input.clone()).await;
        assert_eq!(code(&v), want, "{input}: {v}");
    }
    let (v, _) = t
        .gql_as(
            &bob,
            "mutation($id: UUID!) { verifyEvidence(id: $id) { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(code(&v), "NOT_FOUND", "{v}");
    let (v, _) = t
        .gql_as(
            &alice,
            "mutation($id: UUID!) { linkEvidence(id: $id, otherId: $id, kind: RELATED) { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert_eq!(snapshot(&t).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_reads_take_one_statement_per_level() {
    let q = "{ sessions(first: 20) { nodes { bugs { nodes { credibility evidenceItems { totalCount nodes { summary related { id } contradicts { id } execution { id } bug { title } } } } } } } }";
    let (big, _) = seeded(12, 2, 3).await;
    let (small, _) = seeded(2, 1, 1).await;
    let (v_big, n_big) = big.gql(q, json!({})).await;
    let (v_small, n_small) = small.gql(q, json!({})).await;
    assert!(v_big.get("errors").is_none(), "{v_big}");
    assert!(v_small.get("errors").is_none(), "{v_small}");
    // sessions; bugs; credibility; evidence and its count; links (`related` and `contradicts`
    // share a key type, so one batch); executions; bugs of the evidence.
    assert_eq!((n_big, n_small), (8, 8));
    // The seed gives the bugs an execution worked on evidence of that execution.
    let with_evidence = v_big.to_string().matches("Reproduced by").count();
    assert!(with_evidence >= 10, "{with_evidence}");
}
