//! Job queries. Every move is one conditional `UPDATE … WHERE status = ANY(allowed_from)`; a
//! crawl job's session moves in the same transaction.

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::{JOB_LIFECYCLE, JobRow, JobStatus, retry_backoff_base_ms};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry};
use crate::store::batch::ById;
use crate::store::credentials::cipher::Keyring;
use crate::store::lifecycle::Locked;
use crate::store::row::Cols;
use crate::store::schema::jobs::dsl as j;
use crate::store::scope::{Author, Scope};
use crate::store::sessions::model::SessionStatus;
use crate::store::sessions::repo as sessions;
use crate::store::sql::{Bind, Sql};

/// Jobs by id, whoever may see them: for the live-update hub. Requests use [`visible_by_ids`].
pub async fn by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<JobRow>> {
    visible_by_ids(conn, &Scope::All, ids).await
}

/// Jobs by id that the scope may see: a user sees the jobs of sessions it may see.
pub async fn visible_by_ids(
    conn: &mut Conn,
    scope: &Scope,
    ids: &[Uuid],
) -> AppResult<Vec<JobRow>> {
    let mut q = j::jobs
        .filter(j::id.eq_any(ids))
        .select(JobRow::as_select())
        .into_boxed();
    if let Some(v) = scope.visible(j::session_id) {
        q = q.filter(v);
    }
    Ok(q.load(conn).await?)
}

impl ById for JobRow {
    fn id(&self) -> Uuid {
        self.id
    }

    // Jobs have no optional columns.
    async fn by_ids(conn: &mut Conn, scope: &Scope, ids: &[Uuid], _: Cols) -> AppResult<Vec<Self>> {
        visible_by_ids(conn, scope, ids).await
    }
}

pub struct NewJob {
    pub kind: String,
    pub session_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
}

/// Creates a PENDING job. A crawl job may only be queued for a session that is still PENDING or
/// RUNNING; the session row is locked until commit so it cannot end in between.
pub async fn enqueue(conn: &mut Conn, actor: Author, job: NewJob) -> AppResult<JobRow> {
    conn.transaction::<JobRow, AppError, _>(async move |c| {
        let scope = actor.scope;
        match job.session_id {
            Some(sid) if job.kind == super::model::CRAWL_KIND => {
                crate::store::sessions::repo::lock_ingesting_session(c, &scope, sid, "enqueueJob")
                    .await?;
            }
            Some(sid)
                if sessions::visible_by_ids(c, &scope, &[sid])
                    .await?
                    .is_empty() =>
            {
                return Err(AppError::NotFound {
                    entity: "session",
                    id: sid.to_string(),
                });
            }
            Some(_) => {}
            None if scope != Scope::All => {
                return Err(AppError::Forbidden(
                    "users may only queue jobs of their own sessions".into(),
                ));
            }
            None => {}
        }
        let id = Uuid::now_v7();
        let mut q =
            Sql::new("INSERT INTO jobs (id, kind, session_id, payload, max_attempts) VALUES (");
        q.bind(Bind::Uuid(id))
            .push(", ")
            .bind(Bind::Text(job.kind))
            .push(", ")
            .bind(Bind::NullableUuid(job.session_id))
            .push(", ")
            .bind(Bind::Json(job.payload))
            .push(", ")
            .bind(Bind::Int(job.max_attempts))
            .push(") RETURNING *");
        let row: JobRow = q.get_result(c).await?;
        audit::record(c, &actor, job_entry("enqueueJob", id, None)).await?;
        Ok(row)
    })
    .await
}

/// Fencing for workers: `claimJob` hands out `attempts`, and a worker that passes it back as
/// `attempt` is refused once the job has been claimed again (its lease expired and another
/// worker took over), instead of overwriting the new run. The row is locked, so this is exact.
fn check_attempt(locked: &Locked<JobStatus>, attempt: Option<i32>) -> AppResult<()> {
    let Some(expected) = attempt else {
        return Ok(());
    };
    let current = serde_json::from_str::<serde_json::Value>(&locked.old)
        .ok()
        .and_then(|v| v["attempts"].as_i64());
    if current == Some(i64::from(expected)) {
        Ok(())
    } else {
        Err(AppError::Conflict(format!(
            "attempt {expected} of this job is over: it is now on attempt {}",
            current.unwrap_or_default()
        )))
    }
}

fn job_entry(action: &'static str, id: Uuid, old: Option<String>) -> Entry {
    Entry::row(action, "job", id, old, "jobs")
}

/// Whether a claim hands out the crawled site's credentials of a crawl job's session.
pub enum Credentials {
    Withheld,
    /// To a service worker: opened with this keyring (with none configured, or without the
    /// key that sealed them, the job is deferred instead of handed out).
    Revealed(Option<Arc<Keyring>>),
}

/// A claimed job, with its session's credentials when they were revealed and exist.
pub struct Claimed {
    pub job: JobRow,
    pub credentials: Option<serde_json::Value>,
}

/// Claims the oldest claimable PENDING job of `kinds`: `FOR UPDATE SKIP LOCKED`, so concurrent
/// workers never wait on, or both get, the same job. Claiming a crawl job starts its session in
/// the same transaction; a crawl job whose session already ended is cancelled instead and the
/// next job is tried. Revealed credentials are opened before the job is claimed; a job whose
/// credentials do not open is deferred (see [`defer`]) and the next one is tried.
pub async fn claim(
    conn: &mut Conn,
    actor: Author,
    kinds: Vec<String>,
    lease_seconds: i32,
    worker: Option<String>,
    credentials: Credentials,
) -> AppResult<Option<Claimed>> {
    conn.transaction::<Option<Claimed>, AppError, _>(async move |c| {
        let claimed = async |c: &mut Conn,
                             job: JobRow,
                             revealed: Option<serde_json::Value>|
                     -> AppResult<Option<Claimed>> {
            let old = serde_json::json!({ "status": "pending", "attempts": job.attempts - 1 });
            audit::record(
                c,
                &actor,
                job_entry("claimJob", job.id, Some(old.to_string())),
            )
            .await?;
            Ok(Some(Claimed {
                job,
                credentials: revealed,
            }))
        };
        for _ in 0..16 {
            let mut revealed = None;
            let mut q = Sql::new("WITH next AS (");
            if let Credentials::Revealed(keyring) = &credentials {
                // The candidate's credentials are opened before it is claimed: one that cannot
                // be opened (no key, an unknown key) is put back for a minute with the reason,
                // and the next job is tried, so it never blocks the queue.
                let mut pick = Sql::new(
                    "SELECT id, kind, session_id FROM jobs WHERE status = 'pending' AND kind = ANY(",
                );
                pick.bind(Bind::Texts(kinds.clone())).push(
                    ") AND run_after <= now() ORDER BY created_at, id LIMIT 1 \
                     FOR UPDATE SKIP LOCKED",
                );
                let Some(next) = pick.get_result::<Candidate>(c).await.optional()? else {
                    return Ok(None);
                };
                if let Some(sid) = next.session_id.filter(|_| next.kind == super::model::CRAWL_KIND)
                {
                    match crate::store::credentials::repo::open(c, keyring.as_deref(), sid).await {
                        Ok(v) => revealed = v,
                        Err(e) => {
                            defer(c, &actor, next.id, e).await?;
                            continue;
                        }
                    }
                }
                q.push("SELECT ").bind(Bind::Uuid(next.id)).push("::uuid AS id");
            } else {
                q.push("SELECT id FROM jobs WHERE status = 'pending' AND kind = ANY(")
                    .bind(Bind::Texts(kinds.clone()))
                    .push(
                        ") AND run_after <= now() ORDER BY created_at, id LIMIT 1 \
                         FOR UPDATE SKIP LOCKED",
                    );
            }
            q.push(
                ") UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                 lease_seconds = ",
            )
                .bind(Bind::Int(lease_seconds))
                .push(", lease_expires_at = now() + make_interval(secs => ")
                .bind(Bind::Int(lease_seconds))
                .push("), claimed_by = ")
                .bind(Bind::NullableText(worker.clone()))
                .push(
                    ", started_at = coalesce(started_at, now()), error = NULL \
                     FROM next WHERE jobs.id = next.id AND jobs.status = ANY(",
                )
                .bind(Bind::Texts(JOB_LIFECYCLE.allowed_from(JobStatus::Running)))
                .push(") RETURNING jobs.*");
            let Some(job) = q.get_result::<JobRow>(c).await.optional()? else {
                return Ok(None);
            };
            let Some(sid) = job.driven_session() else {
                return claimed(c, job, revealed).await;
            };
            if sessions::try_transition(c, sid, SessionStatus::Running, None)
                .await?
                .is_some()
            {
                return claimed(c, job, revealed).await;
            }
            let current = crate::store::sessions::model::SESSION_LIFECYCLE
                .current(c, sid)
                .await?;
            match current {
                Some(SessionStatus::Running) => return claimed(c, job, revealed).await,
                // The session ended (or vanished) before its crawl ran: nothing left to drive.
                other => {
                    let why = match other {
                        Some(s) => format!("session is {}", s.as_graphql()),
                        None => "session no longer exists".into(),
                    };
                    let mut q = Sql::new(
                        "UPDATE jobs SET status = 'cancelled', finished_at = now(), \
                         lease_expires_at = NULL, error = ",
                    );
                    q.bind(Bind::Text(why))
                        .push(" WHERE id = ")
                        .bind(Bind::Uuid(job.id));
                    q.execute(c).await?;
                    let old = serde_json::json!({ "status": "pending" });
                    audit::record(
                        c,
                        &actor,
                        job_entry("cancelJob", job.id, Some(old.to_string())),
                    )
                    .await?;
                }
            }
        }
        Ok(None)
    })
    .await
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    session_id: Option<Uuid>,
}

/// Puts a PENDING job back for a minute, with why it could not be handed out.
async fn defer(c: &mut Conn, actor: &Author, id: Uuid, why: AppError) -> AppResult<()> {
    let reason = match why {
        AppError::Unavailable(m) => m,
        _ => "the session's credentials do not open under this gateway's keys".into(),
    };
    tracing::warn!(job = %id, %reason, "crawl job deferred: its credentials cannot be opened");
    let mut q = Sql::new("UPDATE jobs SET run_after = now() + interval '1 minute', error = ");
    q.bind(Bind::Text(reason))
        .push(" WHERE id = ")
        .bind(Bind::Uuid(id));
    q.execute(c).await?;
    audit::record(c, actor, job_entry("deferJob", id, None)).await
}

/// Extends the lease by its original length and records progress; RUNNING jobs only.
pub async fn heartbeat(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    progress: f64,
    message: Option<String>,
    attempt: Option<i32>,
) -> AppResult<JobRow> {
    let mut q = Sql::new("UPDATE jobs SET progress = ");
    q.bind(Bind::Float(progress))
        .push(", message = coalesce(")
        .bind(Bind::NullableText(message))
        .push(
            ", message), lease_expires_at = now() + make_interval(secs => lease_seconds) \
             WHERE id = ",
        )
        .bind(Bind::Uuid(id))
        .push(" AND status = ANY(")
        .bind(Bind::Texts(vec![JobStatus::Running.as_db().into()]))
        .push(") RETURNING *");
    conn.transaction::<JobRow, AppError, _>(async move |c| {
        let locked = JOB_LIFECYCLE.lock(c, id, &actor.scope).await?;
        check_attempt(&locked, attempt)?;
        let Some(job) = q.get_result::<JobRow>(c).await.optional()? else {
            // Not a move (the job stays RUNNING): the refusal names the action, like
            // `recordPages` does.
            return Err(AppError::InvalidTransition {
                entity: "job",
                from: locked.status.as_graphql(),
                to: "heartbeatJob".into(),
            });
        };
        audit::record(c, &actor, job_entry("heartbeatJob", id, Some(locked.old))).await?;
        Ok(job)
    })
    .await
}

/// RUNNING → COMPLETED with its result; a crawl job completes its session too.
pub async fn complete(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    result: Option<serde_json::Value>,
    attempt: Option<i32>,
) -> AppResult<JobRow> {
    conn.transaction::<JobRow, AppError, _>(async move |c| {
        let locked = JOB_LIFECYCLE.lock(c, id, &actor.scope).await?;
        check_attempt(&locked, attempt)?;
        let mut q = Sql::new(
            "UPDATE jobs SET status = 'completed', progress = 1, finished_at = now(), \
             lease_expires_at = NULL, result = ",
        );
        q.bind(Bind::NullableJson(result))
            .push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(
                JOB_LIFECYCLE.allowed_from(JobStatus::Completed),
            ))
            .push(") RETURNING *");
        let job: JobRow = JOB_LIFECYCLE
            .apply(c, q, &locked, JobStatus::Completed)
            .await?;
        if let Some(sid) = job.driven_session() {
            sessions::try_transition(c, sid, SessionStatus::Completed, None).await?;
        }
        audit::record(c, &actor, job_entry("completeJob", id, Some(locked.old))).await?;
        Ok(job)
    })
    .await
}

/// RUNNING → PENDING after a backoff when `retry` is asked and attempts remain, otherwise
/// RUNNING → FAILED (a crawl job then fails its session with the same error). The choice is made
/// by the one conditional statement, on the row's own `attempts`.
pub async fn fail(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    error: String,
    retry: bool,
    attempt: Option<i32>,
) -> AppResult<JobRow> {
    conn.transaction::<JobRow, AppError, _>(async move |c| {
        let locked = JOB_LIFECYCLE.lock(c, id, &actor.scope).await?;
        check_attempt(&locked, attempt)?;
        // Retry when asked and attempts remain; the backoff doubles with each attempt.
        let mut q = Sql::new("UPDATE jobs SET status = CASE WHEN ");
        q.bind(Bind::Bool(retry))
            .push(
                " AND attempts < max_attempts THEN 'pending' ELSE 'failed' END, \
                 run_after = now() + make_interval(secs => least(",
            )
            .bind(Bind::BigInt(retry_backoff_base_ms()))
            .push(
                " * power(2, attempts - 1), 300000) / 1000.0), \
                 finished_at = CASE WHEN ",
            )
            .bind(Bind::Bool(retry))
            .push(
                " AND attempts < max_attempts THEN NULL ELSE now() END, \
                 lease_expires_at = NULL, claimed_by = NULL, error = ",
            )
            .bind(Bind::Text(error.clone()))
            .push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(JOB_LIFECYCLE.allowed_from(JobStatus::Failed)))
            .push(") RETURNING *");
        let job: JobRow = JOB_LIFECYCLE
            .apply(c, q, &locked, JobStatus::Failed)
            .await?;
        if job.status == JobStatus::Failed
            && let Some(sid) = job.driven_session()
        {
            sessions::try_transition(c, sid, SessionStatus::Failed, Some(error)).await?;
        }
        audit::record(c, &actor, job_entry("failJob", id, Some(locked.old))).await?;
        Ok(job)
    })
    .await
}

/// PENDING or RUNNING → CANCELLED; a crawl job cancels its session too, when it has not ended.
pub async fn cancel(conn: &mut Conn, actor: Author, id: Uuid) -> AppResult<JobRow> {
    conn.transaction::<JobRow, AppError, _>(async move |c| {
        let locked = JOB_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let mut q = Sql::new(
            "UPDATE jobs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL \
             WHERE id = ",
        );
        q.bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(
                JOB_LIFECYCLE.allowed_from(JobStatus::Cancelled),
            ))
            .push(") RETURNING *");
        let job: JobRow = JOB_LIFECYCLE
            .apply(c, q, &locked, JobStatus::Cancelled)
            .await?;
        if let Some(sid) = job.driven_session() {
            sessions::try_transition(c, sid, SessionStatus::Cancelled, None).await?;
        }
        audit::record(c, &actor, job_entry("cancelJob", id, Some(locked.old))).await?;
        Ok(job)
    })
    .await
}

/// Returns RUNNING jobs whose lease expired to PENDING (attempts remain) or FAILED, at most
/// `limit` per call. Rows are taken with `FOR UPDATE SKIP LOCKED`, so reapers on several
/// replicas split the work instead of racing for it, and a job that a worker is finishing at
/// this moment is left to that worker. Failed crawl jobs fail their sessions.
pub async fn reap_expired(conn: &mut Conn, actor: Author, limit: i64) -> AppResult<Vec<JobRow>> {
    conn.transaction::<Vec<JobRow>, AppError, _>(async move |c| {
        let mut q = Sql::new(
            "WITH expired AS (SELECT id FROM jobs WHERE status = 'running' \
             AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT ",
        );
        q.bind(Bind::BigInt(limit)).push(
            " FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET status = CASE WHEN attempts < max_attempts \
             THEN 'pending' ELSE 'failed' END, \
             finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END, \
             run_after = now(), lease_expires_at = NULL, claimed_by = NULL, \
             error = 'lease expired after attempt ' || attempts \
             FROM expired WHERE jobs.id = expired.id AND jobs.status = 'running' \
             RETURNING jobs.*",
        );
        let reaped: Vec<JobRow> = q.load(c).await?;
        for job in &reaped {
            let old = serde_json::json!({ "status": "running", "attempts": job.attempts });
            audit::record(
                c,
                &actor,
                job_entry("reapJob", job.id, Some(old.to_string())),
            )
            .await?;
            if job.status == JobStatus::Failed
                && let Some(sid) = job.driven_session()
            {
                sessions::try_transition(c, sid, SessionStatus::Failed, job.error.clone()).await?;
            }
        }
        Ok(reaped)
    })
    .await
}

/// Jobs by kind and status, for the metrics.
pub async fn counts(conn: &mut Conn) -> AppResult<Vec<(String, String, i64)>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: Vec<R> =
        Sql::new("SELECT kind, status, count(*) AS n FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.status, r.n)).collect())
}
