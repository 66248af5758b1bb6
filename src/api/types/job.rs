use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use crate::api::context::{ShareSlot, actor, detached, live, req};
use crate::api::types::session::{CrawlSession, load_session};
use crate::auth::Perm;
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::store::batch::Id;
use crate::store::jobs::model::{JobRow, JobStatus, MAX_ATTEMPTS, MAX_KIND_LEN, MAX_LEASE_SECONDS};
use crate::store::jobs::repo::{self, Credentials, NewJob};

/// A unit of background work; workers claim it under a lease and report its progress.
#[derive(Clone)]
pub struct Job(pub Arc<JobRow>, pub Option<Arc<serde_json::Value>>);

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Self {
        Job(Arc::new(row), None)
    }
}

#[Object]
impl Job {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn status(&self) -> JobStatus {
        self.0.status
    }
    /// The session this job belongs to; a `crawl` job drives its lifecycle.
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CrawlSession>> {
        match self.0.session_id {
            Some(id) => Ok(load_session(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn payload(&self) -> Json<serde_json::Value> {
        Json(self.0.payload.value())
    }
    /// Between 0 and 1; set by heartbeats, 1 once completed.
    async fn progress(&self) -> f64 {
        self.0.progress
    }
    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    /// Claims so far, including the current one.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// While RUNNING: when the job returns to the queue unless a heartbeat extends it.
    async fn lease_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.lease_expires_at
    }
    /// A PENDING job waiting out a retry backoff is not claimed before this time.
    async fn run_after(&self) -> DateTime<Utc> {
        self.0.run_after
    }
    /// The worker name given to `claimJob`, while RUNNING.
    async fn claimed_by(&self) -> Option<&str> {
        self.0.claimed_by.as_deref()
    }
    async fn result(&self) -> Option<Json<serde_json::Value>> {
        self.0.result.as_ref().map(|r| Json(r.value()))
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The crawled site's credentials of a crawl job's session: only in `claimJob`'s answer to
    /// a `service` caller, null everywhere else.
    async fn credentials(&self) -> Option<Json<serde_json::Value>> {
        self.1.as_deref().map(|v| Json(v.clone()))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// One job by id; null when it does not exist.
    async fn job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Job>> {
        let r = req(ctx)?;
        let row = r
            .loader
            .load_one(Id::<JobRow>::new(id))
            .await
            .map_err(AppError::from)?;
        Ok(row.map(|row| Job(row, None)))
    }
}

#[derive(InputObject)]
pub struct EnqueueJobInput {
    /// What the job does; workers claim by kind. `crawl` jobs drive their session.
    pub kind: String,
    pub session_id: Option<Uuid>,
    /// Any JSON; defaults to `{}`.
    pub payload: Option<Json<serde_json::Value>>,
    /// Claims allowed before the job fails for good (1–100).
    #[graphql(default = 3)]
    pub max_attempts: i32,
}

fn validate_kind(field: &str, kind: &str) -> AppResult<()> {
    if kind.trim().is_empty() {
        return Err(AppError::bad_field(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if kind.chars().count() > MAX_KIND_LEN {
        return Err(AppError::bad_field(
            field,
            format!("{field} is longer than {MAX_KIND_LEN} characters"),
        ));
    }
    Ok(())
}

#[derive(Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// Queues a PENDING job. A `crawl` job needs its session to be PENDING or RUNNING.
    async fn enqueue_job(
        &self,
        ctx: &Context<'_>,
        input: EnqueueJobInput,
    ) -> async_graphql::Result<Job> {
        let actor = actor(ctx, Perm::QueueJobs)?;
        validate_kind("input.kind", &input.kind)?;
        if !(1..=MAX_ATTEMPTS).contains(&input.max_attempts) {
            return Err(AppError::bad_field(
                "input.maxAttempts",
                format!("maxAttempts must be between 1 and {MAX_ATTEMPTS}"),
            )
            .into());
        }
        let payload = match input.payload.map(|j| j.0) {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(v) => v,
        };
        let job = NewJob {
            kind: input.kind,
            session_id: input.session_id,
            payload,
            max_attempts: input.max_attempts,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::enqueue(&mut conn, actor, job).await
        })
        .await?;
        Ok(Job::from(row))
    }

    /// Claims the oldest PENDING job of one of `kinds` (PENDING → RUNNING), or returns null when
    /// none is ready. Concurrent claimers never get the same job.
    async fn claim_job(
        &self,
        ctx: &Context<'_>,
        kinds: Vec<String>,
        #[graphql(default = 60)] lease_seconds: i32,
        #[graphql(desc = "A name for the claiming worker, stored as `claimedBy`.")] worker: Option<
            String,
        >,
    ) -> async_graphql::Result<Option<Job>> {
        let actor = actor(ctx, Perm::RunJobs)?;
        if kinds.is_empty() {
            return Err(AppError::bad_field("kinds", "kinds must not be empty").into());
        }
        for (i, k) in kinds.iter().enumerate() {
            validate_kind(&format!("kinds[{i}]"), k)?;
        }
        if !(1..=MAX_LEASE_SECONDS).contains(&lease_seconds) {
            return Err(AppError::bad_field(
                "leaseSeconds",
                format!("leaseSeconds must be between 1 and {MAX_LEASE_SECONDS}"),
            )
            .into());
        }
        if let Some(w) = &worker {
            validate_kind("worker", w)?;
        }
        let credentials = if actor.role == Role::Service {
            Credentials::Revealed(req(ctx)?.db.keyring())
        } else {
            Credentials::Withheld
        };
        let claimed = detached(ctx, move |mut conn| async move {
            repo::claim(&mut conn, actor, kinds, lease_seconds, worker, credentials).await
        })
        .await?;
        Ok(claimed.map(|c| Job(Arc::new(c.job), c.credentials.map(Arc::new))))
    }

    /// Records progress (0–1) and extends the lease; RUNNING jobs only.
    async fn heartbeat_job(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        progress: f64,
        message: Option<String>,
        #[graphql(
            desc = "The `attempts` the claim returned; refused with CONFLICT once the job \
                          has been claimed again."
        )]
        attempt: Option<i32>,
    ) -> async_graphql::Result<Job> {
        let actor = actor(ctx, Perm::RunJobs)?;
        if !(0.0..=1.0).contains(&progress) {
            return Err(AppError::bad_field(
                "progress",
                format!("progress must be between 0 and 1, got {progress}"),
            )
            .into());
        }
        let row = detached(ctx, move |mut conn| async move {
            repo::heartbeat(&mut conn, actor, id, progress, message, attempt).await
        })
        .await?;
        Ok(Job::from(row))
    }

    /// RUNNING → COMPLETED. A crawl job completes its RUNNING session in the same transaction.
    async fn complete_job(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        result: Option<Json<serde_json::Value>>,
        #[graphql(
            desc = "The `attempts` the claim returned; refused with CONFLICT once the job \
                          has been claimed again."
        )]
        attempt: Option<i32>,
    ) -> async_graphql::Result<Job> {
        let actor = actor(ctx, Perm::RunJobs)?;
        let result = result.map(|j| j.0).filter(|v| !v.is_null());
        let row = detached(ctx, move |mut conn| async move {
            repo::complete(&mut conn, actor, id, result, attempt).await
        })
        .await?;
        Ok(Job::from(row))
    }

    /// RUNNING → FAILED, or back to PENDING after a backoff when `retry` is set and attempts
    /// remain. A crawl job that fails for good fails its session with the same error.
    async fn fail_job(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        error: String,
        #[graphql(default = false)] retry: bool,
        #[graphql(
            desc = "The `attempts` the claim returned; refused with CONFLICT once the job \
                          has been claimed again."
        )]
        attempt: Option<i32>,
    ) -> async_graphql::Result<Job> {
        let actor = actor(ctx, Perm::RunJobs)?;
        if error.trim().is_empty() {
            return Err(AppError::bad_field("error", "error must not be empty").into());
        }
        let row = detached(ctx, move |mut conn| async move {
            repo::fail(&mut conn, actor, id, error, retry, attempt).await
        })
        .await?;
        Ok(Job::from(row))
    }

    /// PENDING or RUNNING → CANCELLED. A crawl job cancels its session if it has not ended.
    async fn cancel_job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Job> {
        let actor = actor(ctx, Perm::QueueJobs)?;
        let row = detached(ctx, move |mut conn| async move {
            repo::cancel(&mut conn, actor, id).await
        })
        .await?;
        Ok(Job::from(row))
    }
}

#[derive(Default)]
pub struct JobsSubscription;

#[Subscription]
impl JobsSubscription {
    /// The job's current state first, then every committed change. A subscriber that falls
    /// behind skips to the newest state; `NOT_FOUND` when the job does not exist.
    async fn job_updated(
        &self,
        ctx: &Context<'_>,
        job_id: Uuid,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Job>> + use<>> {
        // The request's loader is scoped to the caller: someone else's job is not found.
        let visible = req(ctx)?
            .loader
            .load_one(Id::<JobRow>::new(job_id))
            .await
            .map_err(AppError::from)?
            .is_some();
        if !visible {
            return Err(AppError::NotFound {
                entity: "job",
                id: job_id.to_string(),
            }
            .into());
        }
        let live = live(ctx)?;
        let again = live.clone();
        let share = ShareSlot::of(ctx, move || again.refresh_job(job_id));
        let updates = live.watch_job(job_id, share.is_some()).await?;
        Ok(updates.map(move |u| {
            if let Some(share) = &share {
                share.set_repeat(u.repeat);
            }
            match u.row {
                Some(row) => Ok(Job(row, None)),
                None => Err(AppError::NotFound {
                    entity: "job",
                    id: job_id.to_string(),
                }
                .into()),
            }
        }))
    }
}

crate::api::scalars::graphql_enum!(crate::store::jobs::model::JobStatus,);
