//! The HTTP surface over a real socket: POST/GET, content negotiation, GraphiQL, WebSocket,
//! health and readiness.

use std::net::SocketAddr;

use bughive_gateway::http::{AppState, SQL_STATEMENTS_HEADER, router};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestDb, seeded, ws_connect};

async fn serve(t: &TestDb) -> SocketAddr {
    t.serve().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_over_post_and_get_with_content_negotiation() {
    let (t, _) = seeded(3, 2, 1).await;
    let addr = serve(&t).await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");

    let r = http
        .post(&url)
        .header(
            "accept",
            "application/graphql-response+json, application/json;q=0.9",
        )
        .json(&json!({ "query": "{ sessions { totalCount } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/graphql-response+json"
    );
    assert_eq!(r.headers()[SQL_STATEMENTS_HEADER], "2");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["data"]["sessions"]["totalCount"], 3);

    let r = http
        .post(&url)
        .header("accept", "application/json")
        .json(&json!({ "query": "{ sessions { totalCount } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.headers()["content-type"], "application/json");

    let r = http
        .get(&url)
        .query(&[("query", "{ sessions(first: 1) { nodes { id } } }")])
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["data"]["sessions"]["nodes"].as_array().map(Vec::len),
        Some(1)
    );

    // Mutations are refused over GET.
    let r = http
        .get(&url)
        .query(&[("query", "mutation { __typename }")])
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // A request that cannot execute is a 400 in the GraphQL-over-HTTP media type...
    let r = http
        .post(&url)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ sessions {" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // ...and a 200 for legacy application/json clients.
    let r = http
        .post(&url)
        .header("accept", "application/json")
        .json(&json!({ "query": "{ sessions {" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_graphiql() {
    let t = TestDb::new().await;
    let addr = serve(&t).await;
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let body = r.text().await.expect("body");
    assert!(body.contains("graphiql"), "{body}");
    assert!(body.contains("/graphql/ws"));
    assert!(
        !body.contains("https://"),
        "every asset must come from the gateway itself"
    );
    // Every asset the page references is served by the gateway.
    for src in body.split('"').filter(|s| s.starts_with("/graphiql/")) {
        let r = reqwest::get(format!("http://{addr}{src}"))
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{src}");
        assert!(r.bytes().await.expect("body").len() > 1000, "{src}");
    }
    let r = reqwest::get(format!("http://{addr}/graphiql/nope.js"))
        .await
        .expect("asset");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let t = TestDb::new().await;
    let addr = serve(&t).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "ok");
    let r = http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "ready");

    // Not migrated: not ready.
    let c = t.raw().await;
    c.batch_execute("DELETE FROM __diesel_schema_migrations")
        .await
        .expect("forget migrations");
    let r = http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);

    // Database unreachable: not ready, but alive.
    let pool = bughive_gateway::store::build_pool(&bughive_gateway::config::DbConfig {
        url: "host=/nonexistent-bughive dbname=x user=x".into(),
        pool_size: 1,
        pool_timeout_ms: 200,
        statement_timeout_ms: 1000,
    })
    .expect("pool");
    let db = bughive_gateway::store::Db::new(pool);
    let live = bughive_gateway::live::Live::start(
        "host=/nonexistent-bughive dbname=x user=x".into(),
        db.clone(),
    );
    let auth = bughive_gateway::auth::Authenticator::new(Default::default(), db.clone());
    let app = router(AppState::new(
        t.schema.clone(),
        db,
        live,
        auth,
        Default::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let down = listener.local_addr().expect("addr");
    tokio::spawn(bughive_gateway::http::serve::serve(
        listener,
        app,
        Default::default(),
        std::future::pending(),
    ));
    let r = http
        .get(format!("http://{down}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.expect("json")["status"],
        "unavailable"
    );
    let r = http
        .get(format!("http://{down}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_endpoint_speaks_graphql_transport_ws() {
    let t = TestDb::new().await;
    let addr = serve(&t).await;
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;

    // Queries over the socket resolve nested, batched fields like HTTP ones.
    bughive_gateway::seed::run(
        &t.db,
        bughive_gateway::seed::SeedPlan {
            sessions: 2,
            pages_per_session: 3,
            bugs_per_page: 1,
            vary_bugs: false,
        },
        false,
    )
    .await
    .expect("seed");
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ sessions { totalCount nodes { pages { nodes { bugs { totalCount } } } } } }" } });
    ws.send(Message::text(sub.to_string()))
        .await
        .expect("subscribe");
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an answer, not a hang")
        .expect("message")
        .expect("ok");
    let v: Value = serde_json::from_str(msg.to_text().expect("text")).expect("json");
    assert_eq!(v["type"], "next", "{v}");
    assert_eq!(v["payload"]["data"]["sessions"]["totalCount"], 2, "{v}");
    assert_eq!(
        v["payload"]["data"]["sessions"]["nodes"][0]["pages"]["nodes"][0]["bugs"]["totalCount"], 1,
        "{v}"
    );
    let done = ws.next().await.expect("complete").expect("ok");
    assert!(done.to_text().expect("text").contains("complete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_endpoint_speaks_legacy_graphql_ws() {
    let t = TestDb::new().await;
    let addr = serve(&t).await;
    let mut ws = ws_connect(addr, "graphql-ws").await;
    ws.send(Message::text(json!({ "id": "q", "type": "start", "payload": { "query": "{ sessions { totalCount } }" } }).to_string()))
        .await
        .expect("start");
    let v: Value = serde_json::from_str(
        ws.next()
            .await
            .expect("data")
            .expect("ok")
            .to_text()
            .expect("text"),
    )
    .expect("json");
    assert_eq!(v["type"], "data", "{v}");
    assert_eq!(v["payload"]["data"]["sessions"]["totalCount"], 0);
}

/// A large answer leaves as several body chunks (shared pre-rendered fragments, see
/// `graphql::json::Chunks`): it must still carry an exact Content-Length and be byte for byte
/// the JSON the executor renders in one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_stream_as_exact_json() {
    let (t, _) = seeded(3, 20, 6).await;
    let query = "{ sessions { nodes { id pages(first: 50) { nodes { id url bugs { nodes { id title priority } } } } } } }";
    let in_process = {
        let req = async_graphql::Request::new(query);
        let (resp, _) =
            bughive_gateway::api::execute(&t.schema, &t.db, crate::harness::anonymous_admin(), req)
                .await;
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
        assert!(resp.to_chunks().chunks.len() > 3, "fragments are shared");
        resp.to_json()
    };
    let addr = serve(&t).await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let length: usize = r.headers()["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let body = r.bytes().await.expect("body");
    assert_eq!(length, body.len());
    assert!(body.len() > 20_000, "{}", body.len());
    assert_eq!(&body[..], &in_process[..]);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["data"]["sessions"]["nodes"].as_array().map(Vec::len),
        Some(3)
    );
}

/// GraphQL over HTTP's SHOULDs: a client that names no media type (no `Accept`, or `*/*`) is a
/// legacy client and gets `application/json`, with 200 for its own errors; a request that fails
/// before execution has no `data` entry, whatever the media type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_name_no_media_type_get_json_and_request_errors_have_no_data() {
    let (t, _) = seeded(1, 1, 0).await;
    let addr = serve(&t).await;
    let url = format!("http://{addr}/graphql");
    let http = reqwest::Client::new();
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = http.post(&url).json(&json!({ "query": "{" }));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), 200, "{accept:?}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{accept:?}"
        );
        let v: Value = r.json().await.expect("json");
        assert!(v.get("data").is_none(), "{accept:?}: {v}");
        assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    for query in ["{", "{ noSuchField }"] {
        let r = http
            .post(&url)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/graphql-response+json"
        );
        let v: Value = r.json().await.expect("json");
        assert!(v.get("data").is_none(), "{query}: {v}");
    }
    // A field error that nulls the whole result keeps `data: null`: execution happened.
    let r = http
        .post(&url)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ sessions(first: -1) { totalCount } }" }))
        .send()
        .await
        .expect("post");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v.get("data"), Some(&Value::Null), "{v}");
    assert_eq!(v["errors"][0]["path"][0], "sessions", "{v}");
}

/// `x-bughive-sql` asks for the statements a request ran, with their durations, in
/// `extensions.sql`: in development mode and for admins; others never see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_a_request_ran_is_shown_to_developers_and_admins_only() {
    use crate::access::{hs256, token};
    let (t, _) = seeded(2, 2, 1).await;
    let query =
        json!({ "query": "{ sessions { nodes { pages { nodes { bugs { nodes { id } } } } } } }" });
    let ask = |addr: SocketAddr, bearer: Option<String>, header: bool| {
        let query = query.clone();
        async move {
            let mut req = reqwest::Client::new()
                .post(format!("http://{addr}/graphql"))
                .json(&query);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            if header {
                req = req.header("x-bughive-sql", "1");
            }
            let r = req.send().await.expect("post");
            let n: usize = r.headers()[SQL_STATEMENTS_HEADER]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("number");
            let v: Value = r.json().await.expect("json");
            (n, v)
        }
    };

    let dev = t.serve().await;
    let (n, v) = ask(dev, None, true).await;
    let sql = v["extensions"]["sql"].as_array().expect("extensions.sql");
    assert_eq!(sql.len(), n, "{v}");
    assert!(
        sql.iter()
            .all(|s| s["ms"].as_f64().is_some_and(|ms| ms >= 0.0)),
        "{v}"
    );
    assert!(
        sql[1]["statement"]
            .as_str()
            .unwrap_or("")
            .contains("LATERAL"),
        "{v}"
    );
    assert!(
        sql.iter()
            .all(|s| !s["statement"].as_str().unwrap_or("").contains("binds")),
        "bound values stay out of the SQL panel: {v}"
    );
    let (_, v) = ask(dev, None, false).await;
    assert!(v.get("extensions").is_none(), "{v}");

    let authed = t.serve_with(hs256(), Default::default()).await;
    let (_, v) = ask(authed, Some(token("sql-user", "user")), true).await;
    assert!(
        v.get("extensions").is_none(),
        "a user must not see SQL: {v}"
    );
    let (n, v) = ask(authed, Some(token("sql-admin", "admin")), true).await;
    assert_eq!(
        v["extensions"]["sql"].as_array().map(Vec::len),
        Some(n),
        "{v}"
    );
}

/// Whatever goes wrong at the HTTP edge, the answer is a GraphQL error in JSON, with
/// `extensions.code` and a GraphQL media type: never plain text, debug output or an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_http_endpoint_can_produce_is_a_json_graphql_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let url = format!("http://{addr}/graphql");
    let http = reqwest::Client::new();
    let json_post = |body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/graphql-response+json")
            .body(body)
    };
    let cases = vec![
        ("bad JSON", json_post("not json".into()), 400),
        ("a JSON string", json_post("\"{ me { id } }\"".into()), 400),
        ("null", json_post("null".into()), 400),
        ("a number", json_post("42".into()), 400),
        (
            "a batch",
            json_post(r#"[{"query":"{ __typename }"}]"#.into()),
            400,
        ),
        ("no query", json_post("{}".into()), 400),
        (
            "a query that is not a string",
            json_post(r#"{"query":5}"#.into()),
            400,
        ),
        (
            "variables of the wrong type",
            json_post(r#"{"query":"{ __typename }","variables":"x"}"#.into()),
            400,
        ),
        (
            "no content type",
            http.post(&url).body(r#"{"query":"{ __typename }"}"#),
            415,
        ),
        (
            "a form",
            http.post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("query=x"),
            415,
        ),
        ("GET without a query", http.get(&url), 400),
        (
            "GET with bad variables",
            http.get(&url)
                .query(&[("query", "{ __typename }"), ("variables", "{not json")]),
            400,
        ),
        (
            "GET with a mutation",
            http.get(&url)
                .query(&[("query", "mutation { __typename }")]),
            405,
        ),
        ("PUT", http.put(&url).body("{}"), 405),
        ("DELETE", http.delete(&url), 405),
    ];
    for (what, req, status) in cases {
        let r = req.send().await.expect(what);
        assert_eq!(r.status().as_u16(), status, "{what}");
        let ct = r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            ct == "application/json" || ct == "application/graphql-response+json",
            "{what}: {ct}"
        );
        let text = r.text().await.expect("body");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert!(
            v["errors"][0]["extensions"]["code"].is_string(),
            "{what}: {v}"
        );
        assert!(v.get("data").is_none(), "{what}: {v}");
    }

    // An oversized body announced by its length: refused before it is sent (a client still
    // writing it may see its connection closed, so this one only sends the head).
    let answer = crate::harness::oversized_head_answer(addr).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.contains("\"BAD_USER_INPUT\""), "{answer}");

    // An oversized body sent in chunks, without a length: refused once the limit is passed.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("head");
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
    for _ in 0..5 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.contains("\"BAD_USER_INPUT\""), "{answer}");
}
