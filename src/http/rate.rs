//! The per-caller rate limit: a token bucket per subject (GCRA). In-process by default, so N
//! replicas allow N times the rate; with `REDIS_URL` the buckets live in Redis and every replica
//! draws from the same one. Should Redis fail, each replica falls back to its own buckets
//! rather than refusing or admitting everyone.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `RATE_LIMIT_PER_SECOND` requests per second per caller, bursts of `RATE_LIMIT_BURST`.
pub struct CallerLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
    shared: Option<Shared>,
}

/// How long a check may wait for Redis before the replica's own bucket decides.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after it failed.
const REDIS_RETRY: Duration = Duration::from_secs(5);

/// GCRA in one atomic script, on Redis's clock so replicas' clocks need not agree. Returns 0
/// when a token was taken, else the milliseconds to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1)
return 0
";

struct Shared {
    /// After a failure Redis is left alone for a while, so an outage costs one slow request
    /// per interval, not one per request.
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    interval_ms: f64,
    tolerance_ms: f64,
}

impl Shared {
    async fn take(&self, caller: &str) -> redis::RedisResult<Result<(), Duration>> {
        let conn = self
            .conn
            .get_or_try_init(|| self.client.get_connection_manager())
            .await?;
        let mut conn = conn.clone();
        let wait: u64 = self
            .script
            .key(format!("bughive:rate:{caller}"))
            .arg(self.interval_ms)
            .arg(self.tolerance_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(if wait == 0 {
            Ok(())
        } else {
            Err(Duration::from_millis(wait))
        })
    }
}

impl CallerLimiter {
    /// `per_second == 0` turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        CallerLimiter {
            limiter,
            checks: AtomicU64::new(0),
            shared: None,
        }
    }

    /// The same limit, shared by every replica through the Redis at `url`.
    pub fn shared(per_second: u32, burst: u32, url: &str) -> anyhow::Result<Self> {
        let mut limiter = Self::new(per_second, burst);
        if per_second > 0 {
            let client =
                redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL {url:?}: {e}"))?;
            let interval_ms = 1000.0 / f64::from(per_second);
            limiter.shared = Some(Shared {
                down_until: std::sync::Mutex::new(None),
                client,
                conn: tokio::sync::OnceCell::new(),
                script: redis::Script::new(GCRA),
                interval_ms,
                tolerance_ms: interval_ms * f64::from(burst.max(per_second)),
            });
        }
        Ok(limiter)
    }

    pub fn from_env() -> anyhow::Result<Self> {
        let rate = crate::config::env_num("RATE_LIMIT_PER_SECOND", 100u32)?;
        let burst = crate::config::env_num("RATE_LIMIT_BURST", 200u32)?;
        Ok(Self::new(rate, burst))
    }

    /// Takes a token for `caller`, or says how long to wait for one.
    pub async fn check(&self, caller: &str) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            let now = std::time::Instant::now();
            let up = shared
                .down_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|until| now >= until);
            if up {
                let took = tokio::time::timeout(REDIS_TIMEOUT, shared.take(caller)).await;
                match took {
                    Ok(Ok(verdict)) => return verdict,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "shared rate limit unavailable; limiting per replica");
                    }
                    Err(_) => tracing::warn!("shared rate limit timed out; limiting per replica"),
                }
                metrics::counter!("bughive_rate_limit_redis_failures_total").increment(1);
                *shared.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(now + REDIS_RETRY);
            }
        }
        self.check_local(caller)
    }

    fn check_local(&self, caller: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Forget idle callers now and then, so the table does not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&caller.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::CallerLimiter;

    #[test]
    fn each_caller_has_its_own_bucket() {
        let l = CallerLimiter::new(1, 2);
        assert!(l.check_local("a").is_ok());
        assert!(l.check_local("a").is_ok());
        let wait = l.check_local("a").expect_err("burst used up");
        assert!(wait.as_millis() > 0 && wait.as_secs() <= 1);
        assert!(l.check_local("b").is_ok(), "another caller is not limited");
        let off = CallerLimiter::new(0, 0);
        assert!((0..1000).all(|_| off.check_local("a").is_ok()));
    }
}
