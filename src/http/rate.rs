//! The per-caller rate limit: a token bucket per subject (governor's GCRA), in-process.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `RATE_LIMIT_PER_SECOND` requests per second per caller, bursts of `RATE_LIMIT_BURST`.
pub struct CallerLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
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
        }
    }

    pub fn from_env() -> anyhow::Result<Self> {
        let rate = crate::config::env_num("RATE_LIMIT_PER_SECOND", 100u32)?;
        let burst = crate::config::env_num("RATE_LIMIT_BURST", 200u32)?;
        Ok(Self::new(rate, burst))
    }

    /// Takes a token for `caller`, or says how long to wait for one.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
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
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").expect_err("burst used up");
        assert!(wait.as_millis() > 0 && wait.as_secs() <= 1);
        assert!(l.check("b").is_ok(), "another caller is not limited");
        let off = CallerLimiter::new(0, 0);
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }
}
