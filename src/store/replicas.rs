//! Read replicas: which streaming standby may answer a read, and how far behind each one is.
//!
//! Every replica has its own pool. A checker task polls each standby's replay position and
//! the primary's WAL position; a replica is used for reads only while it answers and its
//! staleness stays within `DB_READ_MAX_LAG_MS`. Staleness is measured against the gateway's own
//! samples of the primary's position rather than `now() - pg_last_xact_replay_timestamp()`,
//! which grows without bound on an idle primary and would mark a caught-up replica as lagging.
//!
//! Read your writes: a request may carry the WAL position its client last wrote at; it is
//! served by a replica only once that replica's replay position is known to have reached it.
//! Replay positions only move forward, so a position seen by the checker is a safe lower bound.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Nullable, Text};

use super::{Conn, Pool};
use crate::config::DbConfig;

/// A WAL position (`pg_lsn`), ordered as PostgreSQL orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a WAL position such as 0/16B3748");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What the checker last saw of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    /// `host:port/dbname`, without credentials.
    pub name: String,
    /// Answered its last check (and no request has found it down since).
    pub up: bool,
    /// Up and within the lag bound: reads may go to it.
    pub usable: bool,
    /// How far behind the primary it is; unknown until it has been checked once.
    pub lag: Option<Duration>,
    pub replay_lsn: Lsn,
    /// Why it is down, when it is.
    pub error: Option<String>,
}

struct Replica {
    pool: Pool,
    name: String,
    up: AtomicBool,
    usable: AtomicBool,
    replay: AtomicU64,
    /// Lag in microseconds, `u64::MAX` when unknown.
    lag_us: AtomicU64,
    error: Mutex<Option<String>>,
}

/// The read replicas of one gateway process.
pub struct Replicas {
    list: Vec<Replica>,
    max_lag: Duration,
    every: Duration,
    next: AtomicUsize,
    /// Recent samples of the primary's WAL position, oldest first.
    primary: Mutex<VecDeque<(Instant, Lsn)>>,
}

/// How long a replica check may take before the replica counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Replicas {
    /// A pool per replica URL (lazily connected: a replica that is down at start-up is only
    /// skipped). `max_lag` bounds staleness; `every` is the check interval.
    pub fn new(
        urls: &[String],
        base: &DbConfig,
        max_lag: Duration,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let mut list = Vec::with_capacity(urls.len());
        for url in urls {
            let name = describe(url)?;
            let cfg = DbConfig {
                url: url.clone(),
                // A replica that does not answer quickly is skipped for the primary, so its
                // checkouts must fail fast rather than wait the primary's full timeout.
                pool_timeout_ms: base.pool_timeout_ms.min(1_000),
                ..base.clone()
            };
            list.push(Replica {
                pool: super::build_pool(&cfg)?,
                name,
                up: AtomicBool::new(false),
                usable: AtomicBool::new(false),
                replay: AtomicU64::new(0),
                lag_us: AtomicU64::new(u64::MAX),
                error: Mutex::new(Some("not checked yet".into())),
            });
        }
        Ok(Replicas {
            list,
            max_lag,
            every,
            next: AtomicUsize::new(0),
            primary: Mutex::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A usable replica that has replayed `min_lsn`, round robin; `None` means the primary.
    pub fn pick(&self, min_lsn: Option<Lsn>) -> Option<usize> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let r = &self.list[i];
            r.usable.load(Ordering::Relaxed)
                && min_lsn.is_none_or(|m| Lsn(r.replay.load(Ordering::Relaxed)) >= m)
        })
    }

    /// A connection to replica `i`; on failure the replica is marked down until its next
    /// successful check, and the caller falls back to the primary.
    pub(super) async fn conn(&self, i: usize) -> Option<Conn> {
        let r = self.list.get(i)?;
        match r.pool.get().await {
            Ok(c) => Some(c),
            Err(e) => {
                self.mark_down(i, format!("connection failed: {e}"));
                None
            }
        }
    }

    fn mark_down(&self, i: usize, why: String) {
        let Some(r) = self.list.get(i) else { return };
        if r.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(replica = %r.name, error = %why, "read replica down; reading from the primary");
        }
        r.usable.store(false, Ordering::Relaxed);
        *r.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.list
            .iter()
            .map(|r| {
                let lag_us = r.lag_us.load(Ordering::Relaxed);
                ReplicaStatus {
                    name: r.name.clone(),
                    up: r.up.load(Ordering::Relaxed),
                    usable: r.usable.load(Ordering::Relaxed),
                    lag: (lag_us != u64::MAX).then(|| Duration::from_micros(lag_us)),
                    replay_lsn: Lsn(r.replay.load(Ordering::Relaxed)),
                    error: r.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }
            })
            .collect()
    }

    /// One round of checks: the primary's position, then every replica's.
    pub async fn check(&self, primary: &Pool) {
        let now = Instant::now();
        if let Ok(Ok(lsn)) = tokio::time::timeout(CHECK_TIMEOUT, primary_lsn(primary)).await {
            let mut samples = self.primary.lock().unwrap_or_else(|e| e.into_inner());
            samples.push_back((now, lsn));
            // Enough history to measure any lag up to well past the bound.
            let keep = (self.max_lag * 4).max(Duration::from_secs(60));
            while samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > keep)
                && samples.len() > 1
            {
                samples.pop_front();
            }
        }
        let checks = self.list.iter().map(|r| async move {
            tokio::time::timeout(CHECK_TIMEOUT, replay_lsn(&r.pool))
                .await
                .unwrap_or_else(|_| Err("check timed out".into()))
        });
        let results = futures_util::future::join_all(checks).await;
        for (i, result) in results.into_iter().enumerate() {
            let r = &self.list[i];
            match result {
                Ok(replay) => {
                    r.replay.fetch_max(replay.0, Ordering::Relaxed);
                    let lag = self.lag_of(replay, now);
                    r.lag_us.store(
                        lag.map_or(u64::MAX, |l| l.as_micros() as u64),
                        Ordering::Relaxed,
                    );
                    let within = lag.is_some_and(|l| l <= self.max_lag);
                    if !r.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(replica = %r.name, "read replica up");
                    }
                    if r.usable.swap(within, Ordering::Relaxed) && !within {
                        tracing::warn!(replica = %r.name, lag_ms = lag.map(|l| l.as_millis() as u64), "read replica lags past DB_READ_MAX_LAG_MS; reading from the primary");
                    }
                    *r.error.lock().unwrap_or_else(|e| e.into_inner()) = match lag {
                        _ if within => None,
                        Some(_) => Some("lagging past DB_READ_MAX_LAG_MS".to_owned()),
                        None => Some("catching up with the primary".to_owned()),
                    };
                }
                Err(e) => self.mark_down(i, e),
            }
        }
    }

    /// How stale a replica at `replay` is: zero when it has replayed the newest sample of the
    /// primary, else the age of the first sample it has not replayed. `None` (unknown, so not
    /// usable) when it has not even replayed the oldest sample: right after start-up that
    /// sample is only milliseconds old but the replica may be arbitrarily far behind, e.g.
    /// without the tables this gateway's migrations just created.
    fn lag_of(&self, replay: Lsn, now: Instant) -> Option<Duration> {
        let samples = self.primary.lock().unwrap_or_else(|e| e.into_inner());
        let (_, newest) = samples.back()?;
        if replay >= *newest {
            return Some(Duration::ZERO);
        }
        let (_, oldest) = samples.front()?;
        if replay < *oldest {
            return None;
        }
        let behind_since = samples
            .iter()
            .find(|(_, lsn)| *lsn > replay)
            .map(|(t, _)| *t)?;
        Some(now.duration_since(behind_since))
    }

    /// Checks once now (so the first requests can already use the replicas), then every
    /// interval until the task is aborted.
    pub fn spawn_checker(self: &Arc<Self>, primary: Pool) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.check(&primary).await;
            }
        })
    }

    /// Closes every replica pool.
    pub fn close(&self) {
        for r in &self.list {
            r.pool.close();
        }
    }
}

/// `host:port/dbname` of a connection string, for logs, `/ready` and metric labels.
fn describe(url: &str) -> anyhow::Result<String> {
    let (cfg, _) =
        super::tls::configure(url).map_err(|e| anyhow::anyhow!("DATABASE_READ_URL: {e}"))?;
    let host = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    Ok(format!(
        "{host}:{port}/{}",
        cfg.get_dbname().unwrap_or_default()
    ))
}

async fn primary_lsn(pool: &Pool) -> Result<Lsn, String> {
    let mut c = pool.get().await.map_err(|e| e.to_string())?;
    current_lsn(&mut c).await.map_err(|e| e.message())
}

/// The replay position of a standby; a server that is not in recovery (a promoted replica)
/// is as current as its own WAL.
async fn replay_lsn(pool: &Pool) -> Result<Lsn, String> {
    use diesel_async::RunQueryDsl;
    let mut c = pool.get().await.map_err(|e| e.to_string())?;
    let (_, text): (bool, Option<String>) =
        diesel::select(diesel::dsl::sql::<(Bool, Nullable<Text>)>(
            "pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
         ELSE pg_current_wal_lsn() END)::text",
        ))
        .get_result(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    text.map_or(Ok(Lsn(0)), |t| t.parse())
}

/// The primary's current WAL position: after a commit, at or past the commit's record.
pub async fn current_lsn(conn: &mut Conn) -> Result<Lsn, crate::error::AppError> {
    use diesel_async::RunQueryDsl;
    let text: String = diesel::select(diesel::dsl::sql::<Text>("pg_current_wal_lsn()::text"))
        .get_result(conn)
        .await?;
    text.parse().map_err(crate::error::AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_and_orders() {
        let a: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(a.to_string(), "0/16B3748");
        let b: Lsn = "1/0".parse().unwrap();
        assert!(b > a);
        assert_eq!(b.0, 1 << 32);
        for bad in ["", "0", "/1", "0/", "G/1", "0/123456789", "x"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lag_is_unknown_until_the_replica_reaches_the_oldest_sample() {
        let r = Replicas::new(
            &[],
            &DbConfig::from_env(String::new()).unwrap(),
            Duration::from_secs(2),
            Duration::from_millis(500),
        )
        .unwrap();
        let now = Instant::now();
        let t0 = now - Duration::from_secs(3);
        let t1 = now - Duration::from_secs(1);
        r.primary
            .lock()
            .unwrap()
            .extend([(t0, Lsn(100)), (t1, Lsn(200))]);
        // Behind the first sample the gateway ever took: how far behind is anyone's guess.
        assert_eq!(r.lag_of(Lsn(50), now), None);
        assert_eq!(r.lag_of(Lsn(150), now), Some(Duration::from_secs(1)));
        assert_eq!(r.lag_of(Lsn(100), now), Some(Duration::from_secs(1)));
        assert_eq!(r.lag_of(Lsn(200), now), Some(Duration::ZERO));
    }
}
