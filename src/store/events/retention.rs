//! Retention: every replica deletes events older than `EVENT_RETENTION`, in batches; replicas
//! take disjoint rows (`SKIP LOCKED`), so running it everywhere is safe.

use std::time::Duration;

use super::repo;
use crate::store::Db;

const BATCH: i64 = 1_000;

/// Prunes every `every` until the task is aborted.
pub fn spawn(db: Db, keep: Duration, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune_all(&db, keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "deleted events past retention"),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "event retention failed; will retry")
                }
            }
        }
    })
}

/// Deletes every event older than `keep`; returns how many.
pub async fn prune_all(db: &Db, keep: Duration) -> crate::error::AppResult<i64> {
    let before =
        chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let n = crate::store::run_detached({
            let db = db.clone();
            async move {
                let mut conn = db.conn().await?;
                repo::prune(&mut conn, before, BATCH).await
            }
        })
        .await?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}
