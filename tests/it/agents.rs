//! AI agents and their executions: the lifecycle, exact cost charged to the session in the
//! same transaction, statistics, owner-only access, the reaper's timeouts, batched reads, and
//! rejected inputs that change nothing.

use bughive_gateway::auth::Role;
use serde_json::{Value, json};

use crate::atomicity::snapshot;
use crate::harness::{TestDb, code, seeded};
use crate::mutations::{create_session, start};

const EXECUTION: &str = "id status inputTokens outputTokens cost durationMs deadlineAt error result startedAt finishedAt agent { name } session { id }";

async fn register(t: &TestDb, name: &str) -> String {
    let d = t
        .ok(
            "mutation($n: String!) { registerAgent(input: { name: $n, type: \"crawler\", modelProvider: \"openai\", modelName: \"gpt-4o\", capabilities: { vision: true }, tags: [\"web\", \"fast\"] }) { id name type tags isActive capabilities successRate } }",
            json!({ "n": name }),
        )
        .await;
    let a = &d["registerAgent"];
    assert_eq!(a["name"], name);
    assert_eq!(a["type"], "crawler");
    assert_eq!(a["tags"], json!(["web", "fast"]));
    assert_eq!(a["capabilities"], json!({ "vision": true }));
    assert_eq!(a["isActive"], true);
    assert_eq!(a["successRate"], Value::Null, "no executions yet");
    a["id"].as_str().expect("id").to_owned()
}

async fn start_new(t: &TestDb, agent: &str, session: &str) -> Value {
    let q = format!(
        "mutation($a: UUID!, $s: UUID!) {{ startExecution(input: {{ agentId: $a, sessionId: $s, timeoutSeconds: 60 }}) {{ {EXECUTION} }} }}"
    );
    t.ok(&q, json!({ "a": agent, "s": session })).await["startExecution"].clone()
}

async fn finish(t: &TestDb, id: &str, input: Value) -> Value {
    let q = format!(
        "mutation($id: UUID!, $in: FinishExecutionInput!) {{ finishExecution(id: $id, input: $in) {{ {EXECUTION} }} }}"
    );
    t.gql(&q, json!({ "id": id, "in": input })).await.0
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn total_cost(t: &TestDb, session: &str) -> Value {
    t.ok(
        "query($id: UUID!) { session(id: $id) { totalCost } }",
        json!({ "id": session }),
    )
    .await["session"]["totalCost"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_charge_their_session_exactly_and_agents_add_them_up() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    start(&t, &sid).await;
    let agent = register(&t, "crawler-1").await;
    let other = register(&t, "validator-1").await;

    let a = start_new(&t, &agent, &sid).await;
    assert_eq!(a["status"], "RUNNING");
    assert!(a["deadlineAt"].is_string() && a["startedAt"].is_string());
    assert_eq!(a["cost"], "0.0000");

    // Queued, then started: of two starters one wins.
    let q = t
        .ok(
            "mutation($a: UUID!, $s: UUID!) { queueExecution(input: { agentId: $a, sessionId: $s, input: { url: \"/\" } }) { id status startedAt deadlineAt } }",
            json!({ "a": other, "s": sid }),
        )
        .await["queueExecution"]
        .clone();
    assert_eq!(q["status"], "PENDING");
    assert_eq!(q["deadlineAt"], Value::Null);
    let b = id(&q);
    let started = t
        .ok(
            "mutation($id: UUID!) { startExecution(id: $id) { status deadlineAt } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(started["startExecution"]["status"], "RUNNING");
    let (again, _) = t
        .gql(
            "mutation($id: UUID!) { startExecution(id: $id) { status } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(code(&again), "INVALID_TRANSITION", "{again}");
    assert!(
        again["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RUNNING to RUNNING"),
        "{again}"
    );

    let done = finish(
        &t,
        &id(&a),
        json!({ "status": "SUCCESS", "inputTokens": 1200, "outputTokens": 300, "cost": "0.1234", "result": { "pages": 3 } }),
    )
    .await;
    let done = &done["data"]["finishExecution"];
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["cost"], "0.1234");
    assert_eq!(done["inputTokens"], 1200);
    assert_eq!(done["result"], json!({ "pages": 3 }));
    assert!(done["durationMs"].as_i64().is_some_and(|d| d >= 0));
    assert_eq!(done["deadlineAt"], Value::Null);
    assert!(done["finishedAt"].is_string());

    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"0.0100\") { totalCost } }",
        json!({ "id": sid }),
    )
    .await;
    let failed = finish(
        &t,
        &b,
        json!({ "status": "FAILURE", "inputTokens": 10, "outputTokens": 0, "cost": "0.0001", "error": "model refused" }),
    )
    .await;
    assert_eq!(failed["data"]["finishExecution"]["status"], "FAILURE");
    assert_eq!(failed["data"]["finishExecution"]["error"], "model refused");
    assert_eq!(total_cost(&t, &sid).await, "0.1335");

    // Finishing twice is a refused move, and charges nothing.
    let twice = finish(&t, &id(&a), json!({ "status": "SUCCESS", "cost": "1" })).await;
    assert_eq!(code(&twice), "INVALID_TRANSITION", "{twice}");
    assert_eq!(total_cost(&t, &sid).await, "0.1335");

    let d = t
        .ok(
            "query($s: UUID!, $a: UUID!) { session(id: $s) { totalCost agentUsage { agent { name } executions inputTokens outputTokens cost } executions { totalCount nodes { status agent { name } } } } agent(id: $a) { successRate avgDurationMs stats { executions succeeded failed timedOut running pending successRate inputTokens outputTokens totalCost } executions { totalCount nodes { id } } } }",
            json!({ "s": sid, "a": agent }),
        )
        .await;
    assert_eq!(
        d["session"]["agentUsage"],
        json!([
            { "agent": { "name": "crawler-1" }, "executions": 1, "inputTokens": 1200, "outputTokens": 300, "cost": "0.1234" },
            { "agent": { "name": "validator-1" }, "executions": 1, "inputTokens": 10, "outputTokens": 0, "cost": "0.0001" },
        ])
    );
    assert_eq!(d["session"]["executions"]["totalCount"], 2);
    assert_eq!(
        d["session"]["executions"]["nodes"],
        json!([
            { "status": "SUCCESS", "agent": { "name": "crawler-1" } },
            { "status": "FAILURE", "agent": { "name": "validator-1" } },
        ])
    );
    let stats = &d["agent"]["stats"];
    assert_eq!(
        *stats,
        json!({ "executions": 1, "succeeded": 1, "failed": 0, "timedOut": 0, "running": 0, "pending": 0, "successRate": 1.0, "inputTokens": 1200, "outputTokens": 300, "totalCost": "0.1234" })
    );
    assert_eq!(d["agent"]["successRate"], 1.0);
    assert!(d["agent"]["avgDurationMs"].is_number());
    assert_eq!(d["agent"]["executions"]["totalCount"], 1);

    // The session's cost is exactly what its executions and addSessionCost added.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM crawl_sessions WHERE id = '{sid}' AND total_cost = 0.0100 + (SELECT sum(cost) FROM agent_executions WHERE session_id = '{sid}')"
        ))
        .await,
        1
    );
    // One audit entry per change: two registrations, queue, two starts, two finishes (and the
    // two sessions charges of the finishes).
    let actions = t
        .raw()
        .await
        .query(
            "SELECT action || ':' || resource_type FROM audit_logs WHERE resource_type IN ('agent', 'execution') OR action = 'finishExecution' ORDER BY id",
            &[],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    assert_eq!(
        actions,
        [
            "registerAgent:agent",
            "registerAgent:agent",
            "startExecution:execution",
            "queueExecution:execution",
            "startExecution:execution",
            "finishExecution:session",
            "finishExecution:execution",
            "finishExecution:session",
            "finishExecution:execution",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_finishers_charge_the_session_once() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    start(&t, &sid).await;
    let agent = register(&t, "racer").await;
    let e = id(&start_new(&t, &agent, &sid).await);
    let results = futures::future::join_all((0..8).map(|i| {
        let t = &t;
        let e = e.clone();
        async move {
            let status = if i % 2 == 0 { "SUCCESS" } else { "FAILURE" };
            finish(
                t,
                &e,
                json!({ "status": status, "cost": "0.5000", "error": "lost" }),
            )
            .await
        }
    }))
    .await;
    let won = results.iter().filter(|v| v.get("errors").is_none()).count();
    assert_eq!(won, 1, "{results:?}");
    for v in results.iter().filter(|v| v.get("errors").is_some()) {
        assert_eq!(code(v), "INVALID_TRANSITION", "{v}");
    }
    assert_eq!(total_cost(&t, &sid).await, "0.5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_agent_and_execution_inputs_change_nothing() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    start(&t, &sid).await;
    let other_sid = create_session(&t).await;
    let agent = register(&t, "taken").await;
    let idle = register(&t, "idle").await;
    t.ok(
        "mutation($id: UUID!) { updateAgent(id: $id, input: { isActive: false }) { isActive } }",
        json!({ "id": idle }),
    )
    .await;
    let page = t
        .ok(
            "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://a.test/x\", depth: 0 }]) { pages { id } } }",
            json!({ "s": other_sid }),
        )
        .await["recordPages"]["pages"][0]["id"]
        .clone();
    let running = id(&start_new(&t, &agent, &sid).await);
    // Queued while its agent was active; the agent is deactivated before it starts.
    let retired = register(&t, "retired").await;
    let queued = t
        .ok(
            "mutation($a: UUID!, $s: UUID!) { queueExecution(input: { agentId: $a, sessionId: $s }) { id } }",
            json!({ "a": retired, "s": sid }),
        )
        .await["queueExecution"]["id"]
        .clone();
    t.ok(
        "mutation($id: UUID!) { updateAgent(id: $id, input: { isActive: false }) { isActive } }",
        json!({ "id": retired }),
    )
    .await;
    // A session one cent short of what NUMERIC(10,4) holds: any further charge overflows.
    t.ok(
        "mutation($id: UUID!) { addSessionCost(id: $id, amount: \"999999.9999\") { totalCost } }",
        json!({ "id": sid }),
    )
    .await;
    let before = snapshot(&t).await;

    let missing = uuid::Uuid::now_v7().to_string();
    let start_q = "mutation($in: ExecutionInput!) { startExecution(input: $in) { id } }";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "mutation { registerAgent(input: { name: \"taken\", type: \"x\" }) { id } }",
            json!({}),
            "CONFLICT",
        ),
        (
            "mutation { registerAgent(input: { name: \"  \", type: \"x\" }) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation { registerAgent(input: { name: \"n\", type: \"x\", capabilities: [1] }) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($id: UUID!) { updateAgent(id: $id, input: { isActive: true }) { id } }",
            json!({ "id": missing }),
            "NOT_FOUND",
        ),
        (
            start_q,
            json!({ "in": { "agentId": missing, "sessionId": sid } }),
            "NOT_FOUND",
        ),
        (
            start_q,
            json!({ "in": { "agentId": idle, "sessionId": sid } }),
            "INVALID_TRANSITION",
        ),
        (
            start_q,
            json!({ "in": { "agentId": agent, "sessionId": missing } }),
            "NOT_FOUND",
        ),
        (
            start_q,
            json!({ "in": { "agentId": agent, "sessionId": sid, "pageId": page } }),
            "NOT_FOUND",
        ),
        (
            start_q,
            json!({ "in": { "agentId": agent, "sessionId": sid, "timeoutSeconds": 0 } }),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($id: UUID!, $in: ExecutionInput!) { startExecution(id: $id, input: $in) { id } }",
            json!({ "id": running, "in": { "agentId": agent, "sessionId": sid } }),
            "BAD_USER_INPUT",
        ),
        (
            "mutation { startExecution { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($id: UUID!) { startExecution(id: $id) { id } }",
            json!({ "id": queued }),
            "INVALID_TRANSITION",
        ),
    ];
    let finish_cases = [
        (
            json!({ "status": "SUCCESS", "cost": "0.12345" }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "status": "SUCCESS", "cost": "-1" }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "status": "SUCCESS", "cost": 0.5 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "status": "SUCCESS", "inputTokens": -1 }),
            "BAD_USER_INPUT",
        ),
        (json!({ "status": "TIMEOUT" }), "BAD_USER_INPUT"),
        (json!({ "status": "FAILURE" }), "BAD_USER_INPUT"),
        // The session would pass 999999.9999: the whole move rolls back.
        (
            json!({ "status": "SUCCESS", "cost": "0.0001" }),
            "BAD_USER_INPUT",
        ),
    ];
    for (q, vars, want) in cases {
        let (v, _) = t.gql(q, vars.clone()).await;
        assert_eq!(code(&v), want, "{q} {vars}: {v}");
    }
    for (input, want) in finish_cases {
        let v = finish(&t, &running, input.clone()).await;
        assert_eq!(code(&v), want, "{input}: {v}");
    }
    assert_eq!(
        snapshot(&t).await,
        before,
        "a rejected call changed something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_visible_with_their_session_only() {
    let t = TestDb::new().await;
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let agent = register(&t, "shared").await;
    let as_ok = |who: &bughive_gateway::auth::Principal, q: &'static str, vars: Value| {
        let who = who.clone();
        let t = &t;
        async move {
            let (v, _) = t.gql_as(&who, q, vars).await;
            v
        }
    };
    let sid = as_ok(
        &alice,
        "mutation { createSession(input: { baseUrl: \"https://alice.test\" }) { id } }",
        json!({}),
    )
    .await["data"]["createSession"]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    let e = as_ok(
        &alice,
        "mutation($a: UUID!, $s: UUID!) { startExecution(input: { agentId: $a, sessionId: $s }) { id } }",
        json!({ "a": agent, "s": sid }),
    )
    .await["data"]["startExecution"]["id"]
        .as_str()
        .expect("execution")
        .to_owned();
    as_ok(
        &alice,
        "mutation($id: UUID!) { finishExecution(id: $id, input: { status: SUCCESS, cost: \"0.2000\", inputTokens: 5 }) { id } }",
        json!({ "id": e }),
    )
    .await;

    // Bob: the agent is in the registry, but Alice's execution is not his to see or touch.
    let read = "query($a: UUID!, $e: UUID!) { execution(id: $e) { id } agent(id: $a) { name successRate stats { executions totalCost } executions { totalCount nodes { id } } } }";
    let v = as_ok(&bob, read, json!({ "a": agent, "e": e })).await;
    assert_eq!(v["data"]["execution"], Value::Null, "{v}");
    assert_eq!(v["data"]["agent"]["name"], "shared");
    assert_eq!(v["data"]["agent"]["successRate"], Value::Null);
    assert_eq!(
        v["data"]["agent"]["stats"],
        json!({ "executions": 0, "totalCost": "0.0000" })
    );
    assert_eq!(
        v["data"]["agent"]["executions"],
        json!({ "totalCount": 0, "nodes": [] })
    );
    let v = as_ok(&alice, read, json!({ "a": agent, "e": e })).await;
    assert_eq!(v["data"]["execution"]["id"], e.as_str());
    assert_eq!(
        v["data"]["agent"]["stats"],
        json!({ "executions": 1, "totalCost": "0.2000" })
    );
    assert_eq!(v["data"]["agent"]["executions"]["totalCount"], 1);

    let before = snapshot(&t).await;
    let v = as_ok(
        &bob,
        "mutation($a: UUID!, $s: UUID!) { startExecution(input: { agentId: $a, sessionId: $s }) { id } }",
        json!({ "a": agent, "s": sid }),
    )
    .await;
    assert_eq!(code(&v), "NOT_FOUND", "{v}");
    let v = as_ok(
        &bob,
        "mutation($id: UUID!) { finishExecution(id: $id, input: { status: SUCCESS }) { id } }",
        json!({ "id": e }),
    )
    .await;
    assert_eq!(code(&v), "NOT_FOUND", "{v}");
    let v = as_ok(
        &bob,
        "mutation { registerAgent(input: { name: \"mine\", type: \"x\" }) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    assert_eq!(snapshot(&t).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_executions_time_out_once() {
    let t = TestDb::new().await;
    let sid = create_session(&t).await;
    start(&t, &sid).await;
    let agent = register(&t, "slow").await;
    let late = id(&start_new(&t, &agent, &sid).await);
    let on_time = id(&start_new(&t, &agent, &sid).await);
    t.raw()
        .await
        .execute(
            &format!("UPDATE agent_executions SET deadline_at = now() - interval '1 second' WHERE id = '{late}'"),
            &[],
        )
        .await
        .expect("backdate");

    let reaped = bughive_gateway::store::agents::reaper::reap_all(&t.db)
        .await
        .expect("reap");
    assert_eq!(reaped, 1);
    assert_eq!(
        bughive_gateway::store::agents::reaper::reap_all(&t.db)
            .await
            .expect("reap"),
        0
    );
    let d = t
        .ok(
            "query($a: UUID!, $b: UUID!) { a: execution(id: $a) { status error durationMs finishedAt } b: execution(id: $b) { status } }",
            json!({ "a": late, "b": on_time }),
        )
        .await;
    assert_eq!(d["a"]["status"], "TIMEOUT");
    assert_eq!(d["a"]["error"], "no result within 60 s");
    assert_eq!(d["a"]["durationMs"], 60_000, "a timeout lasted its timeout");
    assert!(d["a"]["finishedAt"].is_string());
    assert_eq!(d["b"]["status"], "RUNNING");
    // The agent's late answer is refused: the execution already ended.
    let v = finish(&t, &late, json!({ "status": "SUCCESS", "cost": "0.1000" })).await;
    assert_eq!(code(&v), "INVALID_TRANSITION", "{v}");
    assert_eq!(total_cost(&t, &sid).await, "0.0000");
    assert_eq!(
        t.count("SELECT count(*) FROM audit_logs WHERE action = 'timeoutExecution' AND actor_subject = 'system:reaper'")
            .await,
        1
    );
}

/// Three reads, each with every relation at one depth only (a key type loaded at two depths
/// is one batch or two depending on which parents arrive in the same poll), and the statements
/// each costs: one per level.
const READS: [(&str, u64); 3] = [
    // sessions; their usage; its agents; their stats.
    (
        "{ sessions(first: 20) { nodes { id totalCost agentUsage { agent { name stats { executions } } executions cost } } } }",
        4,
    ),
    // sessions; their executions and its count; the executions' agents, pages and sessions.
    (
        "{ sessions(first: 20) { nodes { id executions { totalCount nodes { id status agent { name } page { url } session { id } } } } } }",
        6,
    ),
    // agents and their count; their stats (`successRate` reads the same key); their
    // executions and its count; the executions' sessions.
    (
        "{ agents { totalCount nodes { name successRate stats { executions totalCost } executions(first: 3) { totalCount nodes { id session { id } } } } } }",
        6,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reads_take_one_statement_per_level() {
    let (big, _) = seeded(20, 6, 1).await;
    let (small, _) = seeded(2, 2, 1).await;
    let mut answers = Vec::new();
    for (q, want) in READS {
        let (v_big, n_big) = big.gql(q, json!({})).await;
        let (v_small, n_small) = small.gql(q, json!({})).await;
        assert!(v_big.get("errors").is_none(), "{v_big}");
        assert!(v_small.get("errors").is_none(), "{v_small}");
        assert_eq!((n_big, n_small), (want, want), "{q}");
        answers.push(v_big);
    }
    let v_big = merge(&answers[0], &answers[1]);
    let v_agents = &answers[2];

    // The seed's executions: two per started session, adding up to its cost.
    let sessions = v_big["data"]["sessions"]["nodes"]
        .as_array()
        .expect("sessions");
    let mut with_executions = 0;
    for s in sessions {
        let n = s["executions"]["totalCount"].as_i64().expect("count");
        if n == 0 {
            continue;
        }
        with_executions += 1;
        assert_eq!(n, 2);
        let sum: f64 = s["agentUsage"]
            .as_array()
            .expect("usage")
            .iter()
            .map(|u| {
                u["cost"]
                    .as_str()
                    .expect("cost")
                    .parse::<f64>()
                    .expect("decimal")
            })
            .sum();
        let total: f64 = s["totalCost"]
            .as_str()
            .expect("cost")
            .parse()
            .expect("decimal");
        assert!((sum - total).abs() < 1e-9, "{s}");
        for e in s["executions"]["nodes"].as_array().expect("nodes") {
            assert_eq!(e["session"]["id"], s["id"]);
            assert!(e["page"]["url"].is_string());
        }
    }
    assert!(
        with_executions >= 10,
        "{with_executions} sessions with executions"
    );
    assert_eq!(v_agents["data"]["agents"]["totalCount"], 3);
    let executions: i64 = v_agents["data"]["agents"]["nodes"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["stats"]["executions"].as_i64().expect("executions"))
        .sum();
    assert_eq!(executions, 2 * with_executions);
}

/// The sessions of two answers with the same sessions, their fields side by side.
fn merge(a: &Value, b: &Value) -> Value {
    let nodes: Vec<Value> = a["data"]["sessions"]["nodes"]
        .as_array()
        .expect("sessions")
        .iter()
        .zip(b["data"]["sessions"]["nodes"].as_array().expect("sessions"))
        .map(|(x, y)| {
            let mut x = x.clone();
            if let (Some(x), Some(y)) = (x.as_object_mut(), y.as_object()) {
                x.extend(y.clone());
            }
            x
        })
        .collect();
    json!({ "data": { "sessions": { "nodes": nodes } } })
}
