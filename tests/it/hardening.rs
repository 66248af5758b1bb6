//! Abuse from outside, as an attacker would send it: deep and huge documents, slow clients,
//! greedy WebSocket callers, rights that ended, and input PostgreSQL cannot store. Each test
//! talks to the real server over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bughive_gateway::auth::jwt::now;
use bughive_gateway::http::HttpConfig;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::access::{claims, hs256, post, token, unlimited};
use crate::harness::{TestDb, Ws, code, ws_connect, ws_next, ws_open, ws_subscribe};

const SESSION_SUB: &str =
    "subscription($id: UUID!) { sessionProgress(sessionId: $id) { kind session { id } } }";

fn deep_list(n: usize) -> String {
    format!(
        "{{ __typename @skip(if: {}true{}) }}",
        "[".repeat(n),
        "]".repeat(n)
    )
}

async fn get(addr: SocketAddr, bearer: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}/graphql"))
        .header("accept", crate::access::GRAPHQL_RESPONSE)
        .query(&[("query", query)]);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

/// Opens a socket and initializes it with a bearer token in the `connection_init` payload.
async fn ws_init(addr: SocketAddr, bearer: &str) -> (Ws, Value) {
    let mut ws = ws_open(addr, "graphql-transport-ws").await;
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {bearer}") } })
            .to_string(),
    ))
    .await
    .expect("init");
    let ack = ws_next(&mut ws).await;
    (ws, ack)
}

/// The close frame of a socket, skipping other messages, within `within`.
async fn ws_closed(ws: &mut Ws, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("the socket was not closed within {within:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                return (0, String::new());
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Subscribes to a session's progress over graphql-transport-ws as operation `id`.
async fn watch(ws: &mut Ws, id: &str, session: &str) {
    ws_subscribe(
        ws,
        "graphql-transport-ws",
        id,
        SESSION_SUB,
        json!({ "id": session }),
    )
    .await;
}

/// `{ ...F0 }` and fragments F0..F`n`, each holding `own` and `spreads` spreads of the next;
/// the last holds `last`.
fn fragments(n: usize, on: &str, own: &str, spreads: usize, last: &str) -> String {
    let mut doc = String::from("{ ...F0 } ");
    for i in 0..n {
        let next = format!(" ...F{}", i + 1).repeat(spreads);
        doc.push_str(&format!("fragment F{i} on {on} {{ {own}{next} }} "));
    }
    doc.push_str(&format!("fragment F{n} on {on} {{ {last} }}"));
    doc
}

/// Locks a session row in an open transaction (commit or roll back through the client), so a
/// mutation of it waits, holding whatever it holds.
async fn lock_session(t: &TestDb, sid: &str) -> tokio_postgres::Client {
    let raw = t.raw().await;
    raw.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM crawl_sessions WHERE id = '{sid}' FOR UPDATE"
    ))
    .await
    .expect("lock");
    raw
}

async fn new_session(t: &TestDb) -> String {
    let v = t
        .ok(
            "mutation { createSession(input: { baseUrl: \"https://a.test\" }) { id } }",
            json!({}),
        )
        .await;
    v["createSession"]["id"].as_str().expect("id").to_owned()
}

// ---- 1. Recursion ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_documents_are_refused_on_every_transport_before_any_recursion() {
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let bearer = token("deep-admin", "admin");
    let deep = deep_list(2_000);

    // No token: GET is authenticated before the document is looked at.
    let (status, v) = get(addr, None, &deep).await;
    assert_eq!((status, code(&v)), (401, "UNAUTHENTICATED"), "{v}");
    let (status, v) = get(addr, Some(&bearer), &deep).await;
    assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");
    let (status, v) = post(addr, Some(&bearer), &deep, json!({})).await;
    assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");

    // Selections, types and objects nest as well as lists do.
    let n = 2_000;
    for doc in [
        format!("{{ me {} }}", "{ id ".repeat(n) + &"}".repeat(n)),
        format!(
            "query($v: {}Int{}) {{ me {{ id }} }}",
            "[".repeat(n),
            "]".repeat(n)
        ),
        format!(
            "{{ me(x: {}1{}) {{ id }} }}",
            "{a: ".repeat(n),
            "}".repeat(n)
        ),
    ] {
        let (status, v) = post(addr, Some(&bearer), &doc, json!({})).await;
        assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");
    }

    // Over a WebSocket the operation is refused, and the socket stays usable.
    let (mut ws, ack) = ws_init(addr, &bearer).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws_subscribe(&mut ws, "graphql-transport-ws", "1", &deep, json!({})).await;
    let v = ws_next(&mut ws).await;
    assert_eq!(code(&v["payload"]), "BAD_USER_INPUT", "{v}");
    // Refused before it ran: the protocol's `error` message, which ends the operation.
    assert_eq!(v["type"], "error", "{v}");
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "2",
        "{ __typename }",
        json!({}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws).await["payload"]["data"]["__typename"],
        "Query"
    );

    // Fragments nest without brackets: chains, cycles and exponential spreads.
    let chain = fragments(1_000, "Query", "__typename", 1, "__typename");
    let cycle = "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }";
    // Spreads that end in an unknown fragment: no field at all, 3^31 walks for async-graphql.
    let unknown = fragments(31, "Query", "", 3, "...Nope");
    let bomb = fragments(50, "Query", "__typename", 2, "__typename");
    for doc in [chain.as_str(), cycle, unknown.as_str()] {
        let (status, v) = post(addr, Some(&bearer), doc, json!({})).await;
        assert_eq!((status, code(&v)), (400, "BAD_USER_INPUT"), "{v}");
    }
    let started = Instant::now();
    let (status, v) = post(addr, Some(&bearer), &bomb, json!({})).await;
    assert_eq!((status, code(&v)), (400, "QUERY_TOO_COMPLEX"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The process is still there.
    let (status, v) = post(addr, Some(&bearer), "{ __typename }", json!({})).await;
    assert_eq!((status, &v["data"]["__typename"]), (200, &json!("Query")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_json_is_refused_at_input_and_what_is_stored_reads_back_faithfully() {
    let t = TestDb::new().await;
    let nest = |levels: usize| {
        let mut v = json!("leaf");
        for i in 0..levels {
            v = if i % 2 == 0 {
                json!({ "k": v })
            } else {
                json!([v])
            };
        }
        v
    };
    let q = "mutation($c: JSON) { createSession(input: { baseUrl: \"https://a.test\", config: $c }) { id config } }";
    // Depth is counted from the variable: the config object itself is level 1.
    let (v, _) = t.gql(q, json!({ "c": { "k": nest(130) } })).await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert!(
        v["errors"][0]["extensions"]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("c.k[0].k[0]")),
        "{v}"
    );
    assert_eq!(t.count("SELECT count(*) FROM crawl_sessions").await, 0);

    let deepest = {
        let mut v = nest(31);
        if v.is_array() {
            v = json!({ "k": v });
        }
        v
    };
    let (v, _) = t.gql(q, json!({ "c": deepest.clone() })).await;
    assert!(v.get("errors").is_none(), "{v}");
    assert_eq!(v["data"]["createSession"]["config"], deepest);
    let id = v["data"]["createSession"]["id"].as_str().expect("id");
    let read = t
        .ok(
            "query($id: UUID!) { session(id: $id) { config } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read["session"]["config"], deepest);
}

// ---- 2. One caller must not starve the others ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_documents_are_refused_before_validation() {
    let t = TestDb::new().await;
    let addr = t.serve_with(Default::default(), unlimited()).await;
    // 300,000 fields under one root field: under every limit the old guard knew.
    let huge = format!("{{ me {{ {} }} }}", "id ".repeat(300_000));
    let started = Instant::now();
    let (status, v) = post(addr, None, &huge, json!({})).await;
    assert_eq!((status, code(&v)), (400, "QUERY_TOO_COMPLEX"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Few tokens, many fields.
    let many = format!("{{ me {{ {} }} }}", "id ".repeat(2_001));
    let (status, v) = post(addr, None, &many, json!({})).await;
    assert_eq!((status, code(&v)), (400, "QUERY_TOO_COMPLEX"), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("2002 fields"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_limit_fits_the_largest_real_request_and_no_more() {
    let t = TestDb::new().await;
    let addr = t.serve_with(Default::default(), unlimited()).await;
    let sid = new_session(&t).await;
    let pages: Vec<Value> = (0..5_000)
        .map(|i| {
            json!({
                "url": format!("https://shop.example.test/catalogue/category-{}/product-{i:06}?ref=crawler&variant=standard", i % 40),
                "title": format!("Product {i:06} — a page title of ordinary length for a shop page"),
                "depth": 2,
            })
        })
        .collect();
    let q = "mutation($s: UUID!, $p: [PageInput!]!) { recordPages(sessionId: $s, pages: $p) { inserted } }";
    let (status, v) = post(addr, None, q, json!({ "s": sid, "p": pages })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["recordPages"]["inserted"], 5_000, "{v}");

    // A 5 MiB body is refused as soon as its length is announced.
    let answer = crate::harness::oversized_head_answer(addr).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"BAD_USER_INPUT\""), "{answer}");
}

/// A raw HTTP/1.1 client whose receive buffer is tiny and which never reads.
async fn stalled_get(addr: SocketAddr, path_and_query: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path_and_query} HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_do_not_block_others_and_are_cut_off() {
    let t = TestDb::new().await;
    // About 1 MB of config, asked for 12 times: 12 MB, far more than the socket buffers hold.
    let config = json!({ "blob": "x".repeat(1 << 20) });
    let v = t
        .ok(
            "mutation($c: JSON) { createSession(input: { baseUrl: \"https://a.test\", config: $c }) { id } }",
            json!({ "c": config }),
        )
        .await;
    let id = v["createSession"]["id"].as_str().expect("id").to_owned();
    let http = HttpConfig {
        max_concurrent: 1,
        timeouts: bughive_gateway::http::serve::Timeouts {
            write_stall: Duration::from_secs(6),
            ..Default::default()
        },
        ..unlimited()
    };
    let addr = t.serve_with(Default::default(), http).await;
    let fields: String = (0..12)
        .map(|i| format!("a{i}: session(id: \"{id}\") {{ config }} "))
        .collect();
    let query = format!("{{ {fields} }}");
    let path = format!(
        "/graphql?query={}",
        url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
    );
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_get(addr, &path).await);
    }
    // Give the server time to execute all three and get stuck writing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(10),
        post(addr, None, "{ __typename }", json!({})),
    )
    .await
    .expect("another caller is served while three clients do not read");
    assert_eq!((status, &v["data"]["__typename"]), (200, &json!("Query")));
    // Well before the write timeout could have freed a permit held by a stalled response.
    assert!(started.elapsed() < Duration::from_secs(4));

    // The stalled connections are closed by the write timeout: reading now ends early.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for mut s in stalled {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the stalled connection stayed open");
        assert!(got < 12 << 20, "the whole response arrived ({got} bytes)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_cut_off() {
    let t = TestDb::new().await;
    let http = HttpConfig {
        timeouts: bughive_gateway::http::serve::Timeouts {
            header_read: Duration::from_secs(1),
            body_read: Duration::from_secs(1),
            ..Default::default()
        },
        ..unlimited()
    };
    let addr = t.serve_with(Default::default(), http).await;
    let read_all = |mut s: tokio::net::TcpStream| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("the server closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    };

    // Half a request's headers, then nothing; and nothing at all.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    read_all(s).await;
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    read_all(s).await;
    // A keep-alive connection that goes quiet after its request.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Headers, then a tenth of the announced body.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":")
        .await
        .expect("write");
    let answer = read_all(s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"BAD_USER_INPUT\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_slow_clients() {
    let t = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["serve", "--no-demo-data", "--listen", &addr.to_string()])
        .env("DATABASE_URL", &t.url)
        .env("RUST_LOG", "warn")
        .env("HTTP_HEADER_TIMEOUT_SECS", "60")
        .env("SHUTDOWN_GRACE_SECS", "2")
        .spawn()
        .expect("start the gateway");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHo")
            .await
            .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.is_some(),
        "SIGTERM waited on connections that never sent a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_callers_are_bounded() {
    let t = TestDb::new().await;
    let sid = new_session(&t).await;
    let mut http = unlimited();
    http.ws.max_operations = 3;
    http.ws.max_connections_per_caller = 2;
    http.ws.init_timeout = Duration::from_secs(1);
    let addr = t.serve_with(Default::default(), http).await;

    // A socket that never initializes is closed with 4408.
    let mut idle = ws_open(addr, "graphql-transport-ws").await;
    let (code_, _) = ws_closed(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(code_, 4408);

    // Operations per socket.
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    for id in ["1", "2", "3"] {
        watch(&mut ws, id, &sid).await;
        let v = ws_next(&mut ws).await;
        assert_eq!(
            v["payload"]["data"]["sessionProgress"]["kind"], "snapshot",
            "{v}"
        );
    }
    watch(&mut ws, "4", &sid).await;
    let v = ws_next(&mut ws).await;
    assert_eq!(
        (v["id"].as_str(), code(&v["payload"])),
        (Some("4"), "RATE_LIMITED"),
        "{v}"
    );
    // Refused before it ran: the protocol's `error` message, which ends the operation.
    assert_eq!(v["type"], "error", "{v}");
    // Ending one makes room for another.
    ws.send(Message::text(
        json!({ "type": "complete", "id": "1" }).to_string(),
    ))
    .await
    .expect("complete");
    watch(&mut ws, "5", &sid).await;
    loop {
        let v = ws_next(&mut ws).await;
        if v["id"] == "5" {
            assert_eq!(
                v["payload"]["data"]["sessionProgress"]["kind"], "snapshot",
                "{v}"
            );
            break;
        }
    }
    // A reused id closes the socket, as the protocol says.
    watch(&mut ws, "5", &sid).await;
    assert_eq!(ws_closed(&mut ws, Duration::from_secs(5)).await.0, 4409);

    // Sockets per caller (the dev admin here).
    let a = ws_connect(addr, "graphql-transport-ws").await;
    let _b = ws_connect(addr, "graphql-transport-ws").await;
    let mut c = ws_open(addr, "graphql-transport-ws").await;
    c.send(Message::text(
        json!({ "type": "connection_init" }).to_string(),
    ))
    .await
    .expect("init");
    // 1013 Try Again Later: the standard client retries it, with backoff.
    assert_eq!(ws_closed(&mut c, Duration::from_secs(5)).await.0, 1013);
    drop(a);
    // The slot comes back once the server has seen the close.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut d = ws_open(addr, "graphql-transport-ws").await;
        d.send(Message::text(
            json!({ "type": "connection_init" }).to_string(),
        ))
        .await
        .expect("init");
        if ws_next(&mut d).await["type"] == "connection_ack" {
            ok = true;
            break;
        }
    }
    assert!(ok, "a closed socket's slot was never given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_operations_count_against_the_rate_limit() {
    let t = TestDb::new().await;
    let http = HttpConfig {
        rate_per_second: 1,
        rate_burst: 3,
        ..Default::default()
    };
    let addr = t.serve_with(Default::default(), http).await;
    // connection_init takes one token; then 6 operations at once.
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    for i in 0..6 {
        ws_subscribe(
            &mut ws,
            "graphql-transport-ws",
            &i.to_string(),
            "{ __typename }",
            json!({}),
        )
        .await;
    }
    let mut limited = 0;
    let mut answered = 0;
    while answered < 6 {
        let v = ws_next(&mut ws).await;
        if v["type"] == "next" || v["type"] == "error" {
            answered += 1;
            if code(&v["payload"]) == "RATE_LIMITED" {
                limited += 1;
            }
        }
    }
    assert!(limited >= 3, "only {limited} of 6 operations were limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_operations_share_the_execution_permits() {
    let t = TestDb::new().await;
    let sid = new_session(&t).await;
    let http = HttpConfig {
        max_concurrent: 1,
        ..unlimited()
    };
    let addr = t.serve_with(Default::default(), http).await;
    // A mutation over the socket waits on a row lock, holding the only permit.
    let raw = lock_session(&t, &sid).await;
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "m",
        "mutation($id: UUID!) { startSession(id: $id) { status } }",
        json!({ "id": sid }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let blocked = tokio::time::timeout(
        Duration::from_secs(1),
        post(addr, None, "{ __typename }", json!({})),
    )
    .await;
    assert!(
        blocked.is_err(),
        "HTTP ran while a socket's mutation held the only permit"
    );
    let pending = tokio::spawn(post(addr, None, "{ __typename }", json!({})));
    raw.batch_execute("COMMIT").await.expect("unlock");
    let v = ws_next(&mut ws).await;
    assert_eq!(
        v["payload"]["data"]["startSession"]["status"], "RUNNING",
        "{v}"
    );
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("served once the permit is free")
        .expect("task");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_permit_is_bounded() {
    let t = TestDb::new().await;
    let sid = new_session(&t).await;
    let http = HttpConfig {
        max_concurrent: 1,
        queue_timeout: Duration::from_millis(300),
        ..unlimited()
    };
    let addr = t.serve_with(Default::default(), http).await;
    let raw = lock_session(&t, &sid).await;
    let q = format!("mutation {{ startSession(id: \"{sid}\") {{ status }} }}");
    let holder = tokio::spawn(async move { post(addr, None, &q, json!({})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(3),
        post(addr, None, "{ __typename }", json!({})),
    )
    .await
    .expect("answered instead of queued until the permit is free");
    assert_eq!((status, code(&v)), (503, "UNAVAILABLE"), "{v}");
    // Over a socket too.
    let mut ws = ws_connect(addr, "graphql-transport-ws").await;
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "q",
        "{ __typename }",
        json!({}),
    )
    .await;
    assert_eq!(code(&ws_next(&mut ws).await["payload"]), "UNAVAILABLE");
    raw.batch_execute("COMMIT").await.expect("unlock");
    let (status, _) = holder.await.expect("task");
    assert_eq!(status, 200);
}

// ---- 3. Rights end when they end -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires() {
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let short = hs256()
        .mint(&bughive_gateway::auth::jwt::Claims {
            exp: now() + 2,
            ..claims("short-lived", "admin")
        })
        .expect("mint");
    let (mut ws, ack) = ws_init(addr, &short).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws_subscribe(
        &mut ws,
        "graphql-transport-ws",
        "1",
        "{ me { subject } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws).await["payload"]["data"]["me"]["subject"],
        "short-lived"
    );
    let started = Instant::now();
    let (code_, reason) = ws_closed(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code_, 4403, "{reason}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demoted_or_deactivated_callers_lose_their_sockets() {
    let t = TestDb::new().await;
    let addr = t.serve_with(hs256(), unlimited()).await;
    let boss = token("boss", "admin");
    for (victim, change) in [
        ("demoted", "role: USER"),
        ("deactivated", "isActive: false"),
    ] {
        let victim_token = token(victim, "admin");
        let (_, me) = post(addr, Some(&victim_token), "{ me { id } }", json!({})).await;
        let victim_id = me["data"]["me"]["id"].as_str().expect("id").to_owned();
        let (mut ws, ack) = ws_init(addr, &victim_token).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws_subscribe(
            &mut ws,
            "graphql-transport-ws",
            "1",
            "{ users { totalCount } }",
            json!({}),
        )
        .await;
        let v = ws_next(&mut ws).await;
        assert!(v["payload"].get("errors").is_none(), "{v}");

        let (status, v) = post(
            addr,
            Some(&boss),
            &format!("mutation {{ updateUser(id: \"{victim_id}\", {change}) {{ id }} }}"),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let started = Instant::now();
        let (code_, reason) = ws_closed(&mut ws, Duration::from_secs(10)).await;
        assert_eq!(code_, 4403, "{victim}: {reason}");
        assert!(started.elapsed() < Duration::from_secs(3), "{victim}");
        // Re-opening gets the current rights: a user may not promote itself back.
        if victim == "demoted" {
            let (mut ws, _) = ws_init(addr, &victim_token).await;
            ws_subscribe(
                &mut ws,
                "graphql-transport-ws",
                "2",
                &format!("mutation {{ updateUser(id: \"{victim_id}\", role: ADMIN) {{ id }} }}"),
                json!({}),
            )
            .await;
            assert_eq!(code(&ws_next(&mut ws).await["payload"]), "FORBIDDEN");
        } else {
            let (status, v) = post(addr, Some(&victim_token), "{ me { id } }", json!({})).await;
            assert_eq!((status, code(&v)), (403, "FORBIDDEN"));
        }
    }
}

// ---- 4. Bad input gets a clear answer ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_bad_input_wherever_they_come_from() {
    let t = TestDb::new().await;
    let sid = new_session(&t).await;
    let nul = "a\u{0}b";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "mutation($u: String!) { createSession(input: { baseUrl: $u }) { id } }",
            json!({ "u": format!("https://a.test/{nul}") }),
            "u",
        ),
        (
            "mutation($c: JSON) { createSession(input: { baseUrl: \"https://a.test\", config: $c }) { id } }",
            json!({ "c": { nul: 1 } }),
            "c.a\u{0}b",
        ),
        (
            "mutation($s: UUID!) { recordPages(sessionId: $s, pages: [{ url: \"https://a.test/x\", depth: 0, title: \"a\\u0000b\" }]) { inserted } }",
            json!({ "s": sid }),
            "pages[0].title",
        ),
        (
            "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id } }",
            json!({ "s": sid, "b": [{ "title": "t", "category": "FUNCTIONAL", "priority": "LOW", "confidence": 0.5,
                "evidence": [{ "type": "console", "level": "error", "message": nul }] }] }),
            "b[0].evidence[0].message",
        ),
        (
            "mutation($s: UUID!, $b: [BugInput!]!) { reportBugs(sessionId: $s, bugs: $b) { id } }",
            json!({ "s": sid, "b": [{ "title": "t", "category": "FUNCTIONAL", "priority": "LOW", "confidence": 0.5,
                "stepsToReproduce": ["ok", nul] }] }),
            "b[0].stepsToReproduce[1]",
        ),
        (
            "mutation($k: String!) { enqueueJob(input: { kind: $k }) { id } }",
            json!({ "k": nul }),
            "k",
        ),
        (
            "mutation { claimJob(kinds: [\"\\u0000\"]) { id } }",
            json!({}),
            "kinds[0]",
        ),
        (
            "mutation($id: UUID!, $e: String!) { failSession(id: $id, error: $e) { id } }",
            json!({ "id": sid, "e": nul }),
            "e",
        ),
        (
            "mutation($n: String!) { createProject(slug: \"ok-slug\", name: $n) { id } }",
            json!({ "n": nul }),
            "n",
        ),
        (
            "query($a: String) { sessions(after: $a) { totalCount } }",
            json!({ "a": nul }),
            "a",
        ),
    ];
    for (q, vars, field) in cases {
        let (v, _) = t.gql(q, vars).await;
        assert_eq!(code(&v), "BAD_USER_INPUT", "{q}: {v}");
        assert_eq!(v["errors"][0]["extensions"]["field"], field, "{q}: {v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM crawl_sessions").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM pages").await, 0);

    // A token claim with a NUL is a bad token, not a database error.
    let addr = t.serve_with(hs256(), unlimited()).await;
    let bad = hs256().mint(&claims(nul, "user")).expect("mint");
    let (status, v) = post(addr, Some(&bad), "{ me { id } }", json!({})).await;
    assert_eq!((status, code(&v)), (401, "UNAUTHENTICATED"), "{v}");
    // A NUL in an optional profile claim is dropped.
    let odd = hs256()
        .mint(&bughive_gateway::auth::jwt::Claims {
            email: Some(format!("x{nul}@a.test")),
            ..claims("odd-email", "user")
        })
        .expect("mint");
    let (status, v) = post(addr, Some(&odd), "{ me { subject email } }", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["me"]["email"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_outside_the_database_range_is_bad_input() {
    use base64::Engine;
    let t = TestDb::new().await;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("-400000000000000000:{}", uuid::Uuid::nil()));
    let (v, _) = t
        .gql(
            "query($a: String) { sessions(after: $a) { nodes { id } } }",
            json!({ "a": cursor }),
        )
        .await;
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
    assert_eq!(v["errors"][0]["extensions"]["field"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_the_database_is_unavailable_with_503() {
    let t = TestDb::new().await;
    let sid = new_session(&t).await;
    let addr = t.serve().await;
    // The mutation waits on a row lock; then its backend is terminated, as a restart does.
    let raw = lock_session(&t, &sid).await;
    let q = format!("mutation {{ startSession(id: \"{sid}\") {{ status }} }}");
    let call = tokio::spawn(async move { post(addr, None, &q, json!({})).await });
    let killer = t.raw().await;
    let mut killed = 0i64;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        killed = killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("terminate")
            .get(0);
        if killed > 0 {
            break;
        }
    }
    assert_eq!(killed, 1, "the mutation never waited on the lock");
    let (status, v) = call.await.expect("task");
    assert_eq!((status, code(&v)), (503, "UNAVAILABLE"), "{v}");
    raw.batch_execute("ROLLBACK").await.expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_503() {
    let t = TestDb::with_pool(1, 300).await;
    let addr = t.serve().await;
    // The first request provisions the development admin, who is then cached.
    let (status, _) = post(addr, None, "{ me { id } }", json!({})).await;
    assert_eq!(status, 200);
    let held = t.db.conn().await.expect("the only connection");
    let (status, v) = post(addr, None, "{ sessions { totalCount } }", json!({})).await;
    assert_eq!((status, code(&v)), (503, "UNAVAILABLE"), "{v}");
    drop(held);
    let (status, v) = post(addr, None, "{ sessions { totalCount } }", json!({})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_unless_preflighted() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let body = json!({ "query": "mutation { createSession(input: { baseUrl: \"https://csrf.test\" }) { id } }" })
        .to_string();
    let http = reqwest::Client::new();
    let send = |content_type: Option<&'static str>, preflight: bool| {
        let mut r = http
            .post(format!("http://{addr}/graphql"))
            .body(body.clone());
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        if preflight {
            r = r.header("apollo-require-preflight", "true");
        }
        async move {
            let r = r.send().await.expect("post");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        None,
    ] {
        let (status, v) = send(ct, false).await;
        assert_eq!((status, code(&v)), (415, "BAD_USER_INPUT"), "{ct:?}: {v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM crawl_sessions").await, 0);
    let (status, v) = send(Some("text/plain"), true).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(Some("application/json; charset=utf-8"), false).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(t.count("SELECT count(*) FROM crawl_sessions").await, 2);
    // A malformed JSON body is a GraphQL error with a code, not plain text.
    let r = http
        .post(format!("http://{addr}/graphql"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(code(&v), "BAD_USER_INPUT", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_another_replica_closes_sockets_at_once() {
    let t = TestDb::new().await;
    // Two replicas over one database, each with its own caller cache and change listener.
    let a = t.serve_with(hs256(), unlimited()).await;
    let b = t.serve_with(hs256(), unlimited()).await;
    let victim_token = token("elsewhere", "admin");
    let (_, me) = post(a, Some(&victim_token), "{ me { id } }", json!({})).await;
    let victim_id = me["data"]["me"]["id"].as_str().expect("id").to_owned();
    let (mut ws, ack) = ws_init(a, &victim_token).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let (status, v) = post(
        b,
        Some(&token("boss-b", "admin")),
        &format!("mutation {{ updateUser(id: \"{victim_id}\", isActive: false) {{ id }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    let (code_, reason) = ws_closed(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code_, 4403, "{reason}");
    // Not the 30 s cache plus the 5 s re-check: the change was heard.
    assert!(started.elapsed() < Duration::from_secs(3));
    // Replica A's HTTP cache dropped the caller too.
    let (status, v) = post(a, Some(&victim_token), "{ me { id } }", json!({})).await;
    assert_eq!((status, code(&v)), (403, "FORBIDDEN"), "{v}");
}

/// The close codes of graphql-transport-ws, each for its cause, with a reason that fits a close
/// frame (at most 123 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_transport_ws_closes_with_the_protocol_codes() {
    let t = TestDb::new().await;
    let addr = t.serve().await;
    let proto = "graphql-transport-ws";
    let closed_by = |sent: Vec<String>| async move {
        let mut ws = ws_open(addr, proto).await;
        for m in sent {
            ws.send(Message::text(m)).await.expect("send");
        }
        let (code_, reason) = ws_closed(&mut ws, Duration::from_secs(5)).await;
        assert!(reason.len() <= 123, "{code_}: {reason}");
        (code_, reason)
    };
    let init = json!({ "type": "connection_init" }).to_string();
    let subscribe =
        json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ __typename }" } })
            .to_string();

    // Malformed or unknown messages: 4400.
    let (c, r) = closed_by(vec!["not json".into()]).await;
    assert_eq!(c, 4400, "{r}");
    let (c, r) = closed_by(vec![init.clone(), json!({ "type": "bogus" }).to_string()]).await;
    assert_eq!(c, 4400, "{r}");
    let long_garbage = format!("{{\"type\": \"{}\"}}", "x".repeat(500));
    let (c, r) = closed_by(vec![long_garbage]).await;
    assert_eq!(c, 4400, "{r}");
    // Subscribe before connection_init: 4401.
    let (c, r) = closed_by(vec![subscribe.clone()]).await;
    assert_eq!(c, 4401, "{r}");
    // A second connection_init: 4429.
    let (c, r) = closed_by(vec![init.clone(), init.clone()]).await;
    assert_eq!(c, 4429, "{r}");
    // A reused operation id (4409) and an init timeout (4408): see websocket_callers_are_bounded.
    let mut ws = ws_connect(addr, proto).await;
    // A message larger than the socket's limit (1 MiB): 1009.
    let big = format!(
        "{{\"type\":\"subscribe\",\"id\":\"2\",\"payload\":{{\"query\":\"{}\"}}}}",
        " ".repeat(2 * 1024 * 1024)
    );
    ws.send(Message::text(big)).await.expect("send");
    let (c, r) = ws_closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(c, 1009, "{r}");
}
