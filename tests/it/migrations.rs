//! Migrations are reversible, and `src/store/schema.rs` matches what they create.

use std::collections::BTreeMap;

use crate::harness::TestDb;

/// `(column, diesel type, nullable)` in table order.
type Columns = Vec<(String, String, bool)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_down_and_up_again() {
    let t = TestDb::new().await;
    let (down, up) = bughive_gateway::store::redo_all_migrations(&t.url)
        .await
        .expect("redo");
    assert!(down >= 1);
    assert_eq!(down, up);
    assert_eq!(t.count("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('crawl_sessions', 'pages', 'bugs', 'jobs', 'users', 'projects', 'audit_logs')").await, 7);
    assert_eq!(
        t.count("SELECT count(*) FROM pg_trigger WHERE tgname IN ('jobs_notify', 'crawl_sessions_notify')").await,
        2
    );
    assert!(
        bughive_gateway::store::migrations_applied(&t.db)
            .await
            .expect("check")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_enforces_enums_and_checks() {
    let t = TestDb::new().await;
    let c = t.raw().await;
    c.batch_execute("INSERT INTO crawl_sessions (id, base_url) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test')")
        .await
        .expect("insert session");
    for bad in [
        "UPDATE crawl_sessions SET status = 'RUNNING'",
        "UPDATE crawl_sessions SET total_cost = -1",
        "UPDATE crawl_sessions SET pages_crawled = -1",
        "INSERT INTO pages (session_id, url, depth) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test/a', -1)",
        "INSERT INTO pages (session_id, url, status) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test/a', 'done')",
        "INSERT INTO bugs (session_id, title, category, priority, confidence) VALUES ('00000000-0000-0000-0000-0000000000aa', 't', 'ui_ux', 'high', 1.5)",
        "INSERT INTO bugs (session_id, title, category, priority, confidence) VALUES ('00000000-0000-0000-0000-0000000000aa', 't', 'ux', 'high', 0.5)",
        "INSERT INTO bugs (session_id, title, category, priority, confidence) VALUES ('00000000-0000-0000-0000-0000000000aa', 't', 'ui_ux', 'urgent', 0.5)",
        "INSERT INTO jobs (id, kind, status) VALUES (gen_random_uuid(), 'crawl', 'PENDING')",
        "INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), '')",
        "INSERT INTO jobs (id, kind, progress) VALUES (gen_random_uuid(), 'x', 1.5)",
        "INSERT INTO jobs (id, kind, status) VALUES (gen_random_uuid(), 'x', 'running')",
        "INSERT INTO jobs (id, kind, attempts, max_attempts) VALUES (gen_random_uuid(), 'x', 4, 3)",
        "INSERT INTO jobs (id, kind, session_id) VALUES (gen_random_uuid(), 'x', '00000000-0000-0000-0000-0000000000bb')",
    ] {
        assert!(c.batch_execute(bad).await.is_err(), "accepted: {bad}");
    }
    c.batch_execute("INSERT INTO pages (session_id, url) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test/a')").await.expect("page");
    assert!(
        c.batch_execute("INSERT INTO pages (session_id, url) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test/a')").await.is_err(),
        "duplicate (session_id, url) accepted"
    );
    // updated_at follows every update.
    c.batch_execute("UPDATE crawl_sessions SET pages_discovered = 1")
        .await
        .expect("update");
    let moved: bool = c
        .query_one("SELECT updated_at > created_at FROM crawl_sessions", &[])
        .await
        .expect("q")
        .get(0);
    assert!(moved, "updated_at did not follow the update");
    // Deleting a session cascades to its pages and bugs.
    c.batch_execute("DELETE FROM crawl_sessions")
        .await
        .expect("delete");
    assert_eq!(t.count("SELECT count(*) FROM pages").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_ownership_keeps_existing_sessions_valid() {
    let t = TestDb::new().await;
    // Back to before users and audit, the third migration: every later one goes first.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations")
        .count();
    for _ in 0..migrations - 2 {
        bughive_gateway::store::revert_last_migration(&t.url)
            .await
            .expect("revert");
    }
    assert_eq!(
        t.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'crawl_sessions' AND column_name = 'owner_id'").await,
        0
    );
    t.raw()
        .await
        .batch_execute("INSERT INTO crawl_sessions (id, base_url) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://old.test/')")
        .await
        .expect("a session from before ownership");
    bughive_gateway::store::run_migrations(&t.url)
        .await
        .expect("migrate again");
    assert_eq!(
        t.count(
            "SELECT count(*) FROM crawl_sessions WHERE owner_id IS NULL AND project_id IS NULL"
        )
        .await,
        1
    );
    // Admins still see it, with no owner; users do not.
    let v = t
        .ok(
            "{ sessions { totalCount nodes { owner { id } project { id } } } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(v["sessions"]["totalCount"], 1);
    assert_eq!(v["sessions"]["nodes"][0]["owner"], serde_json::Value::Null);
    let alice = t.user("alice", bughive_gateway::auth::Role::User).await;
    let (v, _) = t
        .gql_as(&alice, "{ sessions { totalCount } }", serde_json::json!({}))
        .await;
    assert_eq!(v["data"]["sessions"]["totalCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_keep_their_history_when_the_session_goes() {
    let t = TestDb::new().await;
    let c = t.raw().await;
    c.batch_execute(
        "INSERT INTO crawl_sessions (id, base_url) VALUES ('00000000-0000-0000-0000-0000000000aa', 'https://x.test');
         INSERT INTO jobs (id, kind, session_id) VALUES (gen_random_uuid(), 'crawl', '00000000-0000-0000-0000-0000000000aa');
         DELETE FROM crawl_sessions;",
    )
    .await
    .expect("set up");
    assert_eq!(
        t.count("SELECT count(*) FROM jobs WHERE session_id IS NULL")
            .await,
        1
    );
}

/// `table name -> [(column, type, nullable)]` as `diesel print-schema` would write it.
fn parse_schema_rs(src: &str) -> BTreeMap<String, Columns> {
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, Columns)> = None;
    for line in src.lines().map(str::trim) {
        if let Some((name, _)) = line
            .split_once(" (")
            .filter(|_| line.ends_with('{') && !line.starts_with("diesel"))
        {
            current = Some((name.to_owned(), Vec::new()));
        } else if let (Some((_, cols)), Some((col, ty))) =
            (current.as_mut(), line.split_once(" -> "))
        {
            let ty = ty.trim_end_matches(',');
            let (ty, nullable) = match ty
                .strip_prefix("Nullable<")
                .and_then(|t| t.strip_suffix('>'))
            {
                Some(inner) => (inner, true),
                None => (ty, false),
            };
            cols.push((col.to_owned(), ty.to_owned(), nullable));
        } else if line == "}" {
            if let Some((name, cols)) = current.take() {
                tables.insert(name, cols);
            }
        }
    }
    tables
}

fn diesel_type(pg: &str) -> &str {
    match pg {
        "uuid" => "Uuid",
        "text" => "Text",
        "jsonb" => "Jsonb",
        "integer" => "Int4",
        "bigint" => "Int8",
        "numeric" => "Numeric",
        "double precision" => "Float8",
        "boolean" => "Bool",
        "timestamp with time zone" => "Timestamptz",
        // PostgreSQL arrays may hold NULLs whatever the column says.
        "_text" => "Array<Nullable<Text>>",
        "bytea" => "Bytea",
        "tsvector" => "Tsvector",
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rs_matches_the_migrations() {
    let t = TestDb::new().await;
    let declared = parse_schema_rs(include_str!("../../src/store/schema.rs"));
    let rows = t
        .raw()
        .await
        .query(
            "SELECT table_name::text, column_name::text, \
             CASE WHEN data_type = 'ARRAY' THEN udt_name ELSE data_type END::text, is_nullable = 'YES' FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .expect("columns");
    let mut actual: BTreeMap<String, Columns> = BTreeMap::new();
    for r in rows {
        let ty: String = r.get(2);
        actual
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), diesel_type(&ty).to_owned(), r.get(3)));
    }
    assert_eq!(
        declared, actual,
        "src/store/schema.rs is stale: run `diesel migration run && diesel print-schema` against a scratch database (see diesel.toml)"
    );

    // Where the diesel CLI is installed (CI installs it), compare its exact output too.
    if let Ok(out) = std::process::Command::new("diesel")
        .arg("--version")
        .output()
        && out.status.success()
    {
        let url = pq_url(&t.url);
        let out = std::process::Command::new("diesel")
            .args(["print-schema", "--database-url", &url])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("diesel print-schema");
        assert!(
            out.status.success(),
            "diesel print-schema: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            include_str!("../../src/store/schema.rs"),
            "src/store/schema.rs differs from `diesel print-schema`; regenerate it"
        );
    } else {
        eprintln!("diesel CLI not installed: compared schema.rs structurally only");
    }
}

/// libpq URL for a key/value connection string (the diesel CLI wants a URL).
fn pq_url(kv: &str) -> String {
    let cfg: tokio_postgres::Config = kv.parse().expect("parse");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        None => "localhost".into(),
    };
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('/', "%2F")
            .replace(' ', "%20")
    };
    let mut url = format!(
        "postgres://{}@{}:{}/{}",
        cfg.get_user().unwrap_or("postgres"),
        enc(&host),
        cfg.get_ports().first().copied().unwrap_or(5432),
        cfg.get_dbname().unwrap_or("postgres")
    );
    if let Some(pw) = cfg.get_password() {
        url = url.replacen('@', &format!(":{}@", enc(&String::from_utf8_lossy(pw))), 1);
    }
    url
}
