//! Test harness: one PostgreSQL per test run (the embedded-default code, or `DATABASE_URL`), a
//! migrated template database, and a fresh clone of it for every test so tests run in parallel.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bughive_gateway::api::{AppSchema, build_schema, execute};
use bughive_gateway::auth::authenticator::DEV_SUBJECT;
use bughive_gateway::auth::jwt::JwtConfig;
use bughive_gateway::auth::{Actor, Authenticator, Principal, Role};
use bughive_gateway::config::DbConfig;
use bughive_gateway::http::{AppState, HttpConfig, router};
use bughive_gateway::live::Live;
use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg};
use bughive_gateway::store::{Db, build_pool, run_migrations};
use serde_json::Value;

pub struct Cluster {
    /// Connection string of a maintenance database, with `{db}` where the name goes.
    url_template: UrlTemplate,
    pub embedded: Option<EmbeddedPg>,
    pub template: String,
    prefix: String,
}

enum UrlTemplate {
    Embedded,
    External(Box<tokio_postgres::Config>),
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    pub fn url(&self, db: &str) -> String {
        match &self.url_template {
            UrlTemplate::Embedded => self
                .embedded
                .as_ref()
                .map(|pg| pg.url(db))
                .unwrap_or_default(),
            UrlTemplate::External(cfg) => {
                let mut parts = Vec::new();
                for h in cfg.get_hosts() {
                    match h {
                        tokio_postgres::config::Host::Tcp(s) => parts.push(format!("host='{s}'")),
                        tokio_postgres::config::Host::Unix(p) => {
                            parts.push(format!("host='{}'", p.display()))
                        }
                    }
                }
                if let Some(p) = cfg.get_ports().first() {
                    parts.push(format!("port={p}"));
                }
                if let Some(u) = cfg.get_user() {
                    parts.push(format!("user='{u}'"));
                }
                if let Some(pw) = cfg.get_password() {
                    parts.push(format!("password='{}'", String::from_utf8_lossy(pw)));
                }
                parts.push(format!("dbname='{db}'"));
                parts.join(" ")
            }
        }
    }

    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }
}

extern "C" fn cleanup_at_exit() {
    let Some(c) = CLUSTER.get() else { return };
    if let Some(pg) = &c.embedded {
        let _ = pg.stop();
        if let Some(parent) = pg.data_dir().parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    } else {
        let admin = c.admin_url();
        let prefix = c.prefix.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async move {
                let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                if let Ok(rows) = client
                    .query(
                        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                        &[&prefix],
                    )
                    .await
                {
                    for r in rows {
                        let name: String = r.get(0);
                        let _ = client
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

async fn admin_exec(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    let h = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = h.await;
}

fn init() -> Cluster {
    let prefix = format!("bughive_t{}_", std::process::id());
    let (url_template, embedded) =
        match std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()) {
            Some(url) => {
                let cfg: tokio_postgres::Config = url.parse().expect("DATABASE_URL must parse");
                (UrlTemplate::External(Box::new(cfg)), None)
            }
            None => {
                let dir: PathBuf =
                    std::env::temp_dir().join(format!("bughive-test-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("create test dir");
                let opts = EmbeddedOptions::new(dir.join("pg"))
                    .setting("fsync", "off")
                    .setting("synchronous_commit", "off")
                    .setting("full_page_writes", "off")
                    .setting("max_connections", "300");
                let pg = EmbeddedPg::start(&opts).expect("start the test cluster");
                (UrlTemplate::Embedded, Some(pg))
            }
        };
    let template = format!("{prefix}template");
    let cluster = Cluster {
        url_template,
        embedded,
        template: template.clone(),
        prefix,
    };
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe {
        libc::atexit(cleanup_at_exit);
    }
    let admin = cluster.admin_url();
    let tpl_url = cluster.url(&template);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            admin_exec(&admin, &format!("CREATE DATABASE \"{template}\"")).await;
            run_migrations(&tpl_url)
                .await
                .expect("migrate the template");
        });
    })
    .join()
    .expect("template set-up");
    cluster
}

pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(init)
}

/// A fresh database cloned from the migrated template.
pub struct TestDb {
    pub url: String,
    pub db: Db,
    pub schema: AppSchema,
    admin: tokio::sync::OnceCell<Principal>,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool(10, 5_000).await
    }

    pub async fn with_pool(size: usize, timeout_ms: u64) -> Self {
        let c = cluster();
        let name = format!("{}{}", c.prefix, COUNTER.fetch_add(1, Ordering::SeqCst));
        admin_exec(
            &c.admin_url(),
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", c.template),
        )
        .await;
        Self::on_url_with_pool(c.url(&name), size, timeout_ms)
    }

    /// A handle on an existing, migrated database (one the test manages itself).
    pub fn on_url(url: String) -> Self {
        Self::on_url_with_pool(url, 10, 5_000)
    }

    fn on_url_with_pool(url: String, size: usize, timeout_ms: u64) -> Self {
        let db = Db::new(
            build_pool(&DbConfig {
                url: url.clone(),
                pool_size: size,
                pool_timeout_ms: timeout_ms,
                statement_timeout_ms: 30_000,
            })
            .expect("pool"),
        );
        TestDb {
            url,
            db,
            schema: build_schema(),
            admin: tokio::sync::OnceCell::new(),
        }
    }

    /// The user of `subject` with `role` (provisioned like a first request would).
    pub async fn user(&self, subject: &str, role: Role) -> Principal {
        let mut conn = self.db.conn().await.expect("conn");
        let row = bughive_gateway::store::users::repo::provision(
            &mut conn,
            bughive_gateway::store::users::repo::NewUser {
                subject: subject.into(),
                email: None,
                display_name: None,
                role,
            },
        )
        .await
        .map_err(|e| e.message())
        .expect("provision");
        Principal {
            user_id: row.id,
            subject: row.subject,
            role: row.role,
        }
    }

    /// The built-in admin of development mode, which `gql` runs as.
    pub async fn admin(&self) -> Principal {
        self.admin
            .get_or_init(|| self.user(DEV_SUBJECT, Role::Admin))
            .await
            .clone()
    }

    /// Runs a GraphQL request as the built-in admin; returns the response as JSON and the SQL
    /// statements it issued.
    pub async fn gql(&self, query: &str, variables: Value) -> (Value, u64) {
        let admin = self.admin().await;
        self.gql_as(&admin, query, variables).await
    }

    /// Runs a GraphQL request as `principal`.
    pub async fn gql_as(
        &self,
        principal: &Principal,
        query: &str,
        variables: Value,
    ) -> (Value, u64) {
        let req = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables));
        let actor = Actor {
            principal: principal.clone(),
            request_id: Some("test".into()),
        };
        let (resp, stats) = execute(&self.schema, &self.db, actor, req).await;
        (
            serde_json::from_slice(&resp.to_json()).expect("response is JSON"),
            stats.statements(),
        )
    }

    /// Like [`gql`](Self::gql) but fails the test on any error.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let (v, _) = self.gql(query, variables).await;
        assert!(v.get("errors").is_none(), "unexpected errors: {v:#}");
        v["data"].clone()
    }

    /// Serves the gateway for this database on a loopback port, as `serve` would in
    /// development mode: HTTP, the WebSocket endpoint and a live-update hub with its own
    /// listener connection.
    pub async fn serve(&self) -> std::net::SocketAddr {
        self.serve_with(JwtConfig::default(), HttpConfig::default())
            .await
    }

    /// Like [`serve`](Self::serve), with authentication and HTTP settings of its own.
    pub async fn serve_with(&self, jwt: JwtConfig, http: HttpConfig) -> std::net::SocketAddr {
        self.serve_schema(self.schema.clone(), jwt, http).await
    }

    /// Like [`serve_with`](Self::serve_with), with a schema of its own (limits).
    pub async fn serve_schema(
        &self,
        schema: AppSchema,
        jwt: JwtConfig,
        http: HttpConfig,
    ) -> std::net::SocketAddr {
        let live = Live::start(self.url.clone(), self.db.scoped());
        // Subscriptions opened before the listener is up would get an extra `resync` message.
        for _ in 0..1000 {
            if live.is_listening() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let auth = Authenticator::new(jwt, self.db.scoped());
        let timeouts = http.timeouts;
        let app = router(AppState::new(schema, self.db.clone(), live, auth, http));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(bughive_gateway::http::serve::serve(
            listener,
            app,
            timeouts,
            std::future::pending(),
        ));
        addr
    }

    /// A raw connection for assertions that bypass the gateway.
    pub async fn raw(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("raw connect");
        tokio::spawn(conn);
        client
    }

    /// The cursors of a session's logged events, in log order: what a complete stream holds.
    pub async fn logged_events(&self, session: uuid::Uuid) -> Vec<String> {
        self.raw()
            .await
            .query(
                "SELECT txid::text || '.' || id::text FROM events WHERE session_id = $1 \
                 ORDER BY txid, id",
                &[&session],
            )
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.raw()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }
}

/// The `extensions.code` of the first error.
/// The code of the first error of a response, or of a graphql-transport-ws `error` payload
/// (a bare list of errors).
pub fn code(v: &Value) -> &str {
    let errors = if v.is_array() { v } else { &v["errors"] };
    errors[0]["extensions"]["code"].as_str().unwrap_or("<none>")
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws` with one subprotocol and checks the server chose it; no handshake yet.
pub async fn ws_open(addr: std::net::SocketAddr, protocol: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// [`ws_open`] plus the `connection_init` / `connection_ack` handshake.
pub async fn ws_connect(addr: std::net::SocketAddr, protocol: &str) -> Ws {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = ws_open(addr, protocol).await;
    ws.send(Message::text(
        serde_json::json!({ "type": "connection_init" }).to_string(),
    ))
    .await
    .expect("init");
    let v = ws_next(&mut ws).await;
    assert_eq!(v["type"], "connection_ack");
    ws
}

/// The next protocol message other than a keep-alive, within ten seconds.
pub async fn ws_next(ws: &mut Ws) -> Value {
    use futures::StreamExt;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("socket ok");
        let Ok(text) = msg.to_text() else { continue };
        if text.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(text).expect("json message");
        if v["type"] == "ping" || v["type"] == "ka" || v["type"] == "pong" {
            continue;
        }
        return v;
    }
}

/// Sends one subscribe (graphql-transport-ws) or start (legacy graphql-ws) message.
pub async fn ws_subscribe(ws: &mut Ws, protocol: &str, id: &str, query: &str, variables: Value) {
    use futures::SinkExt;
    let ty = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::json!({ "id": id, "type": ty, "payload": { "query": query, "variables": variables } })
            .to_string(),
    ))
    .await
    .expect("subscribe");
}

/// A fresh database seeded with `sessions` × `pages` × `bugs` (no variation), and its plan.
pub async fn seeded(
    sessions: usize,
    pages: usize,
    bugs: usize,
) -> (TestDb, bughive_gateway::seed::SeedPlan) {
    let t = TestDb::new().await;
    let plan = bughive_gateway::seed::SeedPlan {
        sessions,
        pages_per_session: pages,
        bugs_per_page: bugs,
        vary_bugs: false,
    };
    bughive_gateway::seed::run(&t.db, plan, false)
        .await
        .expect("seed");
    (t, plan)
}

/// An actor for requests run without a database-backed user (the database may be unreachable).
pub fn anonymous_admin() -> Actor {
    Actor {
        principal: Principal {
            user_id: uuid::Uuid::nil(),
            subject: DEV_SUBJECT.into(),
            role: Role::Admin,
        },
        request_id: None,
    }
}

/// A gateway process serving `DATABASE_URL=url` on a free loopback port, with extra environment
/// (`RUST_LOG=warn` unless given); returned once `/health` answers.
pub async fn spawn_gateway(
    url: &str,
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (std::process::Child, std::net::SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bughive-gateway"));
    cmd.args(["serve", "--listen", &addr.to_string()])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env_remove("JWT_SECRET")
        .env_remove("LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start the gateway");
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    while http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the gateway never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (child, addr)
}

/// Sends SIGTERM, the signal a process manager stops a replica with.
pub fn terminate(child: &std::process::Child) {
    // SAFETY: kill with a child's pid and a signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Announces a 5 MiB JSON body and sends only the head; returns what the server answers.
pub async fn oversized_head_answer(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            5 << 20
        )
        .as_bytes(),
    )
    .await
    .expect("head");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut answer))
        .await
        .expect("answered before the body")
        .expect("read");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
