//! Automatic persisted queries, trusted documents and conditional GETs, over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bughive_gateway::http::HttpConfig;
use bughive_gateway::http::documents::{DocumentsConfig, sha256_hex};
use serde_json::{Value, json};

use crate::access::{GRAPHQL_RESPONSE, hs256, token, unlimited};
use crate::harness::{TestDb, code, seeded};

/// POSTs `{ query?, extensions: { persistedQuery } }`; returns status and body.
async fn apq_post(addr: SocketAddr, bearer: &str, query: Option<&str>, hash: &str) -> (u16, Value) {
    let mut body =
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } });
    if let Some(q) = query {
        body["query"] = json!(q);
    }
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("accept", GRAPHQL_RESPONSE)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// GETs a persisted query by hash alone.
async fn apq_get(addr: SocketAddr, bearer: &str, hash: &str) -> (u16, Value) {
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/graphql"))
        .header("accept", GRAPHQL_RESPONSE)
        .bearer_auth(bearer)
        .query(&[("extensions", ext.as_str())])
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_queries_register_by_hash_and_run_by_hash_alone() {
    let (t, _) = seeded(2, 1, 0).await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let admin = token("apq-admin", "admin");
    let q = "{ sessions { totalCount } }";
    let hash = sha256_hex(q);

    // Unknown hash: the client is told to send the document.
    let (status, v) = apq_post(addr, &admin, None, &hash).await;
    assert_eq!(
        (status, code(&v)),
        (200, "PERSISTED_QUERY_NOT_FOUND"),
        "{v}"
    );
    assert_eq!(v["errors"][0]["message"], "PersistedQueryNotFound");
    let (_, v) = apq_get(addr, &admin, &hash).await;
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");

    // A wrong hash registers nothing.
    let (status, v) = apq_post(addr, &admin, Some(q), &sha256_hex("{ me { id } }")).await;
    assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");
    assert_eq!(t.count("SELECT count(*) FROM persisted_queries").await, 0);
    let (status, v) = apq_post(addr, &admin, None, "not-a-hash").await;
    assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");

    // The document with its hash registers it and runs; then the hash alone runs it, by POST
    // and by GET, on this replica and on another one (the table is shared).
    let (status, v) = apq_post(addr, &admin, Some(q), &hash).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["sessions"]["totalCount"], 2);
    assert_eq!(t.count("SELECT count(*) FROM persisted_queries").await, 1);
    let (_, v) = apq_post(addr, &admin, None, &hash).await;
    assert_eq!(v["data"]["sessions"]["totalCount"], 2, "{v}");
    let (_, v) = apq_get(addr, &admin, &hash).await;
    assert_eq!(v["data"]["sessions"]["totalCount"], 2, "{v}");
    let other = t.serve_with(hs256(), unlimited()).await;
    let (_, v) = apq_get(other, &admin, &hash).await;
    assert_eq!(v["data"]["sessions"]["totalCount"], 2, "{v}");

    // Registering is not running: a caller who may not run an operation registers it and is
    // still refused, by hash as by text; an admin then runs it by hash.
    let user = token("apq-user", "user");
    let secret = "{ users { totalCount } }";
    let h = sha256_hex(secret);
    let (_, v) = apq_post(addr, &user, Some(secret), &h).await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    let (_, v) = apq_post(addr, &user, None, &h).await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    let (_, v) = apq_post(addr, &admin, None, &h).await;
    assert!(v["data"]["users"]["totalCount"].as_i64().is_some(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_table_is_bounded() {
    let t = TestDb::new().await;
    let http = HttpConfig {
        documents: DocumentsConfig {
            max_documents: 2,
            ..Default::default()
        },
        ..unlimited()
    };
    let addr = t.serve_with(hs256(), http).await;
    let admin = token("apq-bound", "admin");
    for q in [
        "{ a: __typename }",
        "{ b: __typename }",
        "{ c: __typename }",
    ] {
        let (status, v) = apq_post(addr, &admin, Some(q), &sha256_hex(q)).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM persisted_queries").await, 2);
    let newest = sha256_hex("{ c: __typename }");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM persisted_queries WHERE hash = '{newest}'"
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_mode_runs_manifest_documents_only_and_reloads_the_manifest() {
    let t = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("bh-trusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let manifest = dir.join(format!("manifest-{}.json", uuid::Uuid::new_v4()));
    let trusted_q = "query Count { sessions { totalCount } }";
    let trusted_h = sha256_hex(trusted_q);
    std::fs::write(
        &manifest,
        json!({ trusted_h.clone(): trusted_q }).to_string(),
    )
    .expect("write");
    let http = HttpConfig {
        documents: DocumentsConfig {
            trusted: Some(manifest.clone()),
            trusted_allow_admins: true,
            ..Default::default()
        },
        ..unlimited()
    };
    let addr = t.serve_with(hs256(), http).await;
    let user = token("trusted-user", "user");
    let admin = token("trusted-admin", "admin");

    // An ad-hoc query is refused, with or without a hash; the manifest's runs by hash and by
    // identical text.
    let (status, v) = crate::access::post(addr, Some(&user), "{ me { id } }", json!({})).await;
    assert_eq!((status, code(&v)), (403, "FORBIDDEN"), "{v}");
    let adhoc = "{ me { subject } }";
    let (status, v) = apq_post(addr, &user, Some(adhoc), &sha256_hex(adhoc)).await;
    assert_eq!((status, code(&v)), (403, "FORBIDDEN"), "{v}");
    assert_eq!(t.count("SELECT count(*) FROM persisted_queries").await, 0);
    let (status, v) = apq_post(addr, &user, None, &trusted_h).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["sessions"]["totalCount"], 0, "{v}");
    let (status, v) = crate::access::post(addr, Some(&user), trusted_q, json!({})).await;
    assert_eq!(status, 200, "{v}");
    // Admins may run anything when the flag allows it.
    let (status, v) = crate::access::post(addr, Some(&admin), "{ me { id } }", json!({})).await;
    assert_eq!(status, 200, "{v}");

    // A new manifest takes effect without a restart.
    let added = "query Me { me { subject } }";
    std::fs::write(
        &manifest,
        json!({ trusted_h.clone(): trusted_q, sha256_hex(added): added }).to_string(),
    )
    .expect("rewrite");
    let started = Instant::now();
    loop {
        let (status, v) = crate::access::post(addr, Some(&user), added, json!({})).await;
        if status == 200 {
            assert_eq!(v["data"]["me"]["subject"], "trusted-user", "{v}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not reloaded: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(&manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_carry_an_etag_and_revalidate_to_304() {
    let (t, _) = seeded(1, 1, 0).await;
    let addr = t.serve().await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");
    let get = |etag: Option<String>| {
        let mut r = http
            .get(&url)
            .query(&[("query", "{ sessions { nodes { id totalCost } } }")]);
        if let Some(e) = etag {
            r = r.header("if-none-match", e);
        }
        r.send()
    };
    let r = get(None).await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "private, no-cache");
    let etag = r.headers()["etag"].to_str().expect("ascii").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    let body: Value = r.json().await.expect("json");
    let sid = body["data"]["sessions"]["nodes"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let r = get(Some(etag.clone())).await.expect("get");
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.expect("body").is_empty());

    // POSTs are never cached.
    let r = http
        .post(&url)
        .json(&json!({ "query": "{ sessions { nodes { id } } }" }))
        .send()
        .await
        .expect("post");
    assert!(r.headers().get("etag").is_none());

    // The data changes: the same validator now gets the new answer and a new ETag.
    let (status, v) = crate::access::post(
        addr,
        None,
        &format!("mutation {{ addSessionCost(id: \"{sid}\", amount: \"1.5\") {{ id }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = get(Some(etag.clone())).await.expect("get");
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"], etag.as_str());
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["data"]["sessions"]["nodes"][0]["totalCost"], "1.5000",
        "{v}"
    );
}
