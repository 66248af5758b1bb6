//! Query limits, body size, introspection and the per-caller rate limit.

use bughive_gateway::api::{Limits, build_schema_with};
use bughive_gateway::http::HttpConfig;
use serde_json::json;

use crate::access::{hs256, post, token, unlimited};
use crate::harness::{TestDb, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_complexity_aliases_and_root_fields_are_limited() {
    let t = TestDb::new().await;
    // Depth 13 with the default limit of 12.
    let deep = "{ sessions { nodes { pages { nodes { children { nodes { children { nodes { children { nodes { id } } } } } } } } } } }";
    let (v, _) = t.gql(deep, json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let ok = "{ sessions { nodes { pages { nodes { children { nodes { id } } } } } } }";
    assert!(t.gql(ok, json!({})).await.0.get("errors").is_none());

    // A connection costs `first` times its selection: 500 × 500 × 500 bugs is too much, the
    // load benchmark's Q1 (20 × 50 × 500) is not.
    let huge = "{ sessions(first: 500) { nodes { pages(first: 500) { nodes { bugs(first: 500) { nodes { id } } } } } } }";
    let (v, _) = t.gql(huge, json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let q1 = "{ sessions(first: 20) { nodes { id baseUrl status pages(first: 50) { nodes { id url title bugs(first: 500) { nodes { id title priority status confidence } } } } } } }";
    assert!(t.gql(q1, json!({})).await.0.get("errors").is_none());

    let aliases: String = (0..31).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let (v, _) = t.gql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let roots: String = (0..21).map(|_| "me { id } ").collect();
    // Repeating a field without an alias is one field per repetition at the root.
    let (v, _) = t.gql(&format!("{{ {roots} }}"), json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let fine: String = (0..5).map(|i| format!("a{i}: me {{ id }} ")).collect();
    assert!(
        t.gql(&format!("{{ {fine} }}"), json!({}))
            .await
            .0
            .get("errors")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_configurable() {
    let t = TestDb::new().await;
    let limits = Limits {
        max_depth: 3,
        max_complexity: 50,
        max_aliases: 1,
        max_root_fields: 2,
        introspection: false,
        max_body_bytes: 2048,
        ..Limits::default()
    };
    let http = HttpConfig {
        max_body_bytes: limits.max_body_bytes,
        ..unlimited()
    };
    let addr = t
        .serve_schema(build_schema_with(&limits), Default::default(), http)
        .await;
    for q in [
        "{ sessions { nodes { pages { nodes { id } } } } }",
        "{ sessions(first: 100) { nodes { id } } }",
        "{ a: me { id } b: me { id } }",
        "{ me { id } m2: me { id } sessions { totalCount } }",
    ] {
        let (status, v) = post(addr, None, q, json!({})).await;
        assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{q}: {status} {v}");
    }
    // Introspection is off.
    let (_, v) = post(addr, None, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    let (_, v) = post(addr, None, "{ __typename }", json!({})).await;
    assert_eq!(v["data"]["__typename"], "Query", "{v}");
    // A body over the limit is refused before it is parsed.
    let big = format!("{{ me {{ id }} }} #{}", "x".repeat(4096));
    let (status, _) = {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/graphql"))
            .json(&json!({ "query": big }))
            .send()
            .await
            .expect("post");
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 413);

    // With the defaults, introspection works.
    let addr = t.serve_with(Default::default(), unlimited()).await;
    let (_, v) = post(addr, None, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(v["data"]["__schema"]["queryType"]["name"], "Query", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_has_a_rate_limit() {
    let t = TestDb::new().await;
    let http = HttpConfig {
        rate_per_second: 1,
        rate_burst: 3,
        ..Default::default()
    };
    let addr = t.serve_with(hs256(), http).await;
    let alice = token("alice", "user");
    for _ in 0..3 {
        let (status, v) = post(addr, Some(&alice), "{ me { id } }", json!({})).await;
        assert_eq!(status, 200, "{v}");
    }
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&alice)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry));
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(code(&v), "RATE_LIMITED");
    assert_eq!(v["errors"][0]["extensions"]["retryAfter"], retry);
    // Another caller has its own bucket.
    let (status, _) = post(
        addr,
        Some(&token("bob", "user")),
        "{ me { id } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_count_against_the_callers_rate() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let t = TestDb::new().await;
    let http = HttpConfig {
        rate_per_second: 1,
        rate_burst: 1,
        ..Default::default()
    };
    let addr = t.serve_with(Default::default(), http).await;
    let _first = crate::harness::ws_connect(addr, "graphql-transport-ws").await;
    let mut ws = crate::harness::ws_open(addr, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "type": "connection_init" }).to_string(),
    ))
    .await
    .expect("init");
    match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("an answer")
    {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert!(frame.reason.contains("rate limit"), "{frame:?}")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Fragments spread exponentially (or into themselves) must not make the limit checks, or
/// anything else, take exponential time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_bombs_are_answered_quickly() {
    let t = TestDb::new().await;
    let mut chain = String::from("query { ...F0 } ");
    for i in 0..40 {
        chain.push_str(&format!(
            "fragment F{i} on Query {{ ...F{} ...F{} }} ",
            i + 1,
            i + 1
        ));
    }
    chain.push_str("fragment F40 on Query { a: __typename }");
    // No aliases, one root field: only async-graphql's own validation sees this one.
    let mut nested = String::from("query { me { ...U0 } } ");
    for i in 0..40 {
        nested.push_str(&format!(
            "fragment U{i} on User {{ ...U{} ...U{} }} ",
            i + 1,
            i + 1
        ));
    }
    nested.push_str("fragment U40 on User { id }");
    for q in [
        chain.as_str(),
        nested.as_str(),
        "fragment F on Query { ...F ...F } query { ...F }",
    ] {
        let started = std::time::Instant::now();
        let (v, _) = tokio::time::timeout(std::time::Duration::from_secs(20), t.gql(q, json!({})))
            .await
            .expect("answered");
        assert!(v["errors"].is_array(), "{v}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_introspection_query_passes_the_default_limits() {
    let t = TestDb::new().await;
    let addr = t.serve_with(Default::default(), unlimited()).await;
    // graphql-js 16's getIntrospectionQuery() with every option on, as GraphiQL, codegen and
    // Relay send it.
    let q = include_str!("../fixtures/introspection-query.graphql");
    let (status, v) = post(addr, None, q, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("errors").is_none(), "{v}");
    assert_eq!(v["data"]["__schema"]["queryType"]["name"], "Query");
    // Introspection has its own bounds.
    let deep_type = format!(
        "{{ __type(name: \"Bug\") {{ {} name {} }} }}",
        "ofType { ".repeat(25),
        "}".repeat(25)
    );
    let (_, v) = post(addr, None, &deep_type, json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let many: String = (0..6)
        .map(|i| format!("t{i}: __type(name: \"Bug\") {{ name }} "))
        .collect();
    let (_, v) = post(addr, None, &format!("{{ {many} }}"), json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
}

/// Depth on its own: a query that is cheap (complexity limit far away) but one level too deep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_limited_by_the_depth_rule_itself() {
    let t = TestDb::new().await;
    let limits = Limits {
        max_depth: 4,
        max_complexity: usize::MAX,
        ..Limits::default()
    };
    let addr = t
        .serve_schema(build_schema_with(&limits), Default::default(), unlimited())
        .await;
    let ok = "{ sessions(first: 1) { nodes { pages(first: 1) { totalCount } } } }";
    let (status, v) = post(addr, None, ok, json!({})).await;
    assert_eq!(status, 200, "{v}");
    let deep = "{ sessions(first: 1) { nodes { pages(first: 1) { nodes { id } } } } }";
    let (_, v) = post(addr, None, deep, json!({})).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("5 levels deep"),
        "{v}"
    );
}

/// Complexity counts `first` whether it is written in the document or passed as a variable:
/// a variable cannot smuggle a large page past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_counts_first_passed_as_a_variable() {
    let t = TestDb::new().await;
    let q = "query($n: Int) { sessions(first: $n) { nodes { pages(first: $n) { nodes { bugs(first: $n) { nodes { id } } } } } } }";
    let (v, _) = t.gql(q, json!({ "n": 500 })).await;
    assert_eq!(code(&v), "QUERY_TOO_COMPLEX", "{v}");
    let (v, _) = t.gql(q, json!({ "n": 5 })).await;
    assert!(v.get("errors").is_none(), "{v}");
    // The default stands in for an absent variable.
    let (v, _) = t.gql(q, json!({})).await;
    assert!(v.get("errors").is_none(), "{v}");
}
