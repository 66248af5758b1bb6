use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};
use uuid::Uuid;

use crate::api::connection::{Connection, CountSource, wanted_here};
use crate::api::context::{ShareSlot, actor, detached, live, req};
use crate::api::scalars::{Decimal, json_object};
use crate::api::types::agent::{AgentExecution, AgentUsage, executions_connection, session_usage};
use crate::api::types::bug::{Bug, BugFilter, SessionStatistics, bug_list, bugs_connection};
use crate::api::types::job::Job;
use crate::api::types::page::{Page, pages_connection};
use crate::api::types::user::{Project, User, load_project, load_user};
use crate::auth::Perm;
use crate::error::{AppError, AppResult};
use crate::live::Update;
use crate::store::agents::keys::{ExecutionFilter, ExecutionParent};
use crate::store::agents::model::ExecutionStatus;
use crate::store::batch::Id;
use crate::store::bugs::keys::BugParent;
use crate::store::credentials::keys::HasCredentialsKey;
use crate::store::page::Window;
use crate::store::pages::keys::{PageFilter, PageParent};
use crate::store::pages::model::PageStatus;
use crate::store::pages::url::normalize_url;
use crate::store::scope::Scope;
use crate::store::sessions::model::{SessionFilter, SessionRow, SessionStatus};
use crate::store::sessions::repo;

/// A crawl of one site: its counters, cost and lifecycle, and the pages and bugs it found.
#[derive(Clone)]
pub struct CrawlSession(pub Arc<SessionRow>);

impl From<SessionRow> for CrawlSession {
    fn from(row: SessionRow) -> Self {
        CrawlSession(Arc::new(row))
    }
}

impl crate::api::connection::ListItem for CrawlSession {}

#[Object]
impl CrawlSession {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn base_url(&self) -> &str {
        &self.0.base_url
    }
    async fn status(&self) -> SessionStatus {
        self.0.status
    }
    async fn config(&self) -> Json<serde_json::Value> {
        Json(self.0.config.value())
    }
    async fn pages_discovered(&self) -> i32 {
        self.0.pages_discovered
    }
    async fn pages_crawled(&self) -> i32 {
        self.0.pages_crawled
    }
    async fn bugs_found(&self) -> i32 {
        self.0.bugs_found
    }
    async fn total_cost(&self) -> Decimal {
        Decimal(self.0.total_cost.clone())
    }
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
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
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// The user who created the session; sessions from before ownership existed have none.
    async fn owner(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        match self.0.owner_id {
            Some(id) => Ok(load_user(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn project(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Project>> {
        match self.0.project_id {
            Some(id) => Ok(load_project(ctx, id).await?),
            None => Ok(None),
        }
    }

    /// Pages in discovery order, optionally limited to one status or a maximum depth.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn pages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        status: Option<PageStatus>,
        max_depth: Option<i32>,
    ) -> async_graphql::Result<Connection<Page>> {
        let window = Window::parse(first, 50, after.as_deref())?;
        let filter = PageFilter::new(status, max_depth)?;
        Ok(pages_connection(ctx, PageParent::Session(self.0.id), filter, window).await?)
    }

    /// Bugs of the whole session in detection order.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn bugs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<BugFilter>,
    ) -> async_graphql::Result<Connection<Bug>> {
        let (filter, window) = bug_list(first, after.as_deref(), filter)?;
        Ok(bugs_connection(ctx, BugParent::Session(self.0.id), filter, window).await?)
    }

    /// Aggregates over the session's bugs, computed in one grouped statement for all sessions.
    async fn statistics(&self, ctx: &Context<'_>) -> async_graphql::Result<SessionStatistics> {
        Ok(SessionStatistics::load(ctx, self.0.id).await?)
    }

    /// Whether the session has credentials for the crawled site; they are never returned.
    async fn has_credentials(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(req(ctx)?
            .loader
            .load_one(HasCredentialsKey(self.0.id))
            .await
            .map_err(AppError::from)?
            .unwrap_or(false))
    }

    /// Agent executions on this session, oldest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn executions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        status: Option<ExecutionStatus>,
    ) -> async_graphql::Result<Connection<AgentExecution>> {
        let window = Window::parse(first, 50, after.as_deref())?;
        // The session is visible, so all of its executions are.
        let filter = ExecutionFilter::new(status, Scope::All);
        Ok(executions_connection(ctx, ExecutionParent::Session(self.0.id), filter, window).await?)
    }

    /// Executions, tokens and exact cost per agent, most expensive first: one grouped
    /// statement for all sessions of a level. The costs add up to what executions added to
    /// `totalCost`.
    async fn agent_usage(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentUsage>> {
        Ok(session_usage(ctx, self.0.id).await?)
    }
}

/// Loads one session by id through the request's batch loader: the whole row.
pub async fn load_session(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<CrawlSession>> {
    load(ctx, Id::<SessionRow>::new(id)).await
}

/// Loads the session a field returns (`session(id)`, `Bug.session`), with only the columns
/// the field's selection reads.
pub async fn load_session_here(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<CrawlSession>> {
    let cols = wanted_here::<SessionRow, CrawlSession>(ctx);
    load(ctx, Id::with_cols(id, cols)).await
}

async fn load(ctx: &Context<'_>, key: Id<SessionRow>) -> AppResult<Option<CrawlSession>> {
    Ok(req(ctx)?.loader.load_one(key).await?.map(CrawlSession))
}

impl crate::api::connection::SlimNode for CrawlSession {
    const NEEDS: &'static [(&'static str, &'static str)] = &[
        ("baseUrl", "base_url"),
        ("status", "status"),
        ("config", "config"),
        ("pagesDiscovered", "pages_discovered"),
        ("pagesCrawled", "pages_crawled"),
        ("bugsFound", "bugs_found"),
        ("totalCost", "total_cost"),
        ("errorMessage", "error_message"),
        ("updatedAt", "updated_at"),
        ("startedAt", "started_at"),
        ("completedAt", "completed_at"),
        ("owner", "owner_id"),
        ("project", "project_id"),
    ];
}

struct SessionCount(SessionFilter);

impl CountSource for SessionCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let r = req(ctx)?;
            let mut conn = r.db.conn().await?;
            repo::count(&mut conn, &r.actor.scope(), &self.0).await
        }
        .boxed()
    }
}

#[derive(Default)]
pub struct SessionsQuery;

#[Object]
impl SessionsQuery {
    /// One session by id; null when it does not exist.
    async fn session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<CrawlSession>> {
        Ok(load_session_here(ctx, id).await?)
    }

    /// Sessions, newest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 20, child_complexity)")]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
        status: Option<SessionStatus>,
        base_url: Option<String>,
    ) -> async_graphql::Result<Connection<CrawlSession>> {
        let window = Window::parse(first, 20, after.as_deref())?;
        let filter = SessionFilter { status, base_url };
        let r = req(ctx)?;
        let mut conn = r.db.conn().await?;
        let rows = repo::list(&mut conn, &r.actor.scope(), &filter, &window).await?;
        drop(conn);
        Ok(Connection::from_rows(
            rows,
            CrawlSession::from,
            &window,
            Box::new(SessionCount(filter)),
        ))
    }
}

#[derive(InputObject)]
pub struct CreateSessionInput {
    /// Absolute http(s) URL; normalized like every stored URL (see the README).
    pub base_url: String,
    /// Crawl settings; must be a JSON object. Defaults to `{}`.
    pub config: Option<Json<serde_json::Value>>,
    /// A project the caller may use; its owner then sees the session too.
    pub project_id: Option<Uuid>,
    /// The crawled site's credentials (a JSON object, such as `{ "username": …, "password": … }`):
    /// sealed at rest under `CREDENTIALS_KEY`, never returned by any query (see
    /// `hasCredentials`), and handed only to the service worker that claims the session's crawl
    /// job (`claimJob`'s `credentials`).
    pub credentials: Option<Json<serde_json::Value>>,
}

async fn move_session(
    ctx: &Context<'_>,
    action: &'static str,
    id: Uuid,
    to: SessionStatus,
    error: Option<String>,
) -> AppResult<CrawlSession> {
    let actor = actor(ctx, Perm::ManageSessions)?;
    let row = detached(ctx, move |mut conn| async move {
        repo::transition(&mut conn, actor, action, id, to, error).await
    })
    .await?;
    Ok(CrawlSession::from(row))
}

#[derive(Default)]
pub struct SessionsMutation;

#[Object]
impl SessionsMutation {
    /// Creates a PENDING session.
    async fn create_session(
        &self,
        ctx: &Context<'_>,
        input: CreateSessionInput,
    ) -> async_graphql::Result<CrawlSession> {
        let base_url =
            normalize_url(&input.base_url).map_err(|m| AppError::bad_field("input.baseUrl", m))?;
        let config =
            json_object("input.config", input.config)?.unwrap_or_else(|| serde_json::json!({}));
        if config.get("credentials").is_some() {
            return Err(AppError::bad_field(
                "input.config",
                "put credentials in input.credentials, where they are encrypted, not in config",
            )
            .into());
        }
        let credentials = match json_object("input.credentials", input.credentials)? {
            None => None,
            Some(v) => {
                let keyring = req(ctx)?.db.keyring().ok_or_else(|| {
                    AppError::bad_field(
                        "input.credentials",
                        "this gateway stores no credentials: CREDENTIALS_KEY is not set",
                    )
                })?;
                Some((keyring, v))
            }
        };
        let actor = actor(ctx, Perm::ManageSessions)?;
        let project = input.project_id;
        let row = detached(ctx, move |mut conn| async move {
            repo::create(&mut conn, actor, base_url, config, project, credentials).await
        })
        .await?;
        Ok(CrawlSession::from(row))
    }

    /// PENDING → RUNNING; sets `startedAt`.
    async fn start_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<CrawlSession> {
        Ok(move_session(ctx, "startSession", id, SessionStatus::Running, None).await?)
    }

    /// RUNNING → COMPLETED; sets `completedAt`.
    async fn complete_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<CrawlSession> {
        Ok(move_session(ctx, "completeSession", id, SessionStatus::Completed, None).await?)
    }

    /// RUNNING → FAILED; stores the error and sets `completedAt`.
    async fn fail_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        error: String,
    ) -> async_graphql::Result<CrawlSession> {
        if error.trim().is_empty() {
            return Err(AppError::bad_field("error", "error must not be empty").into());
        }
        Ok(move_session(ctx, "failSession", id, SessionStatus::Failed, Some(error)).await?)
    }

    /// PENDING or RUNNING → CANCELLED; sets `completedAt`.
    async fn cancel_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<CrawlSession> {
        Ok(move_session(ctx, "cancelSession", id, SessionStatus::Cancelled, None).await?)
    }

    /// Adds an exact amount (at most 4 decimals, not negative) to `totalCost`.
    async fn add_session_cost(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        amount: Decimal,
    ) -> async_graphql::Result<CrawlSession> {
        let actor = actor(ctx, Perm::Ingest)?;
        amount.check_money("amount")?;
        let row = detached(ctx, move |mut conn| async move {
            repo::add_cost(&mut conn, actor, id, amount.0).await
        })
        .await?;
        Ok(CrawlSession::from(row))
    }

    /// Deletes a session with its pages, bugs and agent executions; its jobs stay, unlinked.
    /// Returns the id.
    async fn delete_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Uuid> {
        let actor = actor(ctx, Perm::ManageSessions)?;
        Ok(detached(ctx, move |mut conn| async move {
            repo::delete(&mut conn, actor, id).await
        })
        .await?)
    }
}

/// One message of `sessionProgress`: the session as committed, and what changed.
pub struct SessionProgress(Update<SessionRow>);

#[Object]
impl SessionProgress {
    /// The session's state after the change.
    async fn session(&self) -> async_graphql::Result<CrawlSession> {
        match &self.0.row {
            Some(row) => Ok(CrawlSession(row.clone())),
            None => Err(AppError::internal("session update without a row").into()),
        }
    }
    /// `snapshot` (the first message), `status`, `pages`, `bugs`, `cost`, `updated`, `job` (one
    /// of the session's jobs changed; see `job`), or `resync` (sent again after the gateway's
    /// change listener reconnected).
    async fn kind(&self) -> &str {
        self.0.kind
    }
    /// When the change was written; for `snapshot` and `resync`, when the message was built.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The job whose change caused this message, for kind `job`.
    async fn job(&self) -> Option<Job> {
        self.0.job.clone().map(|row| Job(row, None))
    }
}

#[derive(Default)]
pub struct SessionsSubscription;

#[Subscription]
impl SessionsSubscription {
    /// The session's current state first, then one message per committed change of the session
    /// or of its jobs. A subscriber that falls behind skips to the newest state; `NOT_FOUND` when
    /// the session does not exist.
    async fn session_progress(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SessionProgress>> + use<>>
    {
        // The request's loader is scoped to the caller: someone else's session is not found.
        if load_session(ctx, session_id).await?.is_none() {
            return Err(AppError::NotFound {
                entity: "session",
                id: session_id.to_string(),
            }
            .into());
        }
        let live = live(ctx)?;
        let again = live.clone();
        let share = ShareSlot::of(ctx, move || again.refresh_session(session_id));
        let updates = live.watch_session(session_id, share.is_some()).await?;
        Ok(updates.map(move |u| {
            if let Some(share) = &share {
                share.set_repeat(u.repeat);
            }
            if u.row.is_none() {
                return Err(AppError::NotFound {
                    entity: "session",
                    id: session_id.to_string(),
                }
                .into());
            }
            Ok(SessionProgress(u))
        }))
    }
}

crate::api::scalars::graphql_enum!(crate::store::sessions::model::SessionStatus,);
