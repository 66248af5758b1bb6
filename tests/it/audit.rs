//! The audit log: one entry per mutation, in the mutation's transaction; immutable; queryable by
//! admins.

use serde_json::{Value, json};

use crate::harness::{TestDb, code};
use crate::jobs::{claim, enqueue};
use crate::mutations::{create_session, record, report};

async fn entries(t: &TestDb) -> i64 {
    t.count("SELECT count(*) FROM audit_logs").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_writes_one_entry() {
    let t = TestDb::new().await;
    let admin = t.admin().await;
    let mut n = entries(&t).await;
    let mut step = |action: &'static str| {
        n += 1;
        (action, n)
    };
    let mut expect = Vec::new();

    let sid = create_session(&t).await;
    expect.push(step("createSession"));
    t.ok(
        "mutation($id: UUID!) { startSession(id: $id) { id } }",
        json!({ "id": sid }),
    )
    .await;
    expect.push(step("startSession"));
    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.25\") { id } }",
        json!({ "id": sid }),
    )
    .await;
    expect.push(step("addSessionCost"));
    let r = record(&t, &sid, json!([{ "url": "https://a.test/", "depth": 0 }])).await;
    expect.push(step("recordPages"));
    let page = r["pages"][0]["id"].as_str().expect("id").to_owned();
    t.ok(
        "mutation($id: UUID!) { setPageStatus(id: $id, status: CRAWLING) { id } }",
        json!({ "id": page }),
    )
    .await;
    expect.push(step("setPageStatus"));
    let v = report(&t, &sid, json!([crate::mutations::bug("b")])).await;
    expect.push(step("reportBugs"));
    let bug = v["data"]["reportBugs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (q, action) in [
        (
            "mutation($id: UUID!) { validateBug(id: $id) { id } }",
            "validateBug",
        ),
        (
            "mutation($id: UUID!) { markBugReported(id: $id, linearIssueId: \"QA-1\") { id } }",
            "markBugReported",
        ),
        (
            "mutation($id: UUID!) { dismissBug(id: $id, reason: \"dup\") { id } }",
            "dismissBug",
        ),
        (
            "mutation($id: UUID!) { reopenBug(id: $id) { id } }",
            "reopenBug",
        ),
    ] {
        t.ok(q, json!({ "id": bug })).await;
        expect.push(step(action));
    }
    let job = enqueue(&t, "analyze", Some(&sid), 3).await;
    expect.push(step("enqueueJob"));
    let jid = job["id"].as_str().expect("id").to_owned();
    claim(&t, &["analyze"]).await;
    expect.push(step("claimJob"));
    t.ok(
        "mutation($id: UUID!) { heartbeatJob(id: $id, progress: 0.5) { id } }",
        json!({ "id": jid }),
    )
    .await;
    expect.push(step("heartbeatJob"));
    t.ok(
        "mutation($id: UUID!) { failJob(id: $id, error: \"x\", retry: true) { id } }",
        json!({ "id": jid }),
    )
    .await;
    expect.push(step("failJob"));
    t.ok(
        "mutation($id: UUID!) { cancelJob(id: $id) { id } }",
        json!({ "id": jid }),
    )
    .await;
    expect.push(step("cancelJob"));
    let other = enqueue(&t, "x", None, 3).await;
    expect.push(step("enqueueJob"));
    claim(&t, &["x"]).await;
    expect.push(step("claimJob"));
    t.ok(
        "mutation($id: UUID!) { completeJob(id: $id) { id } }",
        json!({ "id": other["id"] }),
    )
    .await;
    expect.push(step("completeJob"));
    let p = t
        .ok(
            "mutation { createProject(slug: \"p1\", name: \"P\") { id } }",
            json!({}),
        )
        .await;
    expect.push(step("createProject"));
    let _ = p;
    let bob = t.user("bob", bughive_gateway::auth::Role::User).await;
    t.ok(
        "mutation($id: UUID!) { updateUser(id: $id, role: MANAGER) { id } }",
        json!({ "id": bob.user_id }),
    )
    .await;
    expect.push(step("updateUser"));
    for q in [
        "completeSession",
        "failSession",
        "cancelSession",
        "deleteSession",
    ] {
        let s2 = create_session(&t).await;
        expect.push(step("createSession"));
        if q != "cancelSession" && q != "deleteSession" {
            t.ok(
                "mutation($id: UUID!) { startSession(id: $id) { id } }",
                json!({ "id": s2 }),
            )
            .await;
            expect.push(step("startSession"));
        }
        let m = match q {
            "failSession" => {
                "mutation($id: UUID!) { failSession(id: $id, error: \"boom\") { id } }".to_owned()
            }
            "deleteSession" => "mutation($id: UUID!) { deleteSession(id: $id) }".to_owned(),
            _ => format!("mutation($id: UUID!) {{ {q}(id: $id) {{ id }} }}"),
        };
        t.ok(&m, json!({ "id": s2 })).await;
        expect.push(match q {
            "completeSession" => step("completeSession"),
            "failSession" => step("failSession"),
            "cancelSession" => step("cancelSession"),
            _ => step("deleteSession"),
        });
    }

    let c = t.raw().await;
    let rows = c
        .query("SELECT action, actor_id, actor_subject, request_id FROM audit_logs ORDER BY created_at, id", &[])
        .await
        .expect("audit rows");
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<String> = expect.iter().map(|(a, _)| (*a).to_owned()).collect();
    assert_eq!(actions, want);
    for r in &rows {
        assert_eq!(r.get::<_, Option<uuid::Uuid>>(1), Some(admin.user_id));
        assert_eq!(r.get::<_, String>(2), admin.subject);
        assert_eq!(r.get::<_, Option<String>>(3).as_deref(), Some("test"));
    }

    // Old and new values of a transition.
    let row = c
        .query_one(
            "SELECT old_value->>'status', new_value->>'status', resource_type, resource_id FROM audit_logs WHERE action = 'startSession' ORDER BY created_at LIMIT 1",
            &[],
        )
        .await
        .expect("startSession entry");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("pending"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("running"));
    assert_eq!(row.get::<_, String>(2), "session");
    assert_eq!(
        row.get::<_, Option<uuid::Uuid>>(3).map(|u| u.to_string()),
        Some(sid)
    );
    let row = c
        .query_one(
            "SELECT new_value FROM audit_logs WHERE action = 'recordPages'",
            &[],
        )
        .await
        .expect("recordPages entry");
    assert_eq!(
        row.get::<_, Value>(0),
        json!({ "inserted": 1, "duplicates": 0 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_append_only_even_for_the_gateways_own_role() {
    let t = TestDb::new().await;
    create_session(&t).await;
    let c = t.raw().await;
    let role: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("role")
        .get(0);
    let gateway_role: String = {
        let mut conn = t.db.conn().await.expect("conn");
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = diesel::sql_types::Text)]
            r: String,
        }
        diesel::sql_query("SELECT current_user::text AS r")
            .get_result::<R>(&mut conn)
            .await
            .expect("role")
            .r
    };
    assert_eq!(
        role, gateway_role,
        "the raw connection uses the gateway's role"
    );
    for sql in [
        "UPDATE audit_logs SET action = 'forged'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = c.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(entries(&t).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_query_the_log_by_resource_actor_and_time() {
    let t = TestDb::new().await;
    let s1 = create_session(&t).await;
    let s2 = create_session(&t).await;
    t.ok(
        "mutation($id: UUID!) { startSession(id: $id) { id } }",
        json!({ "id": s1 }),
    )
    .await;
    let bob = t.user("bob", bughive_gateway::auth::Role::User).await;
    let (v, _) = t
        .gql_as(
            &bob,
            "mutation { createSession(input: { baseUrl: \"https://b.test\" }) { id } }",
            json!({}),
        )
        .await;
    assert!(v.get("errors").is_none(), "{v}");

    let q = "query($type: String, $id: UUID, $actor: UUID, $since: DateTime, $until: DateTime, $after: String) { auditLog(first: 2, after: $after, resourceType: $type, resourceId: $id, actorId: $actor, since: $since, until: $until) { totalCount nodes { action resourceId actorSubject actor { subject } oldValue newValue requestId createdAt } pageInfo { hasNextPage endCursor } } }";
    let v = t.ok(q, json!({ "type": "session", "id": s1 })).await;
    let log = &v["auditLog"];
    assert_eq!(log["totalCount"], 2);
    // Newest first.
    assert_eq!(log["nodes"][0]["action"], "startSession");
    assert_eq!(log["nodes"][0]["oldValue"]["status"], "pending");
    assert_eq!(log["nodes"][0]["newValue"]["status"], "running");
    assert_eq!(log["nodes"][1]["action"], "createSession");
    assert_eq!(log["nodes"][1]["oldValue"], Value::Null);

    let v = t.ok(q, json!({ "actor": bob.user_id })).await;
    assert_eq!(v["auditLog"]["totalCount"], 1);
    assert_eq!(v["auditLog"]["nodes"][0]["actor"]["subject"], "bob");

    // Pagination and time range.
    let all = t.ok(q, json!({})).await;
    assert_eq!(all["auditLog"]["totalCount"], 4);
    assert_eq!(all["auditLog"]["pageInfo"]["hasNextPage"], true);
    let next = t
        .ok(
            q,
            json!({ "after": all["auditLog"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(next["auditLog"]["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(next["auditLog"]["pageInfo"]["hasNextPage"], false);
    let newest = all["auditLog"]["nodes"][0]["createdAt"].clone();
    let v = t.ok(q, json!({ "until": newest })).await;
    assert_eq!(v["auditLog"]["totalCount"], 3);
    let v = t.ok(q, json!({ "since": newest })).await;
    assert_eq!(v["auditLog"]["totalCount"], 1);
    let _ = s2;

    let (v, _) = t
        .gql_as(&bob, "{ auditLog { totalCount } }", json!({}))
        .await;
    assert_eq!(code(&v), "FORBIDDEN");
}
