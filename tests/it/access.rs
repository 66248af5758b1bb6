//! Authentication (JWT) and owner-only access: who may see and change what.

use std::time::Duration;

use bughive_gateway::auth::jwt::{Claims, JwtConfig, now};
use bughive_gateway::auth::{Principal, Role};
use bughive_gateway::http::HttpConfig;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestDb, code, ws_next, ws_open, ws_subscribe};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

pub fn hs256() -> JwtConfig {
    JwtConfig {
        secret: Some(SECRET.to_vec()),
        leeway_secs: 0,
        ..Default::default()
    }
}

pub fn claims(sub: &str, role: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: now() + 600,
        nbf: None,
        iat: Some(now()),
        iss: None,
        aud: None,
        role: Some(role.into()),
        email: None,
        name: None,
    }
}

pub fn token(sub: &str, role: &str) -> String {
    hs256().mint(&claims(sub, role)).expect("mint")
}

/// No rate limit, so tests can send what they need.
pub fn unlimited() -> HttpConfig {
    HttpConfig {
        rate_per_second: 0,
        ..Default::default()
    }
}

/// POSTs a query with an optional bearer token; returns the status and the JSON body.
/// The media type of GraphQL over HTTP, which modern clients ask for: its errors carry 4xx.
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

pub async fn post(
    addr: std::net::SocketAddr,
    bearer: Option<&str>,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("accept", GRAPHQL_RESPONSE)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused() {
    let t = TestDb::new().await;
    let public = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rsa-test-public.pem"
    ))
    .expect("public key");
    let cfg = JwtConfig {
        public_key_pem: Some(public),
        ..hs256()
    };
    let addr = t.serve_with(cfg, unlimited()).await;
    let me = "{ me { subject role } }";

    let (status, v) = post(addr, None, me, json!({})).await;
    assert_eq!(
        (status, code(&v)),
        (401, "UNAUTHENTICATED"),
        "no token: {v}"
    );

    let forged = JwtConfig {
        secret: Some(b"not-the-secret-not-the-secret-xxxxx".to_vec()),
        ..hs256()
    }
    .mint(&claims("mallory", "admin"))
    .expect("mint");
    let mut expired = claims("alice", "user");
    expired.exp = now() - 120;
    let expired = hs256().mint(&expired).expect("mint");
    let mut early = claims("alice", "user");
    early.nbf = Some(now() + 600);
    let early = hs256().mint(&early).expect("mint");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"mallory","role":"admin","exp":{}}}"#,
            now() + 600
        ))
    );
    for (name, bad) in [
        ("bad signature", forged.as_str()),
        ("expired", expired.as_str()),
        ("not yet valid", early.as_str()),
        ("alg none", none.as_str()),
        ("garbage", "abc.def.ghi"),
    ] {
        let (status, v) = post(addr, Some(bad), me, json!({})).await;
        assert_eq!((status, code(&v)), (401, "UNAUTHENTICATED"), "{name}: {v}");
    }
    // Not a bearer scheme.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("authorization", format!("Basic {}", token("alice", "user")))
        .json(&json!({ "query": me }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");

    // HS256 and RS256 tokens both work.
    let (status, v) = post(addr, Some(&token("alice", "user")), me, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["me"],
        json!({ "subject": "alice", "role": "USER" })
    );
    let private = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rsa-test-private.pem"
    ))
    .expect("private key");
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims("robot-1", "service"),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("rsa key"),
    )
    .expect("sign");
    let (status, v) = post(addr, Some(&rs), me, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["me"],
        json!({ "subject": "robot-1", "role": "SERVICE" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let t = TestDb::new().await;
    let cfg = JwtConfig {
        issuer: Some("https://idp.test".into()),
        audience: Some("bughive".into()),
        ..hs256()
    };
    let addr = t.serve_with(cfg.clone(), unlimited()).await;
    let mut good = claims("alice", "user");
    good.iss = Some("https://idp.test".into());
    good.aud = Some(json!("bughive"));
    let (status, _) = post(
        addr,
        Some(&cfg.mint(&good).expect("mint")),
        "{ me { id } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let mut other_aud = good.clone();
    other_aud.aud = Some(json!("someone-else"));
    let mut other_iss = good;
    other_iss.iss = Some("https://evil.test".into());
    for bad in [other_aud, other_iss] {
        let (status, v) = post(
            addr,
            Some(&cfg.mint(&bad).expect("mint")),
            "{ me { id } }",
            json!({}),
        )
        .await;
        assert_eq!((status, code(&v)), (401, "UNAUTHENTICATED"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_provision_one_user() {
    let t = TestDb::with_pool(20, 10_000).await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let mut c = claims("newcomer", "manager");
    c.email = Some("newcomer@example.test".into());
    c.name = Some("New Comer".into());
    let tok = hs256().mint(&c).expect("mint");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let tok = tok.clone();
            tokio::spawn(async move {
                post(
                    addr,
                    Some(&tok),
                    "{ me { id subject role email displayName lastSeenAt } }",
                    json!({}),
                )
                .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, v) = task.await.expect("task");
        assert_eq!(status, 200, "{v}");
        ids.insert(v["data"]["me"]["id"].as_str().expect("id").to_owned());
        assert_eq!(v["data"]["me"]["role"], "MANAGER");
        assert_eq!(v["data"]["me"]["email"], "newcomer@example.test");
        assert!(v["data"]["me"]["lastSeenAt"].is_string());
    }
    assert_eq!(ids.len(), 1, "every request saw the same user");
    assert_eq!(
        t.count("SELECT count(*) FROM users WHERE subject = 'newcomer'")
            .await,
        1
    );
}

struct World {
    alice: Principal,
    bob: Principal,
    service: Principal,
    a_session: String,
    a_page: String,
    a_bug: String,
    a_job: String,
    b_session: String,
    project_session: String,
}

async fn as_(t: &TestDb, p: &Principal, q: &str, vars: Value) -> Value {
    t.gql_as(p, q, vars).await.0
}

async fn ok_as(t: &TestDb, p: &Principal, q: &str, vars: Value) -> Value {
    let v = as_(t, p, q, vars).await;
    assert!(v.get("errors").is_none(), "{q}: {v}");
    v["data"].clone()
}

/// Alice owns a session with a page, a bug and a crawl job, and a project with a session the
/// admin created in it; Bob owns one session.
async fn world(t: &TestDb) -> World {
    let alice = t.user("alice", Role::User).await;
    let bob = t.user("bob", Role::User).await;
    let service = t.user("crawler", Role::Service).await;
    let create = "mutation($p: UUID) { createSession(input: { baseUrl: \"https://a.test\", projectId: $p }) { id owner { subject } } }";
    let a = ok_as(t, &alice, create, json!({ "p": null })).await;
    assert_eq!(a["createSession"]["owner"]["subject"], "alice");
    let a_session = a["createSession"]["id"].as_str().expect("id").to_owned();
    let b_session = ok_as(t, &bob, create, json!({ "p": null })).await["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page = ok_as(t, &alice, "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://a.test/\", depth: 0 }]) { pages { id } } }", json!({ "s": a_session })).await;
    let a_page = page["recordPages"]["pages"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let bug = ok_as(t, &alice, "mutation($s: UUID!, $p: UUID!) { reportBugs(sessionId: $s, bugs: [{ pageId: $p, title: \"t\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }", json!({ "s": a_session, "p": a_page })).await;
    let a_bug = bug["reportBugs"][0]["id"].as_str().expect("id").to_owned();
    let job = ok_as(
        t,
        &alice,
        "mutation($s: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $s }) { id } }",
        json!({ "s": a_session }),
    )
    .await;
    let a_job = job["enqueueJob"]["id"].as_str().expect("id").to_owned();
    let project = ok_as(
        t,
        &alice,
        "mutation { createProject(slug: \"shop\", name: \"Shop\") { id owner { subject } } }",
        json!({}),
    )
    .await;
    assert_eq!(project["createProject"]["owner"]["subject"], "alice");
    let pid = project["createProject"]["id"].clone();
    let admin = t.admin().await;
    let ps = ok_as(t, &admin, create, json!({ "p": pid })).await;
    let project_session = ps["createSession"]["id"].as_str().expect("id").to_owned();
    World {
        alice,
        bob,
        service,
        a_session,
        a_page,
        a_bug,
        a_job,
        b_session,
        project_session,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_resources_behave_as_if_they_did_not_exist() {
    let t = TestDb::new().await;
    let w = world(&t).await;
    let vars = json!({ "s": w.a_session, "p": w.a_page, "b": w.a_bug, "j": w.a_job });

    // By id, and through nested fields: null.
    let v = ok_as(&t, &w.bob, "query($s: UUID!, $p: UUID!, $b: UUID!, $j: UUID!) { session(id: $s) { id statistics { totalBugs } } page(id: $p) { session { id } } bug(id: $b) { page { id } session { id } } job(id: $j) { session { id } } }", vars.clone()).await;
    assert_eq!(
        v,
        json!({ "session": null, "page": null, "bug": null, "job": null })
    );

    // Lists, totalCount and statistics only count Bob's own.
    let v = ok_as(
        &t,
        &w.bob,
        "{ sessions { totalCount nodes { id statistics { totalBugs } } } }",
        json!({}),
    )
    .await;
    assert_eq!(v["sessions"]["totalCount"], 1);
    assert_eq!(
        v["sessions"]["nodes"],
        json!([{ "id": w.b_session, "statistics": { "totalBugs": 0 } }])
    );

    // Alice sees her session and the one in her project; the admin sees all three.
    let v = ok_as(
        &t,
        &w.alice,
        "{ sessions { totalCount nodes { id statistics { totalBugs } } } }",
        json!({}),
    )
    .await;
    assert_eq!(v["sessions"]["totalCount"], 2);
    let ids: Vec<&str> = v["sessions"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert!(ids.contains(&w.a_session.as_str()) && ids.contains(&w.project_session.as_str()));
    let v = ok_as(&t, &w.alice, "query($s: UUID!, $p: UUID!, $b: UUID!, $j: UUID!) { session(id: $s) { statistics { totalBugs } } page(id: $p) { id } bug(id: $b) { id } job(id: $j) { id } }", vars.clone()).await;
    assert_eq!(v["session"]["statistics"]["totalBugs"], 1);
    assert!(v["page"].is_object() && v["bug"].is_object() && v["job"].is_object());
    let admin = t.admin().await;
    assert_eq!(
        ok_as(&t, &admin, "{ sessions { totalCount } }", json!({})).await["sessions"]["totalCount"],
        3
    );

    // Changing them is NOT_FOUND too, and changes nothing.
    let before = crate::atomicity::snapshot(&t).await;
    for q in [
        "mutation($s: UUID!) { startSession(id: $s) { id } }",
        "mutation($s: UUID!) { cancelSession(id: $s) { id } }",
        "mutation($s: UUID!) { deleteSession(id: $s) }",
        "mutation($s: UUID!) { addSessionCost(id: $s, amount: \"1\") { id } }",
        "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://a.test/x\", depth: 0 }]) { inserted } }",
        "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"x\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }",
        "mutation($p: UUID!) { setPageStatus(id: $p, status: CRAWLING) { id } }",
        "mutation($b: UUID!) { validateBug(id: $b) { id } }",
        "mutation($j: UUID!) { cancelJob(id: $j) { id } }",
        "mutation($s: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $s }) { id } }",
    ] {
        let v = as_(&t, &w.bob, q, vars.clone()).await;
        assert_eq!(code(&v), "NOT_FOUND", "{q}: {v}");
        assert_eq!(
            crate::atomicity::snapshot(&t).await,
            before,
            "{q} changed something"
        );
    }
    // Alice may change the session of her project.
    ok_as(
        &t,
        &w.alice,
        "mutation($s: UUID!) { startSession(id: $s) { id } }",
        json!({ "s": w.project_session }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_callers_may_do() {
    let t = TestDb::new().await;
    let w = world(&t).await;
    let vars =
        json!({ "s": w.a_session, "p": w.a_page, "b": w.a_bug, "j": w.a_job, "u": w.bob.user_id });

    // The service role: reads sessions, ingests, runs jobs; manages and deletes nothing.
    for q in [
        "mutation { createSession(input: { baseUrl: \"https://x.test\" }) { id } }",
        "mutation($s: UUID!) { startSession(id: $s) { id } }",
        "mutation($s: UUID!) { completeSession(id: $s) { id } }",
        "mutation($s: UUID!) { failSession(id: $s, error: \"x\") { id } }",
        "mutation($s: UUID!) { cancelSession(id: $s) { id } }",
        "mutation($s: UUID!) { deleteSession(id: $s) }",
        "mutation($b: UUID!) { validateBug(id: $b) { id } }",
        "mutation($b: UUID!) { markBugReported(id: $b, linearIssueId: \"X-1\") { id } }",
        "mutation($b: UUID!) { dismissBug(id: $b, reason: \"x\") { id } }",
        "mutation($b: UUID!) { reopenBug(id: $b) { id } }",
        "mutation { createProject(slug: \"robots\", name: \"Robots\") { id } }",
        "mutation($u: UUID!) { updateUser(id: $u, role: ADMIN) { id } }",
        "{ users { totalCount } }",
        "{ auditLog { totalCount } }",
    ] {
        let v = as_(&t, &w.service, q, vars.clone()).await;
        assert_eq!(code(&v), "FORBIDDEN", "service: {q}: {v}");
    }
    let v = ok_as(
        &t,
        &w.service,
        "query($s: UUID!) { session(id: $s) { id } sessions { totalCount } }",
        vars.clone(),
    )
    .await;
    assert_eq!(v["session"]["id"], json!(w.a_session));
    assert_eq!(v["sessions"]["totalCount"], 3);
    ok_as(&t, &w.service, "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://a.test/svc\", depth: 1 }]) { inserted } }", vars.clone()).await;
    ok_as(&t, &w.service, "mutation($s: UUID!) { reportBugs(sessionId: $s, bugs: [{ title: \"svc\", category: SEO, priority: LOW, confidence: 0.5 }]) { id } }", vars.clone()).await;
    ok_as(
        &t,
        &w.service,
        "mutation($p: UUID!) { setPageStatus(id: $p, status: CRAWLING) { id } }",
        vars.clone(),
    )
    .await;
    ok_as(
        &t,
        &w.service,
        "mutation($s: UUID!) { addSessionCost(id: $s, amount: \"0.5\") { id } }",
        vars.clone(),
    )
    .await;
    let claimed = ok_as(
        &t,
        &w.service,
        "mutation { claimJob(kinds: [\"crawl\"]) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(claimed["claimJob"]["id"], json!(w.a_job));
    ok_as(
        &t,
        &w.service,
        "mutation($j: UUID!) { heartbeatJob(id: $j, progress: 0.5) { id } }",
        vars.clone(),
    )
    .await;
    ok_as(
        &t,
        &w.service,
        "mutation($j: UUID!) { completeJob(id: $j) { id } }",
        vars.clone(),
    )
    .await;

    // Users run no jobs and queue only their sessions' jobs; only admins see the audit log and
    // administer users.
    for q in [
        "mutation { claimJob(kinds: [\"crawl\"]) { id } }",
        "mutation($j: UUID!) { heartbeatJob(id: $j, progress: 0.1) { id } }",
        "mutation($j: UUID!) { completeJob(id: $j) { id } }",
        "mutation($j: UUID!) { failJob(id: $j, error: \"x\") { id } }",
        "mutation { enqueueJob(input: { kind: \"report\" }) { id } }",
        "mutation($u: UUID!) { updateUser(id: $u, isActive: false) { id } }",
        "{ users { totalCount } }",
        "{ auditLog { totalCount } }",
    ] {
        let v = as_(&t, &w.alice, q, vars.clone()).await;
        assert_eq!(code(&v), "FORBIDDEN", "user: {q}: {v}");
    }
    let manager = t.user("mia", Role::Manager).await;
    assert_eq!(
        code(&as_(&t, &manager, "{ auditLog { totalCount } }", json!({})).await),
        "FORBIDDEN"
    );
    assert_eq!(
        ok_as(&t, &manager, "{ users { totalCount } }", json!({})).await["users"]["totalCount"],
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_users_are_refused_and_role_changes_apply() {
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let (status, v) = post(
        addr,
        Some(&token("carol", "user")),
        "{ me { id role } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let carol = v["data"]["me"]["id"].clone();
    let boss = token("boss", "admin");
    let (status, v) = post(
        addr,
        Some(&boss),
        "mutation($u: UUID!) { updateUser(id: $u, role: MANAGER) { role } }",
        json!({ "u": carol }),
    )
    .await;
    assert_eq!(
        (status, v["data"]["updateUser"]["role"].clone()),
        (200, json!("MANAGER")),
        "{v}"
    );
    // The stored role is authoritative: the token still says `user`.
    let (_, v) = post(
        addr,
        Some(&token("carol", "user")),
        "{ me { role } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["me"]["role"], "MANAGER");
    post(
        addr,
        Some(&boss),
        "mutation($u: UUID!) { updateUser(id: $u, isActive: false) { isActive } }",
        json!({ "u": carol }),
    )
    .await;
    let (status, v) = post(
        addr,
        Some(&token("carol", "user")),
        "{ me { id } }",
        json!({}),
    )
    .await;
    assert_eq!((status, code(&v)), (403, "FORBIDDEN"), "{v}");
    // Admins cannot lock themselves out.
    let (_, v) = post(addr, Some(&boss), "{ me { id } }", json!({})).await;
    let me = v["data"]["me"]["id"].clone();
    let (_, v) = post(
        addr,
        Some(&boss),
        "mutation($u: UUID!) { updateUser(id: $u, isActive: false) { id } }",
        json!({ "u": me }),
    )
    .await;
    assert_eq!(code(&v), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_authenticated_and_scoped() {
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let alice_tok = token("alice", "user");
    let (_, v) = post(
        addr,
        Some(&alice_tok),
        "mutation { createSession(input: { baseUrl: \"https://a.test\" }) { id } }",
        json!({}),
    )
    .await;
    let sid = v["data"]["createSession"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, v) = post(
        addr,
        Some(&alice_tok),
        "mutation($s: UUID!) { enqueueJob(input: { kind: \"crawl\", sessionId: $s }) { id } }",
        json!({ "s": sid }),
    )
    .await;
    let jid = v["data"]["enqueueJob"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // No token: the connection is refused at connection_init.
    let mut ws = ws_open(addr, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "type": "connection_init" }).to_string(),
    ))
    .await
    .expect("init");
    let closed = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut ws))
        .await
        .expect("an answer");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert!(frame.reason.contains("token"), "{frame:?}")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Bob's token in the init payload: Alice's session and job do not exist for him.
    let mut ws = ws_open(addr, "graphql-transport-ws").await;
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", token("bob", "user")) } }).to_string())).await.expect("init");
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "1",
        "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind } }",
        json!({ "id": sid }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{v}"
    );
    ws_next(&mut ws).await;
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "2",
        "subscription($id: UUID!) { jobUpdated(jobId: $id) { id } }",
        json!({ "id": jid }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{v}"
    );

    // Alice's token (as `token`) works.
    let mut ws = ws_open(addr, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": { "token": alice_tok } }).to_string(),
    ))
    .await
    .expect("init");
    assert_eq!(ws_next(&mut ws).await["type"], "connection_ack");
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "1",
        "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind session { id } } }",
        json!({ "id": sid }),
    )
    .await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["data"]["sessionProgress"]["kind"], "snapshot",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_caller_share_one_user_read() {
    let t = TestDb::new().await;
    let auth = bughive_gateway::auth::Authenticator::new(hs256(), t.db.scoped());
    let bearer = format!("Bearer {}", token("carol", "user"));
    let session = auth.session(Some(&bearer)).await.expect("session");
    assert_eq!(auth.user_reads(), 1);
    // What every open socket of a caller does when its entry is dropped: check again at once.
    auth.forget(Some("carol"));
    let checks = (0..200).map(|_| auth.current(&session));
    let results = futures::future::join_all(checks).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(auth.user_reads(), 2, "one read for 200 concurrent checks");
}
