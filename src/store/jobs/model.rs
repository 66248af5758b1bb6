use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::lifecycle::Lifecycle;
use crate::store::schema::jobs;

db_enum!(JobStatus {
    Pending => "pending",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub status: JobStatus,
    pub session_id: Option<Uuid>,
    pub payload: JsonText,
    pub progress: f64,
    pub message: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub lease_seconds: i32,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<String>,
    pub result: Option<JsonText>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The kind of job whose lifecycle drives its session's (claim starts it, complete/fail end it).
pub const CRAWL_KIND: &str = "crawl";

impl JobRow {
    /// The session this job drives, when it is a crawl job linked to one.
    pub fn driven_session(&self) -> Option<Uuid> {
        self.session_id.filter(|_| self.kind == CRAWL_KIND)
    }
}

/// Job lifecycle (API.md). RUNNING → PENDING is a retry: `failJob(retry: true)` or an expired
/// lease, while attempts remain.
pub const JOB_LIFECYCLE: Lifecycle<JobStatus> = Lifecycle {
    entity: "job",
    table: "jobs",
    session_col: "t.session_id",
    moves: &[
        (JobStatus::Pending, JobStatus::Running),
        (JobStatus::Running, JobStatus::Completed),
        (JobStatus::Running, JobStatus::Failed),
        (JobStatus::Running, JobStatus::Pending),
        (JobStatus::Pending, JobStatus::Cancelled),
        (JobStatus::Running, JobStatus::Cancelled),
    ],
};

/// Limits on job input, enforced before any statement runs.
pub const MAX_KIND_LEN: usize = 100;
pub const MAX_LEASE_SECONDS: i32 = 86_400;
pub const MAX_ATTEMPTS: i32 = 100;

/// Base delay before a failed job that asked for a retry may be claimed again. The delay is
/// `base × 2^(attempts-1)`, capped at five minutes (computed by the failing statement).
/// `JOB_RETRY_BACKOFF_MS` sets the base (default 1000).
pub fn retry_backoff_base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::env::var("JOB_RETRY_BACKOFF_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|v: &i64| *v >= 0)
            .unwrap_or(1_000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_move_follows_the_contract() {
        use JobStatus as J;
        let ok = [
            (J::Pending, J::Running),
            (J::Running, J::Completed),
            (J::Running, J::Failed),
            (J::Running, J::Pending),
            (J::Pending, J::Cancelled),
            (J::Running, J::Cancelled),
        ];
        for &from in J::ALL {
            for &to in J::ALL {
                assert_eq!(
                    JOB_LIFECYCLE.can_move(from, to),
                    ok.contains(&(from, to)),
                    "job {from:?} -> {to:?}"
                );
            }
        }
    }
}
