//! The gateway as real clients use it, driven by their own libraries in Node (`tests/clients/`):
//! the `graphql-http` audit of GraphQL over HTTP, Apollo Client, urql, the graphql-ws client,
//! graphql-codegen, and GraphiQL in a real browser (Debian's `chromium` through playwright-core).
//!
//! Needs `node`, `npm` and `chromium` (`.ci/run` installs them); the npm packages are installed
//! from `tests/clients/package-lock.json` on first use.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use crate::harness::{TestDb, seeded};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `npm ci` once per test run, if the packages are not there yet.
fn node_modules() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = clients_dir();
        if dir.join("node_modules/.package-lock.json").is_file() {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect(
                "npm not found: the client tests need node and npm (apt-get install nodejs npm)",
            );
        assert!(status.success(), "npm ci failed in {}", dir.display());
    });
}

/// Runs a script of `tests/clients/` against the gateway at `url`; panics with its output when
/// it fails.
async fn node(script: &str, url: &str) -> String {
    node_with(script, &[url]).await
}

async fn node_with(script: &str, args: &[&str]) -> String {
    node_modules();
    let out = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node not found: the client tests need node (apt-get install nodejs)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "node {script} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_over_http_audit_passes_every_must_and_should() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let out = node("audit.mjs", &format!("http://{addr}/graphql")).await;
    assert!(out.contains("graphql-http audit: all passed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_works_offline_in_a_real_browser() {
    let (t, _) = seeded(2, 2, 1).await;
    let addr = t.serve().await;
    let out = node("browser.mjs", &format!("http://{addr}/graphql")).await;
    assert!(out.contains("nothing left the gateway"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_urql_and_graphql_ws_clients_work_unmodified() {
    let (t, _) = seeded(3, 2, 2).await;
    let addr = t.serve().await;
    let out = node("clients.mjs", &format!("http://{addr}/graphql")).await;
    assert!(
        out.contains("apollo, urql and graphql-ws all passed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_offers_a_token_field_and_sends_the_headers_pane_when_authentication_is_on() {
    use crate::access::{hs256, token};
    let (t, _) = seeded(2, 2, 1).await;
    let addr = t.serve_with(hs256(), Default::default()).await;
    let bearer = token("browser-admin", "admin");
    let out = node_with("browser.mjs", &[&format!("http://{addr}/graphql"), &bearer]).await;
    assert!(out.contains("nothing left the gateway"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_codegen_generates_types_from_the_running_gateway() {
    use crate::access::{hs256, token};
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), Default::default()).await;
    let bearer = token("codegen", "user");
    let out = node_with("codegen.mjs", &[&format!("http://{addr}/graphql"), &bearer]).await;
    assert!(out.contains("TypeScript types generated"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_persisted_query_link_registers_once_then_sends_hashes_as_gets() {
    use crate::access::{hs256, token};
    let (t, _) = seeded(2, 1, 0).await;
    let addr = t.serve_with(hs256(), Default::default()).await;
    let bearer = token("apq-client", "admin");
    let out = node_with("apq.mjs", &[&format!("http://{addr}/graphql"), &bearer]).await;
    assert!(
        out.contains("persisted queries work with Apollo Client"),
        "{out}"
    );
}

/// GraphQL over SSE with the `graphql-sse` client: a query, then a resumable subscription whose
/// gateway is stopped mid-stream; the client's retry resumes on a second gateway process with
/// `Last-Event-ID`, and what it received is exactly the session's events, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_sse_client_resumes_on_another_gateway_with_last_event_id() {
    let t = TestDb::new().await;
    let sid = t
        .ok(
            r#"mutation { createSession(input: { baseUrl: "https://sse.example" }) { id } }"#,
            serde_json::json!({}),
        )
        .await["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (mut g1, first) = crate::harness::spawn_gateway(&t.url, &[], Stdio::null()).await;
    let (mut g2, second) = crate::harness::spawn_gateway(&t.url, &[], Stdio::null()).await;
    let pid = g1.id().to_string();
    let out = node_with(
        "sse.mjs",
        &[
            &format!("http://{first}/graphql/stream"),
            &format!("http://{second}/graphql/stream"),
            &pid,
            &sid,
        ],
    )
    .await;
    crate::harness::terminate(&g2);
    let _ = g2.wait();
    let _ = g1.kill();
    let _ = g1.wait();
    let seen: Vec<String> =
        serde_json::from_str(out.lines().last().unwrap_or_default()).expect("cursors");
    let session: uuid::Uuid = sid.parse().expect("uuid");
    let expected = t.logged_events(session).await;
    assert_eq!(seen, expected, "{out}");
}
