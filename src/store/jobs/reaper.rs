//! The lease reaper: a background task on every replica. Reapers on several replicas split the
//! expired jobs between them (`FOR UPDATE SKIP LOCKED`), so running one everywhere is safe. The
//! same tick times out agent executions past their deadline (`store::agents::reaper`).

use std::time::Duration;

use super::repo;
use crate::store::Db;

/// Jobs reaped per statement; a bigger backlog is worked off in consecutive statements.
const BATCH: i64 = 500;

/// Reaps expired leases every `interval` until the task is aborted.
pub fn spawn(db: Db, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match reap_all(&db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "reaped expired job leases"),
                Err(e) => tracing::warn!(error = ?e, "lease reaper failed; will retry"),
            }
            match crate::store::agents::reaper::reap_all(&db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(executions = n, "timed out overdue agent executions"),
                Err(e) => tracing::warn!(error = ?e, "execution reaper failed; will retry"),
            }
        }
    })
}

/// Reaps every job whose lease has expired; returns how many.
pub async fn reap_all(db: &Db) -> crate::error::AppResult<usize> {
    let mut total = 0;
    loop {
        let reaped = crate::store::run_detached({
            let db = db.clone();
            async move {
                let mut conn = db.conn().await?;
                repo::reap_expired(
                    &mut conn,
                    crate::store::scope::Author::system("system:reaper"),
                    BATCH,
                )
                .await
            }
        })
        .await?;
        total += reaped.len();
        if (reaped.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}
