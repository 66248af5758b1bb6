//! The rate limit shared by replicas through a real Redis (started here from the system's
//! `redis-server`), against the per-replica default.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bughive_gateway::http::HttpConfig;
use serde_json::json;

use crate::access::{hs256, post, token};
use crate::harness::{TestDb, code};

struct Redis {
    child: Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: the shared rate-limit test needs it (apt-get install redis-server)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    }
}

fn limited(redis: Option<&str>) -> HttpConfig {
    HttpConfig {
        rate_per_second: 1,
        rate_burst: 2,
        redis_url: redis.map(str::to_owned),
        ..Default::default()
    }
}

/// Two requests on one replica and one on another: with per-replica buckets the third passes,
/// with the shared bucket it is refused.
async fn third_request(t: &TestDb, redis: Option<&str>, caller: &str) -> (u16, String) {
    let a = t.serve_with(hs256(), limited(redis)).await;
    let b = t.serve_with(hs256(), limited(redis)).await;
    let bearer = token(caller, "user");
    for addr in [a, a] {
        let (status, v) = post(addr, Some(&bearer), "{ me { id } }", json!({})).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = post(b, Some(&bearer), "{ me { id } }", json!({})).await;
    (status, code(&v).to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bucket_through_redis() {
    let t = TestDb::new().await;
    let redis = start_redis();
    let (status, code_) = third_request(&t, None, "per-replica").await;
    assert_eq!(
        status, 200,
        "{code_}: per-replica buckets allow N times the rate"
    );
    let (status, code_) = third_request(&t, Some(&redis.url), "shared").await;
    assert_eq!((status, code_.as_str()), (429, "RATE_LIMITED"));

    // Redis gone: each replica falls back to its own bucket, neither failing nor unlimited.
    let url = redis.url.clone();
    drop(redis);
    let a = t.serve_with(hs256(), limited(Some(&url))).await;
    let bearer = token("fallback", "user");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(a, Some(&bearer), "{ me { id } }", json!({})).await.0);
    }
    assert_eq!(statuses, [200, 200, 429]);
}
