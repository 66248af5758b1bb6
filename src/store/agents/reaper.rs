//! Executions past their deadline: the job reaper, which every replica runs, calls
//! [`reap_all`] on each tick.

use super::repo;
use crate::store::Db;
use crate::store::scope::Author;

/// Executions timed out per statement; a bigger backlog is worked off in consecutive statements.
const BATCH: i64 = 500;

/// Moves every RUNNING execution past its deadline to TIMEOUT; returns how many.
pub async fn reap_all(db: &Db) -> crate::error::AppResult<usize> {
    let mut total = 0;
    loop {
        let reaped = crate::store::run_detached({
            let db = db.clone();
            async move {
                let mut conn = db.conn().await?;
                repo::reap_overdue(&mut conn, Author::system("system:reaper"), BATCH).await
            }
        })
        .await?;
        total += reaped.len();
        if (reaped.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}
