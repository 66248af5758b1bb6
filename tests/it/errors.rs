//! Error codes as clients see them, end to end.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{TestDb, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_unavailable_not_a_hang() {
    let t = TestDb::with_pool(1, 300).await;
    t.admin().await;
    let held = t.db.conn().await.expect("the only connection");
    let started = Instant::now();
    let (v, _) = tokio::time::timeout(
        Duration::from_secs(10),
        t.gql("{ sessions { totalCount } }", json!({})),
    )
    .await
    .expect("the request must not hang");
    assert_eq!(code(&v), "UNAVAILABLE", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    // Once the connection is back, the same request succeeds.
    let (v, _) = t.gql("{ sessions { totalCount } }", json!({})).await;
    assert!(v.get("errors").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    let pool = bughive_gateway::store::build_pool(&bughive_gateway::config::DbConfig {
        url: "host=/nonexistent-bughive-socket-dir user=nobody dbname=nothing".into(),
        pool_size: 2,
        pool_timeout_ms: 500,
        statement_timeout_ms: 1_000,
    })
    .expect("pool builds lazily");
    let db = bughive_gateway::store::Db::new(pool);
    let schema = bughive_gateway::api::build_schema();
    let (resp, _) = bughive_gateway::api::execute(
        &schema,
        &db,
        crate::harness::anonymous_admin(),
        async_graphql::Request::new("{ sessions { totalCount } }"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&resp.to_json()).expect("json");
    assert_eq!(code(&v), "UNAVAILABLE", "{v}");
    assert!(!v["errors"][0]["message"].as_str().unwrap_or("").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_set_on_pooled_connections() {
    let t = TestDb::new().await;
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        statement_timeout: String,
    }
    let mut conn = t.db.conn().await.expect("conn");
    let s: Setting = diesel::sql_query("SHOW statement_timeout")
        .get_result(&mut conn)
        .await
        .expect("show");
    assert_eq!(s.statement_timeout, "30s");
}
