//! Agent and execution queries. Every execution move is one conditional
//! `UPDATE … WHERE status = ANY(allowed_from)` on a locked row; finishing charges the session in
//! the same transaction.

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::{
    AgentFilter, AgentRow, AgentStats, AgentUsage, EXECUTION_LIFECYCLE, ExecutionRow,
    ExecutionStatus,
};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry};
use crate::store::batch::{ById, SlimTable};
use crate::store::page::{Direction, Window};
use crate::store::row::Cols;
use crate::store::schema::agents::dsl as a;
use crate::store::scope::{Author, Scope};
use crate::store::sessions::model::SESSION_LIFECYCLE;
use crate::store::sessions::repo::max_cost;
use crate::store::sql::{Bind, Sql};

/// Agents are a registry every caller may read: no scope.
impl ById for AgentRow {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn by_ids(conn: &mut Conn, _: &Scope, ids: &[Uuid], _: Cols) -> AppResult<Vec<Self>> {
        Ok(a::agents
            .filter(a::id.eq_any(ids))
            .select(AgentRow::as_select())
            .load(conn)
            .await?)
    }
}

/// Executions are visible with their session.
impl SlimTable for ExecutionRow {
    const TABLE: &'static str = "agent_executions";
    const SESSION: &'static str = "session_id";
}

fn filtered(
    filter: &AgentFilter,
) -> crate::store::schema::agents::BoxedQuery<'static, diesel::pg::Pg> {
    let mut q = a::agents.into_boxed();
    if let Some(t) = &filter.agent_type {
        q = q.filter(a::agent_type.eq(t.clone()));
    }
    if let Some(active) = filter.active {
        q = q.filter(a::is_active.eq(active));
    }
    if let Some(tag) = &filter.tag {
        q = q.filter(a::tags.contains(vec![Some(tag.clone())]));
    }
    q
}

/// Oldest first, keyset-paginated.
pub async fn list(
    conn: &mut Conn,
    filter: &AgentFilter,
    window: &Window,
) -> AppResult<Vec<AgentRow>> {
    let mut q = filtered(filter);
    if let Some(after) = window.after(Direction::Ascending) {
        q = q.filter(after);
    }
    Ok(q.select(AgentRow::as_select())
        .order((a::created_at.asc(), a::id.asc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count(conn: &mut Conn, filter: &AgentFilter) -> AppResult<i64> {
    Ok(filtered(filter).count().get_result(conn).await?)
}

pub struct NewAgent {
    pub name: String,
    pub agent_type: String,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    pub capabilities: serde_json::Value,
    pub is_active: bool,
    pub is_experimental: bool,
    pub tags: Vec<String>,
}

/// What `updateAgent` changes: `None` keeps the stored value.
#[derive(Default)]
pub struct AgentPatch {
    pub agent_type: Option<String>,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    pub capabilities: Option<serde_json::Value>,
    pub is_active: Option<bool>,
    pub is_experimental: Option<bool>,
    pub tags: Option<Vec<String>>,
}

fn agent_entry(action: &'static str, id: Uuid, old: Option<String>) -> Entry {
    Entry::row(action, "agent", id, old, "agents")
}

fn execution_entry(action: &'static str, id: Uuid, old: Option<String>) -> Entry {
    Entry::row(action, "execution", id, old, "agent_executions")
}

/// Registers an agent; a taken name is `CONFLICT` (the unique index decides, so two racing
/// registrations of one name cannot both succeed).
pub async fn register(conn: &mut Conn, actor: Author, agent: NewAgent) -> AppResult<AgentRow> {
    conn.transaction::<AgentRow, AppError, _>(async move |c| {
        let id = Uuid::now_v7();
        let mut q = Sql::new(
            "INSERT INTO agents (id, name, agent_type, model_provider, model_name, capabilities, \
             is_active, is_experimental, tags) VALUES (",
        );
        q.bind(Bind::Uuid(id))
            .push(", ")
            .bind(Bind::Text(agent.name.clone()))
            .push(", ")
            .bind(Bind::Text(agent.agent_type))
            .push(", ")
            .bind(Bind::NullableText(agent.model_provider))
            .push(", ")
            .bind(Bind::NullableText(agent.model_name))
            .push(", ")
            .bind(Bind::Json(agent.capabilities))
            .push(", ")
            .bind(Bind::Bool(agent.is_active))
            .push(", ")
            .bind(Bind::Bool(agent.is_experimental))
            .push(", ")
            .bind(Bind::Texts(agent.tags))
            .push(") ON CONFLICT (name) DO NOTHING RETURNING *");
        let row: AgentRow = q.get_result(c).await.optional()?.ok_or_else(|| {
            AppError::Conflict(format!("an agent named {:?} already exists", agent.name))
        })?;
        audit::record(c, &actor, agent_entry("registerAgent", id, None)).await?;
        Ok(row)
    })
    .await
}

#[derive(QueryableByName)]
struct OldRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    old: String,
}

/// Changes an agent's settings (not its name, which executions and dashboards refer to).
pub async fn update(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    patch: AgentPatch,
) -> AppResult<AgentRow> {
    conn.transaction::<AgentRow, AppError, _>(async move |c| {
        let mut lock = Sql::new("SELECT to_jsonb(t)::text AS old FROM agents t WHERE t.id = ");
        lock.bind(Bind::Uuid(id)).push(" FOR NO KEY UPDATE");
        let old: OldRow =
            lock.get_result(c)
                .await
                .optional()?
                .ok_or_else(|| AppError::NotFound {
                    entity: "agent",
                    id: id.to_string(),
                })?;
        let mut q = Sql::new("UPDATE agents SET agent_type = coalesce(");
        q.bind(Bind::NullableText(patch.agent_type))
            .push(", agent_type), model_provider = coalesce(")
            .bind(Bind::NullableText(patch.model_provider))
            .push(", model_provider), model_name = coalesce(")
            .bind(Bind::NullableText(patch.model_name))
            .push(", model_name), capabilities = coalesce(")
            .bind(Bind::NullableJson(patch.capabilities))
            .push(", capabilities), is_active = coalesce(")
            .bind(Bind::NullableBool(patch.is_active))
            .push(", is_active), is_experimental = coalesce(")
            .bind(Bind::NullableBool(patch.is_experimental))
            .push(", is_experimental)");
        if let Some(tags) = patch.tags {
            q.push(", tags = ").bind(Bind::Texts(tags));
        }
        q.push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" RETURNING *");
        let row: AgentRow = q.get_result(c).await?;
        audit::record(c, &actor, agent_entry("updateAgent", id, Some(old.old))).await?;
        Ok(row)
    })
    .await
}

pub struct NewExecution {
    pub agent_id: Uuid,
    pub session_id: Uuid,
    pub page_id: Option<Uuid>,
    pub bug_id: Option<Uuid>,
    pub input: serde_json::Value,
    pub timeout_seconds: i32,
}

#[derive(QueryableByName)]
struct ActiveRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    is_active: bool,
}

/// Checks what a new execution refers to: an active agent, a session the caller may see
/// (locked against deletion until commit), and a page and bug of that session.
async fn check_refs(
    c: &mut Conn,
    actor: &Author,
    e: &NewExecution,
    action: &'static str,
) -> AppResult<()> {
    let mut q = Sql::new("SELECT is_active FROM agents WHERE id = ");
    q.bind(Bind::Uuid(e.agent_id)).push(" FOR KEY SHARE");
    let agent: ActiveRow = q
        .get_result(c)
        .await
        .optional()?
        .ok_or_else(|| AppError::NotFound {
            entity: "agent",
            id: e.agent_id.to_string(),
        })?;
    if !agent.is_active {
        return Err(AppError::NotAllowedIn {
            entity: "agent",
            status: "INACTIVE".into(),
            action,
        });
    }
    SESSION_LIFECYCLE
        .lock(c, e.session_id, &actor.scope)
        .await?;
    for (entity, table, id) in [("page", "pages", e.page_id), ("bug", "bugs", e.bug_id)] {
        let Some(id) = id else { continue };
        let mut q = Sql::new("SELECT count(*) AS n FROM ");
        q.push(table)
            .push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" AND session_id = ")
            .bind(Bind::Uuid(e.session_id));
        let n: Count = q.get_result(c).await?;
        if n.n == 0 {
            return Err(AppError::NotFound {
                entity,
                id: id.to_string(),
            });
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Creates an execution, PENDING (`queueExecution`) or already RUNNING with its deadline
/// (`startExecution` without an id: one statement, so it never shows as PENDING).
pub async fn create(
    conn: &mut Conn,
    actor: Author,
    e: NewExecution,
    running: bool,
) -> AppResult<ExecutionRow> {
    let action = if running {
        "startExecution"
    } else {
        "queueExecution"
    };
    conn.transaction::<ExecutionRow, AppError, _>(async move |c| {
        check_refs(c, &actor, &e, action).await?;
        let id = Uuid::now_v7();
        let mut q = Sql::new(
            "INSERT INTO agent_executions (id, agent_id, session_id, page_id, bug_id, input, \
             timeout_seconds, status, started_at, deadline_at) VALUES (",
        );
        q.bind(Bind::Uuid(id))
            .push(", ")
            .bind(Bind::Uuid(e.agent_id))
            .push(", ")
            .bind(Bind::Uuid(e.session_id))
            .push(", ")
            .bind(Bind::NullableUuid(e.page_id))
            .push(", ")
            .bind(Bind::NullableUuid(e.bug_id))
            .push(", ")
            .bind(Bind::Json(e.input))
            .push(", ")
            .bind(Bind::Int(e.timeout_seconds));
        if running {
            q.push(", 'running', now(), now() + make_interval(secs => ")
                .bind(Bind::Int(e.timeout_seconds))
                .push("))");
        } else {
            q.push(", 'pending', NULL, NULL)");
        }
        q.push(" RETURNING *");
        let row: ExecutionRow = q.get_result(c).await?;
        audit::record(c, &actor, execution_entry(action, id, None)).await?;
        Ok(row)
    })
    .await
}

/// PENDING → RUNNING: starts the clock towards the deadline. Of two racing starters one wins;
/// the other gets `INVALID_TRANSITION` (RUNNING → RUNNING).
pub async fn start(conn: &mut Conn, actor: Author, id: Uuid) -> AppResult<ExecutionRow> {
    conn.transaction::<ExecutionRow, AppError, _>(async move |c| {
        let locked = EXECUTION_LIFECYCLE.lock(c, id, &actor.scope).await?;
        // An agent deactivated after the execution was queued may not start it either.
        let mut q = Sql::new(
            "SELECT a.is_active FROM agents a JOIN agent_executions e ON e.agent_id = a.id \
             WHERE e.id = ",
        );
        q.bind(Bind::Uuid(id)).push(" FOR KEY SHARE OF a");
        if !q.get_result::<ActiveRow>(c).await?.is_active {
            return Err(AppError::NotAllowedIn {
                entity: "agent",
                status: "INACTIVE".into(),
                action: "startExecution",
            });
        }
        let mut q = Sql::new(
            "UPDATE agent_executions SET status = 'running', started_at = now(), \
             deadline_at = now() + make_interval(secs => timeout_seconds) WHERE id = ",
        );
        q.bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(
                EXECUTION_LIFECYCLE.allowed_from(ExecutionStatus::Running),
            ))
            .push(") RETURNING *");
        let row: ExecutionRow = EXECUTION_LIFECYCLE
            .apply(c, q, &locked, ExecutionStatus::Running)
            .await?;
        audit::record(
            c,
            &actor,
            execution_entry("startExecution", id, Some(locked.old)),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// How an execution ended, as its agent reports it.
pub struct Finish {
    /// SUCCESS or FAILURE; TIMEOUT is the reaper's.
    pub status: ExecutionStatus,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: BigDecimal,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// RUNNING → SUCCESS or FAILURE with tokens and cost; the cost is added to the session's
/// `total_cost` in the same transaction, so the session always holds the sum of its executions
/// (plus what `addSessionCost` added). A sum past NUMERIC(10,4) rolls the whole move back.
pub async fn finish(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    f: Finish,
) -> AppResult<ExecutionRow> {
    conn.transaction::<ExecutionRow, AppError, _>(async move |c| {
        let locked = EXECUTION_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let mut q = Sql::new("UPDATE agent_executions SET status = ");
        q.bind(Bind::Text(f.status.as_db().into()))
            .push(", input_tokens = ")
            .bind(Bind::BigInt(f.input_tokens))
            .push(", output_tokens = ")
            .bind(Bind::BigInt(f.output_tokens))
            .push(", cost = ")
            .bind(Bind::Numeric(f.cost.clone()))
            .push(", result = ")
            .bind(Bind::NullableJson(f.result))
            .push(", error = ")
            .bind(Bind::NullableText(f.error))
            .push(
                ", finished_at = now(), deadline_at = NULL, \
                 duration_ms = greatest(0, round(extract(epoch FROM now() - started_at) * 1000))::bigint \
                 WHERE id = ",
            )
            .bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(EXECUTION_LIFECYCLE.allowed_from(f.status)))
            .push(") RETURNING *");
        let row: ExecutionRow = EXECUTION_LIFECYCLE.apply(c, q, &locked, f.status).await?;
        if f.cost.sign() == bigdecimal::num_bigint::Sign::Plus {
            charge_session(c, &actor, row.session_id, f.cost).await?;
        }
        audit::record(c, &actor, execution_entry("finishExecution", id, Some(locked.old))).await?;
        Ok(row)
    })
    .await
}

/// Adds an execution's cost to its session, refusing a total past what NUMERIC(10,4) holds.
async fn charge_session(
    c: &mut Conn,
    actor: &Author,
    session: Uuid,
    cost: BigDecimal,
) -> AppResult<()> {
    // The execution was found in the caller's scope, so its session is visible too.
    let locked = SESSION_LIFECYCLE.lock(c, session, &Scope::All).await?;
    let mut q = Sql::new("UPDATE crawl_sessions SET total_cost = total_cost + ");
    q.bind(Bind::Numeric(cost.clone()))
        .push(" WHERE id = ")
        .bind(Bind::Uuid(session))
        .push(" AND total_cost + ")
        .bind(Bind::Numeric(cost))
        .push(" <= ")
        .bind(Bind::Numeric(max_cost()));
    if q.execute(c).await? == 0 {
        return Err(AppError::bad_field(
            "input.cost",
            "the session's total cost would exceed 999999.9999, the most NUMERIC(10,4) holds",
        ));
    }
    audit::record(
        c,
        actor,
        Entry::row(
            "finishExecution",
            "session",
            session,
            Some(locked.old),
            "crawl_sessions",
        ),
    )
    .await
}

/// Moves RUNNING executions past their deadline to TIMEOUT, at most `limit` per call; their
/// duration is their timeout (a reaper that runs late must not stretch it). Rows are
/// taken with `FOR UPDATE SKIP LOCKED`, so reapers on several replicas split the work, and an
/// execution its agent is finishing at this moment is left to the agent.
pub async fn reap_overdue(
    conn: &mut Conn,
    actor: Author,
    limit: i64,
) -> AppResult<Vec<ExecutionRow>> {
    conn.transaction::<Vec<ExecutionRow>, AppError, _>(async move |c| {
        let mut q = Sql::new(
            "WITH overdue AS (SELECT id FROM agent_executions WHERE status = 'running' \
             AND deadline_at < now() ORDER BY deadline_at LIMIT ",
        );
        q.bind(Bind::BigInt(limit)).push(
            " FOR UPDATE SKIP LOCKED) \
             UPDATE agent_executions e SET status = 'timeout', finished_at = now(), \
             deadline_at = NULL, \
             duration_ms = e.timeout_seconds * 1000::bigint, \
             error = 'no result within ' || e.timeout_seconds || ' s' \
             FROM overdue WHERE e.id = overdue.id AND e.status = 'running' RETURNING e.*",
        );
        let reaped: Vec<ExecutionRow> = q.load(c).await?;
        for e in &reaped {
            let old = serde_json::json!({ "status": "running" });
            audit::record(
                c,
                &actor,
                execution_entry("timeoutExecution", e.id, Some(old.to_string())),
            )
            .await?;
        }
        Ok(reaped)
    })
    .await
}

#[derive(QueryableByName)]
struct StatsRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    agent_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    executions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pending: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    running: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    succeeded: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    failed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    timed_out: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    avg_duration_ms: Option<f64>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    output_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::Numeric)]
    cost: BigDecimal,
}

/// Token sums are `numeric` in PostgreSQL; a bigint holds any realistic total.
const TOTALS: &str = "coalesce(sum(input_tokens), 0)::bigint AS input_tokens, \
     coalesce(sum(output_tokens), 0)::bigint AS output_tokens, \
     coalesce(sum(cost), 0)::numeric(14, 4) AS cost";

/// Each agent's statistics over the executions the scope may see: one grouped statement.
pub async fn stats_for_agents(
    conn: &mut Conn,
    scope: &Scope,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, AgentStats>> {
    let mut q = Sql::new(
        "SELECT agent_id, count(*) AS executions, \
         count(*) FILTER (WHERE status = 'pending') AS pending, \
         count(*) FILTER (WHERE status = 'running') AS running, \
         count(*) FILTER (WHERE status = 'success') AS succeeded, \
         count(*) FILTER (WHERE status = 'failure') AS failed, \
         count(*) FILTER (WHERE status = 'timeout') AS timed_out, \
         avg(duration_ms)::float8 AS avg_duration_ms, ",
    );
    q.push(TOTALS)
        .push(" FROM agent_executions WHERE agent_id = ANY(")
        .bind(Bind::Uuids(ids.to_vec()))
        .push(")");
    if let Some(v) = scope.visible(diesel::dsl::sql::<diesel::sql_types::Uuid>(
        "agent_executions.session_id",
    )) {
        q.push(" AND ").push_fragment(v);
    }
    q.push(" GROUP BY agent_id");
    let rows: Vec<StatsRow> = q.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.agent_id,
                AgentStats {
                    executions: r.executions,
                    pending: r.pending,
                    running: r.running,
                    succeeded: r.succeeded,
                    failed: r.failed,
                    timed_out: r.timed_out,
                    avg_duration_ms: r.avg_duration_ms,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost: r.cost,
                },
            )
        })
        .collect())
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    agent_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    executions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    output_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::Numeric)]
    cost: BigDecimal,
}

/// Each session's usage per agent, most expensive first: one grouped statement. The sessions
/// were already found in the caller's scope.
pub async fn usage_for_sessions(
    conn: &mut Conn,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<AgentUsage>>> {
    let mut q = Sql::new("SELECT session_id, agent_id, count(*) AS executions, ");
    q.push(TOTALS)
        .push(" FROM agent_executions WHERE session_id = ANY(")
        .bind(Bind::Uuids(ids.to_vec()))
        .push(") GROUP BY session_id, agent_id ORDER BY session_id, cost DESC, agent_id");
    let rows: Vec<UsageRow> = q.load(conn).await?;
    let mut out: HashMap<Uuid, Vec<AgentUsage>> = HashMap::new();
    for r in rows {
        out.entry(r.session_id).or_default().push(AgentUsage {
            agent_id: r.agent_id,
            executions: r.executions,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost: r.cost,
        });
    }
    Ok(out)
}

/// Bulk insert for `seed`, as `sessions::repo::insert_many` does.
pub async fn insert_agents(conn: &mut Conn, rows: &[AgentRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(a::agents)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}

/// Bulk insert for `seed`; callers keep a chunk under PostgreSQL's 65,535 parameters (19 a row).
pub async fn insert_executions(conn: &mut Conn, rows: &[ExecutionRow]) -> AppResult<usize> {
    Ok(
        diesel::insert_into(crate::store::schema::agent_executions::table)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?,
    )
}
