//! The command line as a user runs it, against a test database.

use std::process::{Command, Output};

use crate::harness::TestDb;

/// A small seed plan: 3 sessions x 4 pages x 2 bugs = 39 rows.
const SEED: &[&str] = &[
    "seed",
    "--sessions",
    "3",
    "--pages-per-session",
    "4",
    "--bugs-per-page",
    "2",
];

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the gateway binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_revert_seed_and_schema() {
    let t = TestDb::new().await;
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('crawl_sessions', 'pages', 'bugs', 'jobs')";

    // Newest first: users and audit, the jobs migration, then the core schema.
    for left in [4, 3, 0] {
        let out = run(&t.url, &["migrate", "--revert"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(t.count(tables).await, left);
    }
    let out = run(&t.url, &["migrate", "--revert"]);
    assert!(
        !out.status.success(),
        "reverting with nothing applied must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No migrations have been run"));

    let out = run(&t.url, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.count(tables).await, 4);

    let out = run(&t.url, SEED);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 39 rows"));
    assert_eq!(t.count("SELECT count(*) FROM bugs").await, 24);
    // Deterministic ids: seeding again adds nothing.
    let out = run(&t.url, SEED);
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 0 rows"));

    let out = run(&t.url, &["schema"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        bughive_gateway::graphql::sdl()
    );
}

#[test]
fn a_bad_database_url_is_one_clear_error() {
    let out = run("postgres://nobody@127.0.0.1:1/none", &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:"), "{err}");
}
