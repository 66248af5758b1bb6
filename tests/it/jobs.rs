//! The job queue: lifecycle, claiming, retries, leases, crawl jobs driving their session, and
//! rejected calls that change nothing.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::atomicity::snapshot;
use crate::harness::{TestDb, code};
use crate::mutations::{create_session, start};

const JOB: &str = "id kind status progress message attempts maxAttempts leaseExpiresAt claimedBy result error startedAt finishedAt payload session { id status }";

pub async fn enqueue(t: &TestDb, kind: &str, session: Option<&str>, max_attempts: i32) -> Value {
    let q = format!(
        "mutation($kind: String!, $sid: UUID, $max: Int!) {{ enqueueJob(input: {{ kind: $kind, sessionId: $sid, payload: {{ url: \"https://a.test/\" }}, maxAttempts: $max }}) {{ {JOB} }} }}"
    );
    t.ok(
        &q,
        json!({ "kind": kind, "sid": session, "max": max_attempts }),
    )
    .await["enqueueJob"]
        .clone()
}

pub async fn claim(t: &TestDb, kinds: &[&str]) -> Value {
    let q = format!(
        "mutation($kinds: [String!]!) {{ claimJob(kinds: $kinds, leaseSeconds: 30, worker: \"w1\") {{ {JOB} }} }}"
    );
    t.ok(&q, json!({ "kinds": kinds })).await["claimJob"].clone()
}

async fn run(t: &TestDb, q: &str, id: &str) -> Value {
    let q = q.replace("JOB", JOB);
    let (v, _) = t.gql(&q, json!({ "id": id })).await;
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_moves_from_queue_to_done() {
    let t = TestDb::new().await;
    assert_eq!(claim(&t, &["analyze"]).await, Value::Null, "empty queue");

    let first = enqueue(&t, "analyze", None, 3).await;
    let second = enqueue(&t, "analyze", None, 3).await;
    let other = enqueue(&t, "report", None, 3).await;
    assert_eq!(first["status"], "PENDING");
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["progress"], 0.0);
    assert_eq!(first["payload"], json!({ "url": "https://a.test/" }));
    assert_eq!(first["session"], Value::Null);

    // Oldest first, only the asked kinds.
    let c = claim(&t, &["analyze"]).await;
    assert_eq!(c["id"], first["id"]);
    assert_eq!(c["status"], "RUNNING");
    assert_eq!(c["attempts"], 1);
    assert_eq!(c["claimedBy"], "w1");
    assert!(c["leaseExpiresAt"].is_string() && c["startedAt"].is_string());
    assert_eq!(claim(&t, &["analyze"]).await["id"], second["id"]);
    assert_eq!(claim(&t, &["analyze"]).await, Value::Null);
    assert_eq!(claim(&t, &["analyze", "report"]).await["id"], other["id"]);

    let job = id(&first);
    let lease_before = t
        .count(&format!(
            "SELECT extract(epoch FROM lease_expires_at)::bigint * 1000000 + extract(microseconds FROM lease_expires_at)::bigint FROM jobs WHERE id = '{job}'"
        ))
        .await;
    let v = run(
        &t,
        "mutation($id: UUID!) { heartbeatJob(id: $id, progress: 0.5, message: \"halfway\") { JOB } }",
        &job,
    )
    .await;
    let hb = &v["data"]["heartbeatJob"];
    assert_eq!(hb["progress"], 0.5);
    assert_eq!(hb["message"], "halfway");
    let lease_after = t
        .count(&format!(
            "SELECT extract(epoch FROM lease_expires_at)::bigint * 1000000 + extract(microseconds FROM lease_expires_at)::bigint FROM jobs WHERE id = '{job}'"
        ))
        .await;
    assert!(
        lease_after >= lease_before,
        "the heartbeat extends the lease"
    );
    // A heartbeat without a message keeps the last one.
    let v = run(
        &t,
        "mutation($id: UUID!) { heartbeatJob(id: $id, progress: 0.75) { JOB } }",
        &job,
    )
    .await;
    assert_eq!(v["data"]["heartbeatJob"]["message"], "halfway");

    let v = t
        .ok(
            "mutation($id: UUID!) { completeJob(id: $id, result: { pages: 12 }) { status progress result finishedAt leaseExpiresAt } }",
            json!({ "id": job }),
        )
        .await;
    let done = &v["completeJob"];
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["result"], json!({ "pages": 12 }));
    assert!(done["finishedAt"].is_string());
    assert_eq!(done["leaseExpiresAt"], Value::Null);

    let v = t
        .ok(
            "query($id: UUID!) { job(id: $id) { status } missing: job(id: \"00000000-0000-0000-0000-000000000009\") { id } }",
            json!({ "id": job }),
        )
        .await;
    assert_eq!(v["job"]["status"], "COMPLETED");
    assert_eq!(v["missing"], Value::Null);

    // Cancel: from PENDING and from RUNNING.
    let pending = enqueue(&t, "x", None, 3).await;
    let v = run(
        &t,
        "mutation($id: UUID!) { cancelJob(id: $id) { JOB } }",
        &id(&pending),
    )
    .await;
    assert_eq!(v["data"]["cancelJob"]["status"], "CANCELLED");
    enqueue(&t, "y", None, 3).await;
    let running = id(&claim(&t, &["y"]).await);
    let v = run(
        &t,
        "mutation($id: UUID!) { cancelJob(id: $id) { JOB } }",
        &running,
    )
    .await;
    assert_eq!(v["data"]["cancelJob"]["status"], "CANCELLED");
    assert_eq!(v["data"]["cancelJob"]["leaseExpiresAt"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_retries_with_backoff_until_attempts_run_out() {
    let t = TestDb::new().await;
    let job = id(&enqueue(&t, "flaky", None, 2).await);
    claim(&t, &["flaky"]).await;
    let v = run(
        &t,
        "mutation($id: UUID!) { failJob(id: $id, error: \"timeout\", retry: true) { JOB runAfter } }",
        &job,
    )
    .await;
    let f = &v["data"]["failJob"];
    assert_eq!(f["status"], "PENDING", "{v}");
    assert_eq!(f["error"], "timeout");
    assert_eq!(f["leaseExpiresAt"], Value::Null);
    assert_eq!(f["finishedAt"], Value::Null);
    // The backoff (1 s for the first attempt) keeps it from being claimed at once.
    assert_eq!(
        t.count(&format!(
            "SELECT (extract(epoch FROM run_after - updated_at) * 1000)::bigint FROM jobs WHERE id = '{job}'"
        ))
        .await,
        1000
    );
    assert_eq!(claim(&t, &["flaky"]).await, Value::Null);
    t.raw()
        .await
        .batch_execute(&format!(
            "UPDATE jobs SET run_after = now() WHERE id = '{job}'"
        ))
        .await
        .expect("skip the backoff");
    let again = claim(&t, &["flaky"]).await;
    assert_eq!(again["attempts"], 2);
    assert_eq!(again["error"], Value::Null);

    // No attempts left: FAILED even though a retry was asked for.
    let v = run(
        &t,
        "mutation($id: UUID!) { failJob(id: $id, error: \"timeout again\", retry: true) { JOB } }",
        &job,
    )
    .await;
    let f = &v["data"]["failJob"];
    assert_eq!(f["status"], "FAILED");
    assert_eq!(f["error"], "timeout again");
    assert!(f["finishedAt"].is_string());
    // Without retry, the first failure is final.
    let once = id(&enqueue(&t, "once", None, 5).await);
    claim(&t, &["once"]).await;
    let v = run(
        &t,
        "mutation($id: UUID!) { failJob(id: $id, error: \"bad input\") { JOB } }",
        &once,
    )
    .await;
    assert_eq!(v["data"]["failJob"]["status"], "FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_job_drives_its_session() {
    let t = TestDb::new().await;
    let session_status = |sid: String| {
        let t = &t;
        async move {
            t.ok(
                "query($id: UUID!) { session(id: $id) { status startedAt completedAt errorMessage } }",
                json!({ "id": sid }),
            )
            .await["session"]
                .clone()
        }
    };

    // claim starts the session; complete completes it.
    let s1 = create_session(&t).await;
    let j1 = enqueue(&t, "crawl", Some(&s1), 3).await;
    assert_eq!(j1["session"]["id"], json!(s1));
    let c = claim(&t, &["crawl"]).await;
    assert_eq!(c["session"]["status"], "RUNNING");
    assert!(session_status(s1.clone()).await["startedAt"].is_string());
    run(
        &t,
        "mutation($id: UUID!) { completeJob(id: $id) { JOB } }",
        &id(&j1),
    )
    .await;
    let s = session_status(s1.clone()).await;
    assert_eq!(s["status"], "COMPLETED");
    assert!(s["completedAt"].is_string());

    // A final failure fails the session with the job's error; a retry leaves it RUNNING.
    let s2 = create_session(&t).await;
    let j2 = id(&enqueue(&t, "crawl", Some(&s2), 2).await);
    claim(&t, &["crawl"]).await;
    run(
        &t,
        "mutation($id: UUID!) { failJob(id: $id, error: \"dns\", retry: true) { JOB } }",
        &j2,
    )
    .await;
    assert_eq!(session_status(s2.clone()).await["status"], "RUNNING");
    t.raw()
        .await
        .batch_execute("UPDATE jobs SET run_after = now()")
        .await
        .expect("skip the backoff");
    let again = claim(&t, &["crawl"]).await;
    assert_eq!(
        again["id"],
        json!(j2),
        "re-claiming a running session's job"
    );
    run(
        &t,
        "mutation($id: UUID!) { failJob(id: $id, error: \"dns for good\") { JOB } }",
        &j2,
    )
    .await;
    let s = session_status(s2.clone()).await;
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["errorMessage"], "dns for good");

    // Cancelling a crawl job cancels its session.
    let s3 = create_session(&t).await;
    let j3 = id(&enqueue(&t, "crawl", Some(&s3), 3).await);
    run(
        &t,
        "mutation($id: UUID!) { cancelJob(id: $id) { JOB } }",
        &j3,
    )
    .await;
    assert_eq!(session_status(s3.clone()).await["status"], "CANCELLED");

    // A queued crawl whose session ended meanwhile is cancelled at claim time, not run.
    let s4 = create_session(&t).await;
    let j4 = id(&enqueue(&t, "crawl", Some(&s4), 3).await);
    t.ok(
        "mutation($id: UUID!) { cancelSession(id: $id) { id } }",
        json!({ "id": s4 }),
    )
    .await;
    assert_eq!(claim(&t, &["crawl"]).await, Value::Null);
    let v = t
        .ok(
            "query($id: UUID!) { job(id: $id) { status error } }",
            json!({ "id": j4 }),
        )
        .await;
    assert_eq!(v["job"]["status"], "CANCELLED");
    assert_eq!(v["job"]["error"], "session is CANCELLED");

    // Other kinds linked to a session do not move it.
    let s5 = create_session(&t).await;
    let j5 = id(&enqueue(&t, "analyze", Some(&s5), 3).await);
    claim(&t, &["analyze"]).await;
    run(
        &t,
        "mutation($id: UUID!) { completeJob(id: $id) { JOB } }",
        &j5,
    )
    .await;
    assert_eq!(session_status(s5).await["status"], "PENDING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_moves_and_bad_input_are_refused_and_change_nothing() {
    let t = TestDb::new().await;
    let done_session = create_session(&t).await;
    start(&t, &done_session).await;
    t.ok(
        "mutation($id: UUID!) { completeSession(id: $id) { id } }",
        json!({ "id": done_session }),
    )
    .await;
    let pending = id(&enqueue(&t, "a", None, 3).await);
    let finished = id(&enqueue(&t, "b", None, 3).await);
    claim(&t, &["b"]).await;
    run(
        &t,
        "mutation($id: UUID!) { completeJob(id: $id) { JOB } }",
        &finished,
    )
    .await;

    let before = snapshot(&t).await;
    let vars = json!({ "pending": pending, "finished": finished, "done": done_session });
    let missing = "00000000-0000-0000-0000-000000000009";
    for (q, want, from_to) in [
        (
            "mutation($pending: UUID!) { heartbeatJob(id: $pending, progress: 0.1) { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("PENDING", "heartbeatJob")),
        ),
        (
            "mutation($pending: UUID!) { completeJob(id: $pending) { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("PENDING", "COMPLETED")),
        ),
        (
            "mutation($pending: UUID!) { failJob(id: $pending, error: \"x\") { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("PENDING", "FAILED")),
        ),
        (
            "mutation($finished: UUID!) { cancelJob(id: $finished) { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("COMPLETED", "CANCELLED")),
        ),
        (
            "mutation($finished: UUID!) { completeJob(id: $finished) { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("COMPLETED", "COMPLETED")),
        ),
        (
            format!("mutation {{ heartbeatJob(id: \"{missing}\", progress: 0.1) {{ id }} }}"),
            "NOT_FOUND",
            None,
        ),
        (format!("mutation {{ completeJob(id: \"{missing}\") {{ id }} }}"), "NOT_FOUND", None),
        (format!("mutation {{ failJob(id: \"{missing}\", error: \"x\") {{ id }} }}"), "NOT_FOUND", None),
        (format!("mutation {{ cancelJob(id: \"{missing}\") {{ id }} }}"), "NOT_FOUND", None),
        (
            format!("mutation {{ enqueueJob(input: {{ kind: \"crawl\", sessionId: \"{missing}\" }}) {{ id }} }}"),
            "NOT_FOUND",
            None,
        ),
        (
            format!("mutation {{ enqueueJob(input: {{ kind: \"analyze\", sessionId: \"{missing}\" }}) {{ id }} }}"),
            "NOT_FOUND",
            None,
        ),
        (
            "mutation($done: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $done }) { id } }".to_owned(),
            "INVALID_TRANSITION",
            Some(("COMPLETED", "enqueueJob")),
        ),
        ("mutation { enqueueJob(input: { kind: \" \" }) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { enqueueJob(input: { kind: \"a\", maxAttempts: 0 }) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { enqueueJob(input: { kind: \"a\", maxAttempts: 101 }) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { claimJob(kinds: []) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { claimJob(kinds: [\"\"]) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { claimJob(kinds: [\"a\"], leaseSeconds: 0) { id } }".to_owned(), "BAD_USER_INPUT", None),
        ("mutation { claimJob(kinds: [\"a\"], leaseSeconds: 86401) { id } }".to_owned(), "BAD_USER_INPUT", None),
        (
            "mutation($pending: UUID!) { heartbeatJob(id: $pending, progress: 1.5) { id } }".to_owned(),
            "BAD_USER_INPUT",
            None,
        ),
        (
            "mutation($pending: UUID!) { heartbeatJob(id: $pending, progress: -0.1) { id } }".to_owned(),
            "BAD_USER_INPUT",
            None,
        ),
        (
            "mutation($pending: UUID!) { failJob(id: $pending, error: \"\") { id } }".to_owned(),
            "BAD_USER_INPUT",
            None,
        ),
    ] {
        let (v, _) = t.gql(&q, vars.clone()).await;
        assert_eq!(code(&v), want, "{q}: {v}");
        if let Some((from, to)) = from_to {
            let ext = &v["errors"][0]["extensions"];
            assert_eq!((ext["from"].as_str(), ext["to"].as_str()), (Some(from), Some(to)), "{q}");
        }
        assert_eq!(snapshot(&t).await, before, "{q} changed the database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_job() {
    let t = TestDb::with_pool(24, 10_000).await;
    for _ in 0..30 {
        enqueue(&t, "race", None, 3).await;
    }
    let t = std::sync::Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let (v, _) = t
                .gql("mutation { claimJob(kinds: [\"race\"]) { id } }", json!({}))
                .await;
            assert!(v.get("errors").is_none(), "{v}");
            v["data"]["claimJob"]["id"].as_str().map(str::to_owned)
        }));
    }
    let mut claimed = HashSet::new();
    let mut empty = 0;
    for task in tasks {
        match task.await.expect("task") {
            Some(id) => assert!(claimed.insert(id), "a job was claimed twice"),
            None => empty += 1,
        }
    }
    assert_eq!(claimed.len(), 30);
    assert_eq!(empty, 30);
    assert_eq!(
        t.count("SELECT count(*) FROM jobs WHERE status = 'running' AND attempts = 1")
            .await,
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_leases_are_reaped_once_even_by_concurrent_reapers() {
    let t = TestDb::with_pool(12, 10_000).await;
    let crawl_session = create_session(&t).await;
    enqueue(&t, "crawl", Some(&crawl_session), 1).await;
    for _ in 0..39 {
        enqueue(&t, "work", None, 3).await;
    }
    for _ in 0..40 {
        let v = claim(&t, &["crawl", "work"]).await;
        assert!(v.is_object());
    }
    // A live lease is left alone.
    let live = id(&enqueue(&t, "live", None, 3).await);
    claim(&t, &["live"]).await;
    t.raw()
        .await
        .batch_execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE kind <> 'live'",
        )
        .await
        .expect("expire the leases");

    let reapers: Vec<_> = (0..4)
        .map(|_| {
            let db = t.db.clone();
            tokio::spawn(async move {
                bughive_gateway::store::jobs::reaper::reap_all(&db)
                    .await
                    .map_err(|e| e.message())
            })
        })
        .collect();
    let mut total = 0;
    for r in reapers {
        total += r.await.expect("task").expect("reap");
    }
    assert_eq!(total, 40, "every expired job is reaped exactly once");
    assert_eq!(
        t.count("SELECT count(*) FROM jobs WHERE kind = 'work' AND status = 'pending' AND lease_expires_at IS NULL AND error = 'lease expired after attempt 1'").await,
        39
    );
    // The crawl job had no attempts left: it fails, and so does its session.
    assert_eq!(
        t.count("SELECT count(*) FROM jobs WHERE kind = 'crawl' AND status = 'failed'")
            .await,
        1
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM crawl_sessions WHERE id = '{crawl_session}' AND status = 'failed' AND error_message LIKE 'lease expired%'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{live}' AND status = 'running'"
        ))
        .await,
        1
    );
    // Reaped jobs are claimable again.
    assert_eq!(claim(&t, &["work"]).await["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_expired_cannot_finish_the_next_run() {
    let t = TestDb::new().await;
    let job = id(&enqueue(&t, "fenced", None, 3).await);
    let first = claim(&t, &["fenced"]).await;
    assert_eq!(first["attempts"], 1);
    // Worker A stalls; its lease expires and worker B claims attempt 2.
    t.raw()
        .await
        .batch_execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second'")
        .await
        .expect("expire");
    bughive_gateway::store::jobs::reaper::reap_all(&t.db)
        .await
        .map_err(|e| e.message())
        .expect("reap");
    assert_eq!(claim(&t, &["fenced"]).await["attempts"], 2);

    let before = snapshot(&t).await;
    for q in [
        "mutation($id: UUID!) { heartbeatJob(id: $id, progress: 0.9, attempt: 1) { id } }",
        "mutation($id: UUID!) { completeJob(id: $id, attempt: 1) { id } }",
        "mutation($id: UUID!) { failJob(id: $id, error: \"late\", attempt: 1) { id } }",
    ] {
        let v = run(&t, q, &job).await;
        assert_eq!(code(&v), "CONFLICT", "{q}: {v}");
        assert_eq!(snapshot(&t).await, before, "{q} changed something");
    }
    // Worker B, with its own attempt number, finishes normally.
    let v = run(
        &t,
        "mutation($id: UUID!) { completeJob(id: $id, attempt: 2) { JOB } }",
        &job,
    )
    .await;
    assert_eq!(v["data"]["completeJob"]["status"], "COMPLETED", "{v}");
}
