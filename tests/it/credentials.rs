//! Sessions' credentials for the crawled site: sealed at rest (psql and pg_dump see only
//! ciphertext), hidden from every read path, the audit log and the logs, handed only to the
//! service worker that claims the session's crawl job, and readable across a key rotation.

use std::sync::Arc;

use bughive_gateway::auth::Role;
use bughive_gateway::store::credentials::cipher::Keyring;
use serde_json::{Value, json};

use crate::atomicity::snapshot;
use crate::harness::{TestDb, code, spawn_gateway, terminate};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
const SECRET: &str = "hunter2-Zq7xK9-not-for-anyone";
const LOGIN: &str = "crawler@shop.example";

fn keyring(current: &str, previous: &[&str]) -> Option<Arc<Keyring>> {
    Some(Arc::new(
        Keyring::from_base64(current, previous).expect("keys"),
    ))
}

async fn with_keys(current: &str, previous: &[&str]) -> TestDb {
    let mut t = TestDb::new().await;
    t.db = t.db.clone().with_keyring(keyring(current, previous));
    t
}

const CREATE: &str = "mutation($c: JSON) { createSession(input: { baseUrl: \"https://shop.example\", credentials: $c }) { id hasCredentials config } }";

async fn create_with_credentials(t: &TestDb) -> String {
    let d = t
        .ok(
            CREATE,
            json!({ "c": { "username": LOGIN, "password": SECRET } }),
        )
        .await;
    assert_eq!(d["createSession"]["hasCredentials"], true);
    assert_eq!(d["createSession"]["config"], json!({}));
    d["createSession"]["id"].as_str().expect("id").to_owned()
}

async fn enqueue_crawl(t: &TestDb, session: &str) -> String {
    t.ok(
        "mutation($s: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $s }) { id } }",
        json!({ "s": session }),
    )
    .await["enqueueJob"]["id"]
        .as_str()
        .expect("job")
        .to_owned()
}

const CLAIM: &str = "mutation { claimJob(kinds: [\"crawl\"]) { id status credentials } }";

/// The text of a PostgreSQL tool's output run against the test database.
fn pg_tool(tool: &str, args: &[&str], url: &str) -> String {
    let bin = bughive_gateway::store::embedded::find_bindir()
        .expect("PostgreSQL binaries")
        .join(tool);
    let out = std::process::Command::new(bin)
        .args(args)
        .arg(url)
        .output()
        .expect("run the PostgreSQL tool");
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_ciphertext_in_the_database() {
    let t = with_keys(KEY_A, &[]).await;
    let sid = create_with_credentials(&t).await;

    let table = pg_tool(
        "psql",
        &[
            "-At",
            "-c",
            "SELECT session_id, key_id, encode(nonce, 'escape'), encode(ciphertext, 'escape'), ciphertext FROM session_credentials",
            "-d",
        ],
        &t.url,
    );
    assert!(table.contains(&sid), "psql sees the row: {table}");
    for plain in [SECRET, LOGIN, "password", "username"] {
        assert!(!table.contains(plain), "{plain} in the table: {table}");
    }
    // Nowhere else either: not in the session, the audit log or the event log.
    let dump = pg_tool("pg_dump", &["--data-only", "-d"], &t.url);
    assert!(dump.contains(&sid));
    assert!(
        !dump.contains(SECRET) && !dump.contains(LOGIN),
        "plaintext in pg_dump"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_worker_that_claims_the_crawl_gets_them() {
    let t = with_keys(KEY_A, &[]).await;
    let sid = create_with_credentials(&t).await;
    let job = enqueue_crawl(&t, &sid).await;

    // Every field of the session, its jobs and the audit log: no plaintext anywhere.
    let fields = crate::reads::field_names(&t, "CrawlSession").await;
    let q = format!(
        "query($s: UUID!, $j: UUID!) {{ session(id: $s) {{ {fields} }} sessions {{ nodes {{ {fields} }} }} job(id: $j) {{ id payload credentials }} auditLog(first: 100) {{ nodes {{ action oldValue newValue }} }} }}"
    );
    let v = t.ok(&q, json!({ "s": sid, "j": job })).await;
    let text = v.to_string();
    assert!(!text.contains(SECRET) && !text.contains(LOGIN), "{text}");
    assert_eq!(v["session"]["hasCredentials"], true);
    assert_eq!(v["job"]["credentials"], Value::Null);

    // An admin's claim does not reveal them; the job goes back to the queue for the test.
    let (v, _) = t.gql(CLAIM, json!({})).await;
    assert_eq!(v["data"]["claimJob"]["credentials"], Value::Null, "{v}");
    t.raw()
        .await
        .execute(
            &format!("UPDATE jobs SET status = 'pending', attempts = 0 WHERE id = '{job}'"),
            &[],
        )
        .await
        .expect("requeue");

    let worker = t.user("worker", Role::Service).await;
    let (v, _) = t.gql_as(&worker, CLAIM, json!({})).await;
    assert_eq!(
        v["data"]["claimJob"]["credentials"],
        json!({ "username": LOGIN, "password": SECRET }),
        "{v}"
    );
    // Only that answer: the same job read again shows nothing.
    let (v, _) = t
        .gql_as(
            &worker,
            "query($j: UUID!) { job(id: $j) { credentials } }",
            json!({ "j": job }),
        )
        .await;
    assert_eq!(v["data"]["job"]["credentials"], Value::Null);

    // hasCredentials is one statement for a whole level.
    let (v, n) = t
        .gql("{ sessions { nodes { id hasCredentials } } }", json!({}))
        .await;
    assert_eq!(n, 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_still_opens_old_credentials_until_they_are_resealed() {
    let old = with_keys(KEY_A, &[]).await;
    let sid = create_with_credentials(&old).await;
    let job = enqueue_crawl(&old, &sid).await;

    let worker = old.user("worker", Role::Service).await;
    // The new key alone cannot open them: that job is put back for a minute with the reason,
    // and the queue moves on to a crawl whose session has no credentials.
    let mut new_only = TestDb::on_url(old.url.clone());
    new_only.db = new_only.db.clone().with_keyring(keyring(KEY_B, &[]));
    let plain = old
        .ok(
            "mutation { createSession(input: { baseUrl: \"https://plain.example\" }) { id } }",
            json!({}),
        )
        .await["createSession"]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    let plain_job = enqueue_crawl(&old, &plain).await;
    let (v, _) = new_only.gql_as(&worker, CLAIM, json!({})).await;
    assert_eq!(v["data"]["claimJob"]["id"], plain_job.as_str(), "{v}");
    assert_eq!(v["data"]["claimJob"]["credentials"], Value::Null);
    let (v, _) = new_only.gql_as(&worker, CLAIM, json!({})).await;
    assert_eq!(
        v["data"]["claimJob"],
        Value::Null,
        "the deferred job waits: {v}"
    );
    let (v, _) = old
        .gql(
            "query($j: UUID!) { job(id: $j) { status error runAfter } }",
            json!({ "j": job }),
        )
        .await;
    assert_eq!(v["data"]["job"]["status"], "PENDING");
    assert!(
        v["data"]["job"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CREDENTIALS_KEY_PREVIOUS"),
        "{v}"
    );
    assert_eq!(
        old.count(&format!(
            "SELECT count(*) FROM crawl_sessions WHERE id = '{sid}' AND status = 'pending'"
        ))
        .await,
        1,
        "the session did not start"
    );
    old.raw()
        .await
        .execute(
            &format!("UPDATE jobs SET run_after = now() WHERE id = '{job}'"),
            &[],
        )
        .await
        .expect("due again");

    // Re-sealing under the new key (the `rotate-credentials` command) with the old one as
    // previous; then the new key alone opens them.
    let resealed = bughive_gateway::store::credentials::repo::reseal_all(
        &old.db,
        keyring(KEY_B, &[KEY_A]).expect("keys"),
    )
    .await
    .expect("reseal");
    assert_eq!(resealed, 1);
    let (v, _) = new_only.gql_as(&worker, CLAIM, json!({})).await;
    assert_eq!(
        v["data"]["claimJob"]["credentials"]["password"], SECRET,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_change_nothing() {
    let keyless = TestDb::new().await;
    keyless.admin().await;
    let before = snapshot(&keyless).await;
    let (v, _) = keyless
        .gql(CREATE, json!({ "c": { "password": SECRET } }))
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert!(v.to_string().contains("CREDENTIALS_KEY"), "{v}");
    assert_eq!(snapshot(&keyless).await, before);

    let t = with_keys(KEY_A, &[]).await;
    t.admin().await;
    let before = snapshot(&t).await;
    for (vars, field) in [
        (json!({ "c": "hunter2" }), "input.credentials"),
        (json!({ "c": [SECRET] }), "input.credentials"),
    ] {
        let (v, _) = t.gql(CREATE, vars).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
        assert_eq!(v["errors"][0]["extensions"]["field"], field, "{v}");
        assert!(
            !v.to_string().contains(SECRET),
            "the error repeats the secret: {v}"
        );
    }
    let (v, _) = t
        .gql(
            "mutation { createSession(input: { baseUrl: \"https://shop.example\", config: { credentials: { password: \"x\" } } }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert_eq!(snapshot(&t).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_no_credentials() {
    let t = TestDb::new().await;
    let log = tempfile_path("credentials-log");
    let file = std::fs::File::create(&log).expect("log file");
    let (child, addr) = spawn_gateway(
        &t.url,
        &[("CREDENTIALS_KEY", KEY_A), ("RUST_LOG", "debug")],
        std::process::Stdio::from(file),
    )
    .await;
    let post = |body: Value| {
        let url = format!("http://{addr}/graphql");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("post")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let v = post(
        json!({ "query": CREATE, "variables": { "c": { "username": LOGIN, "password": SECRET } } }),
    )
    .await;
    let sid = v["data"]["createSession"]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    // An inline literal too, and a rejected one, which errors must not echo.
    post(json!({ "query": format!("mutation {{ createSession(input: {{ baseUrl: \"https://b.example\", credentials: {{ password: \"{SECRET}\" }} }}) {{ id }} }}") })).await;
    post(json!({ "query": CREATE, "variables": { "c": SECRET } })).await;
    post(json!({ "query": "mutation($s: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $s }) { id } }", "variables": { "s": sid } })).await;
    let v = post(json!({ "query": CLAIM })).await;
    assert!(v.get("errors").is_none(), "{v}");
    terminate(&child);
    let mut child = child;
    child.wait().expect("exit");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("DEBUG") || text.contains("INFO"),
        "debug logging was on: {text}"
    );
    assert!(!text.contains(SECRET) && !text.contains(LOGIN), "{text}");
    let _ = std::fs::remove_file(&log);
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("bughive-{name}-{}.log", uuid::Uuid::now_v7()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_stops_start_up() {
    let t = TestDb::new().await;
    for (key, says) in [("not base64!", "not base64"), ("AAEC", "32 random bytes")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &t.url)
            .env("CREDENTIALS_KEY", key)
            .env_remove("JWT_SECRET")
            .output()
            .expect("run the gateway");
        assert!(!out.status.success(), "started with CREDENTIALS_KEY={key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && !err.contains(key), "{err}");
    }
}
