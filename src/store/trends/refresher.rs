//! Refreshes the trend rollups every `interval` on every replica; the advisory lock in
//! [`super::repo::refresh`] keeps it to one at a time, and a replica skips its turn when
//! another refreshed within the last half interval.

use std::time::Duration;

use crate::store::Db;

pub fn spawn(db: Db, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            match super::repo::refresh(&db, interval / 2).await {
                Ok(true) => tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "refreshed the trend rollups"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = ?e, "refreshing the trend rollups failed; will retry")
                }
            }
        }
    })
}
