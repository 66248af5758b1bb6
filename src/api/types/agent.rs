use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::api::connection::{Connection, CountSource, children, wanted_here};
use crate::api::context::{actor, detached, req};
use crate::api::scalars::{Decimal, json_object};
use crate::api::types::bug::Bug;
use crate::api::types::evidence::{Evidence, evidence_connection};
use crate::api::types::page::{Page, load_page_here};
use crate::api::types::session::{CrawlSession, load_session_here};
use crate::auth::Perm;
use crate::error::{AppError, AppResult};
use crate::store::agents::keys::{AgentStatsKey, AgentUsageKey, ExecutionFilter, ExecutionParent};
use crate::store::agents::model::{
    AgentFilter, AgentRow, AgentStats as StatsRow, ExecutionRow, ExecutionStatus, MAX_MODEL_LEN,
    MAX_NAME_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_TIMEOUT_SECONDS, MAX_TYPE_LEN,
};
use crate::store::agents::repo::{self, AgentPatch, Finish, NewAgent, NewExecution};
use crate::store::batch::Id;
use crate::store::bugs::model::BugRow;
use crate::store::evidence::keys::EvidenceParent;
use crate::store::page::Window;

/// An AI agent that works on crawl sessions: what it is, and how its executions went.
#[derive(Clone)]
pub struct Agent(pub Arc<AgentRow>);

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        Agent(Arc::new(row))
    }
}

impl crate::api::connection::ListItem for Agent {}

#[Object]
impl Agent {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// Unique across the registry.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What kind of work the agent does, such as `crawler` or `validator`.
    #[graphql(name = "type")]
    async fn agent_type(&self) -> &str {
        &self.0.agent_type
    }
    async fn model_provider(&self) -> Option<&str> {
        self.0.model_provider.as_deref()
    }
    async fn model_name(&self) -> Option<&str> {
        self.0.model_name.as_deref()
    }
    async fn capabilities(&self) -> Json<serde_json::Value> {
        Json(self.0.capabilities.value())
    }
    /// Inactive agents keep their history but may not start executions.
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    async fn is_experimental(&self) -> bool {
        self.0.is_experimental
    }
    async fn tags(&self) -> Vec<&str> {
        self.0.tags.iter().flatten().map(String::as_str).collect()
    }
    /// Successes over finished executions the caller may see; null before any finished.
    /// Computed from the executions, like everything in `stats`.
    async fn success_rate(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        Ok(load_stats(ctx, self.0.id).await?.success_rate())
    }
    /// Mean duration of finished executions the caller may see, in milliseconds.
    async fn avg_duration_ms(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        Ok(load_stats(ctx, self.0.id).await?.avg_duration_ms)
    }
    /// Counts, tokens and cost over the executions the caller may see: one grouped statement
    /// for every agent of a level.
    async fn stats(&self, ctx: &Context<'_>) -> async_graphql::Result<AgentStats> {
        Ok(AgentStats::from(load_stats(ctx, self.0.id).await?))
    }
    /// The agent's executions the caller may see, oldest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn executions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        status: Option<ExecutionStatus>,
    ) -> async_graphql::Result<Connection<AgentExecution>> {
        let window = Window::parse(first, 50, after.as_deref())?;
        let filter = ExecutionFilter::new(status, req(ctx)?.actor.scope());
        Ok(executions_connection(ctx, ExecutionParent::Agent(self.0.id), filter, window).await?)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

async fn load_stats(ctx: &Context<'_>, id: Uuid) -> AppResult<StatsRow> {
    Ok(req(ctx)?
        .loader
        .load_one(AgentStatsKey(id))
        .await?
        .unwrap_or_default())
}

/// Loads an agent through the request's batch loader.
pub async fn load_agent(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<Agent>> {
    Ok(req(ctx)?
        .loader
        .load_one(Id::<AgentRow>::new(id))
        .await?
        .map(Agent))
}

/// An agent's executions: counts by status, tokens and exact cost.
#[derive(SimpleObject)]
pub struct AgentStats {
    pub executions: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub success_rate: Option<f64>,
    pub avg_duration_ms: Option<f64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_cost: Decimal,
}

impl From<StatsRow> for AgentStats {
    fn from(s: StatsRow) -> Self {
        AgentStats {
            success_rate: s.success_rate(),
            executions: s.executions,
            pending: s.pending,
            running: s.running,
            succeeded: s.succeeded,
            failed: s.failed,
            timed_out: s.timed_out,
            avg_duration_ms: s.avg_duration_ms,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            total_cost: Decimal(s.cost),
        }
    }
}

/// One agent's share of a session's work.
pub struct AgentUsage(crate::store::agents::model::AgentUsage);

#[Object]
impl AgentUsage {
    async fn agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        load_agent(ctx, self.0.agent_id)
            .await?
            .ok_or_else(|| AppError::internal("usage of an agent that does not exist").into())
    }
    async fn executions(&self) -> i64 {
        self.0.executions
    }
    async fn input_tokens(&self) -> i64 {
        self.0.input_tokens
    }
    async fn output_tokens(&self) -> i64 {
        self.0.output_tokens
    }
    async fn cost(&self) -> Decimal {
        Decimal(self.0.cost.clone())
    }
}

/// A session's usage per agent, most expensive first: one grouped statement per level.
pub async fn session_usage(ctx: &Context<'_>, session: Uuid) -> AppResult<Vec<AgentUsage>> {
    let list = req(ctx)?.loader.load_one(AgentUsageKey(session)).await?;
    Ok(list
        .as_deref()
        .unwrap_or_default()
        .iter()
        .cloned()
        .map(AgentUsage)
        .collect())
}

/// One run of an agent on a session (and optionally one page or bug of it), with its tokens,
/// exact cost and outcome.
#[derive(Clone)]
pub struct AgentExecution(pub Arc<ExecutionRow>);

impl From<ExecutionRow> for AgentExecution {
    fn from(row: ExecutionRow) -> Self {
        AgentExecution(Arc::new(row))
    }
}

impl crate::api::connection::ListItem for AgentExecution {}

impl crate::api::connection::SlimNode for AgentExecution {
    const NEEDS: &'static [(&'static str, &'static str)] = &[];
}

#[Object]
impl AgentExecution {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn status(&self) -> ExecutionStatus {
        self.0.status
    }
    async fn agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        load_agent(ctx, self.0.agent_id)
            .await?
            .ok_or_else(|| AppError::internal("execution of an agent that does not exist").into())
    }
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CrawlSession>> {
        Ok(load_session_here(ctx, self.0.session_id).await?)
    }
    async fn page(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Page>> {
        match self.0.page_id {
            Some(id) => Ok(load_page_here(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn bug(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Bug>> {
        let Some(id) = self.0.bug_id else {
            return Ok(None);
        };
        let cols = wanted_here::<BugRow, Bug>(ctx);
        Ok(req(ctx)?
            .loader
            .load_one(Id::<BugRow>::with_cols(id, cols))
            .await
            .map_err(AppError::from)?
            .map(Bug))
    }
    /// What the agent was asked to do.
    async fn input(&self) -> Json<serde_json::Value> {
        Json(self.0.input.value())
    }
    async fn input_tokens(&self) -> i64 {
        self.0.input_tokens
    }
    async fn output_tokens(&self) -> i64 {
        self.0.output_tokens
    }
    /// Exact, NUMERIC(10,4); already part of the session's `totalCost`.
    async fn cost(&self) -> Decimal {
        Decimal(self.0.cost.clone())
    }
    /// How long a RUNNING execution may take before it moves to TIMEOUT.
    async fn timeout_seconds(&self) -> i32 {
        self.0.timeout_seconds
    }
    /// While RUNNING: when the reaper moves it to TIMEOUT.
    async fn deadline_at(&self) -> Option<DateTime<Utc>> {
        self.0.deadline_at
    }
    /// From start to finish, once finished.
    async fn duration_ms(&self) -> Option<i64> {
        self.0.duration_ms
    }
    async fn result(&self) -> Option<Json<serde_json::Value>> {
        self.0.result.as_ref().map(|r| Json(r.value()))
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Evidence this execution produced, oldest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn evidence(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<Evidence>> {
        Ok(evidence_connection(
            ctx,
            EvidenceParent::Execution(self.0.id),
            first,
            after,
            None,
        )
        .await?)
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

/// A parent's executions, through the one child-list loader.
pub async fn executions_connection(
    ctx: &Context<'_>,
    parent: ExecutionParent,
    filter: ExecutionFilter,
    window: Window,
) -> AppResult<Connection<AgentExecution>> {
    children(ctx, parent, filter, window, AgentExecution).await
}

struct AgentCount(AgentFilter);

impl CountSource for AgentCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let mut conn = req(ctx)?.db.conn().await?;
            repo::count(&mut conn, &self.0).await
        }
        .boxed()
    }
}

#[derive(Default)]
pub struct AgentsQuery;

#[Object]
impl AgentsQuery {
    /// One agent by id; null when it does not exist.
    async fn agent(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Agent>> {
        Ok(load_agent(ctx, id).await?)
    }

    /// The agent registry, oldest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 20, child_complexity)")]
    async fn agents(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
        #[graphql(name = "type")] agent_type: Option<String>,
        active: Option<bool>,
        tag: Option<String>,
    ) -> async_graphql::Result<Connection<Agent>> {
        let window = Window::parse(first, 20, after.as_deref())?;
        let filter = AgentFilter {
            agent_type,
            active,
            tag,
        };
        let mut conn = req(ctx)?.db.conn().await?;
        let rows = repo::list(&mut conn, &filter, &window).await?;
        drop(conn);
        Ok(Connection::from_rows(
            rows,
            Agent::from,
            &window,
            Box::new(AgentCount(filter)),
        ))
    }

    /// One execution by id; null when it does not exist or its session is not the caller's.
    async fn execution(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<AgentExecution>> {
        Ok(req(ctx)?
            .loader
            .load_one(Id::<ExecutionRow>::new(id))
            .await
            .map_err(AppError::from)?
            .map(AgentExecution))
    }
}

#[derive(InputObject)]
pub struct RegisterAgentInput {
    /// Unique; 1–200 characters.
    pub name: String,
    /// What kind of work the agent does, such as `crawler` or `validator`.
    #[graphql(name = "type")]
    pub agent_type: String,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    /// A JSON object; defaults to `{}`.
    pub capabilities: Option<Json<serde_json::Value>>,
    #[graphql(default = true)]
    pub is_active: bool,
    #[graphql(default = false)]
    pub is_experimental: bool,
    #[graphql(default)]
    pub tags: Vec<String>,
}

#[derive(InputObject)]
pub struct UpdateAgentInput {
    #[graphql(name = "type")]
    pub agent_type: Option<String>,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    pub capabilities: Option<Json<serde_json::Value>>,
    pub is_active: Option<bool>,
    pub is_experimental: Option<bool>,
    /// Replaces the tags.
    pub tags: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct ExecutionInput {
    pub agent_id: Uuid,
    pub session_id: Uuid,
    /// A page of the session the execution works on.
    pub page_id: Option<Uuid>,
    /// A bug of the session the execution works on.
    pub bug_id: Option<Uuid>,
    /// Any JSON; defaults to `{}`.
    pub input: Option<Json<serde_json::Value>>,
    /// Seconds a RUNNING execution has before the reaper moves it to TIMEOUT (1–86400).
    #[graphql(default = 600)]
    pub timeout_seconds: i32,
}

#[derive(InputObject)]
pub struct FinishExecutionInput {
    /// SUCCESS or FAILURE.
    pub status: ExecutionStatus,
    #[graphql(default)]
    pub input_tokens: i64,
    #[graphql(default)]
    pub output_tokens: i64,
    /// Exact, at most 4 decimals, not negative; added to the session's `totalCost`.
    pub cost: Option<Decimal>,
    pub result: Option<Json<serde_json::Value>>,
    /// Required for FAILURE.
    pub error: Option<String>,
}

fn check_text(field: &str, value: &str, max: usize) -> AppResult<()> {
    if value.trim().is_empty() {
        return Err(AppError::bad_field(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(AppError::bad_field(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn check_optional(field: &str, value: &Option<String>, max: usize) -> AppResult<()> {
    match value {
        Some(v) => check_text(field, v, max),
        None => Ok(()),
    }
}

fn check_tags(field: &str, tags: &[String]) -> AppResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(AppError::bad_field(
            field,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        check_text(&format!("{field}[{i}]"), t, MAX_TAG_LEN)?;
    }
    Ok(())
}

fn check_execution(input: ExecutionInput) -> AppResult<NewExecution> {
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&input.timeout_seconds) {
        return Err(AppError::bad_field(
            "input.timeoutSeconds",
            format!("timeoutSeconds must be between 1 and {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    Ok(NewExecution {
        agent_id: input.agent_id,
        session_id: input.session_id,
        page_id: input.page_id,
        bug_id: input.bug_id,
        input: json_object("input.input", input.input)?.unwrap_or_else(|| serde_json::json!({})),
        timeout_seconds: input.timeout_seconds,
    })
}

#[derive(Default)]
pub struct AgentsMutation;

#[Object]
impl AgentsMutation {
    /// Adds an agent to the registry; a taken name is `CONFLICT`.
    async fn register_agent(
        &self,
        ctx: &Context<'_>,
        input: RegisterAgentInput,
    ) -> async_graphql::Result<Agent> {
        let actor = actor(ctx, Perm::ManageAgents)?;
        check_text("input.name", &input.name, MAX_NAME_LEN)?;
        check_text("input.type", &input.agent_type, MAX_TYPE_LEN)?;
        check_optional("input.modelProvider", &input.model_provider, MAX_TYPE_LEN)?;
        check_optional("input.modelName", &input.model_name, MAX_MODEL_LEN)?;
        check_tags("input.tags", &input.tags)?;
        let agent = NewAgent {
            name: input.name,
            agent_type: input.agent_type,
            model_provider: input.model_provider,
            model_name: input.model_name,
            capabilities: json_object("input.capabilities", input.capabilities)?
                .unwrap_or_else(|| serde_json::json!({})),
            is_active: input.is_active,
            is_experimental: input.is_experimental,
            tags: input.tags,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::register(&mut conn, actor, agent).await
        })
        .await?;
        Ok(Agent::from(row))
    }

    /// Changes an agent's settings; omitted fields keep their value. Deactivate an agent
    /// instead of deleting it: its executions stay.
    async fn update_agent(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateAgentInput,
    ) -> async_graphql::Result<Agent> {
        let actor = actor(ctx, Perm::ManageAgents)?;
        check_optional("input.type", &input.agent_type, MAX_TYPE_LEN)?;
        check_optional("input.modelProvider", &input.model_provider, MAX_TYPE_LEN)?;
        check_optional("input.modelName", &input.model_name, MAX_MODEL_LEN)?;
        if let Some(tags) = &input.tags {
            check_tags("input.tags", tags)?;
        }
        let patch = AgentPatch {
            agent_type: input.agent_type,
            model_provider: input.model_provider,
            model_name: input.model_name,
            capabilities: json_object("input.capabilities", input.capabilities)?,
            is_active: input.is_active,
            is_experimental: input.is_experimental,
            tags: input.tags,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::update(&mut conn, actor, id, patch).await
        })
        .await?;
        Ok(Agent::from(row))
    }

    /// Creates a PENDING execution of an active agent on a session the caller may use.
    async fn queue_execution(
        &self,
        ctx: &Context<'_>,
        input: ExecutionInput,
    ) -> async_graphql::Result<AgentExecution> {
        let actor = actor(ctx, Perm::Ingest)?;
        let e = check_execution(input)?;
        let row = detached(ctx, move |mut conn| async move {
            repo::create(&mut conn, actor, e, false).await
        })
        .await?;
        Ok(AgentExecution::from(row))
    }

    /// Starts an execution: with `id`, a queued one (PENDING → RUNNING; of two racing
    /// starters one wins); with `input`, a new one, RUNNING at once. Exactly one of the two.
    async fn start_execution(
        &self,
        ctx: &Context<'_>,
        id: Option<Uuid>,
        input: Option<ExecutionInput>,
    ) -> async_graphql::Result<AgentExecution> {
        let actor = actor(ctx, Perm::Ingest)?;
        let row = match (id, input) {
            (Some(id), None) => {
                detached(ctx, move |mut conn| async move {
                    repo::start(&mut conn, actor, id).await
                })
                .await?
            }
            (None, Some(input)) => {
                let e = check_execution(input)?;
                detached(ctx, move |mut conn| async move {
                    repo::create(&mut conn, actor, e, true).await
                })
                .await?
            }
            _ => {
                return Err(AppError::bad_input(
                    "give either id (a queued execution) or input (a new one), not both",
                )
                .into());
            }
        };
        Ok(AgentExecution::from(row))
    }

    /// RUNNING → SUCCESS or FAILURE with its tokens and exact cost; the cost is added to the
    /// session's `totalCost` in the same transaction.
    async fn finish_execution(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: FinishExecutionInput,
    ) -> async_graphql::Result<AgentExecution> {
        let actor = actor(ctx, Perm::Ingest)?;
        if !matches!(
            input.status,
            ExecutionStatus::Success | ExecutionStatus::Failure
        ) {
            return Err(AppError::bad_field(
                "input.status",
                "an execution finishes as SUCCESS or FAILURE; TIMEOUT is the reaper's",
            )
            .into());
        }
        for (field, n) in [
            ("input.inputTokens", input.input_tokens),
            ("input.outputTokens", input.output_tokens),
        ] {
            if n < 0 {
                return Err(
                    AppError::bad_field(field, format!("{field} must not be negative")).into(),
                );
            }
        }
        let cost = input.cost.unwrap_or(Decimal(BigDecimal::from(0)));
        cost.check_money("input.cost")?;
        let cost = cost.0;
        let error = input.error.filter(|e| !e.trim().is_empty());
        if input.status == ExecutionStatus::Failure && error.is_none() {
            return Err(AppError::bad_field("input.error", "a FAILURE needs its error").into());
        }
        let f = Finish {
            status: input.status,
            input_tokens: input.input_tokens,
            output_tokens: input.output_tokens,
            cost,
            result: input.result.map(|j| j.0).filter(|v| !v.is_null()),
            error,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::finish(&mut conn, actor, id, f).await
        })
        .await?;
        Ok(AgentExecution::from(row))
    }
}

crate::api::scalars::graphql_enum!(crate::store::agents::model::ExecutionStatus,);
