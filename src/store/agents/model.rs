use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::lifecycle::Lifecycle;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::{agent_executions, agents};

db_enum!(
    /// Where an agent execution is in its lifecycle.
    ExecutionStatus {
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failure => "failure",
        Timeout => "timeout",
    }
);

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = agents, check_for_backend(diesel::pg::Pg))]
pub struct AgentRow {
    pub id: Uuid,
    pub name: String,
    pub agent_type: String,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    pub capabilities: JsonText,
    pub is_active: bool,
    pub is_experimental: bool,
    pub tags: Vec<Option<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

by_position!(
    AgentRow,
    agents,
    [
        id,
        name,
        agent_type,
        model_provider,
        model_name,
        capabilities,
        is_active,
        is_experimental,
        tags,
        created_at,
        updated_at,
    ]
);

impl Keyed for AgentRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Agents are few and small: every column is always read.
impl crate::store::row::Slim for AgentRow {
    const OPTIONAL: &'static [&'static str] = &[];
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = agent_executions, check_for_backend(diesel::pg::Pg))]
pub struct ExecutionRow {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub session_id: Uuid,
    pub page_id: Option<Uuid>,
    pub bug_id: Option<Uuid>,
    pub status: ExecutionStatus,
    pub input: JsonText,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: BigDecimal,
    pub timeout_seconds: i32,
    pub deadline_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub result: Option<JsonText>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

by_position!(
    ExecutionRow,
    agent_executions,
    [
        id,
        agent_id,
        session_id,
        page_id,
        bug_id,
        status,
        input,
        input_tokens,
        output_tokens,
        cost,
        timeout_seconds,
        deadline_at,
        duration_ms,
        result,
        error,
        created_at,
        updated_at,
        started_at,
        finished_at,
    ]
);

impl Keyed for ExecutionRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Execution lists are short and their JSON small: every column is always read.
impl crate::store::row::Slim for ExecutionRow {
    const OPTIONAL: &'static [&'static str] = &[];
}

/// Execution lifecycle: queued, started, then one of three ends. TIMEOUT is the reaper's, for
/// RUNNING executions past their deadline.
pub const EXECUTION_LIFECYCLE: Lifecycle<ExecutionStatus> = Lifecycle {
    entity: "execution",
    table: "agent_executions",
    session_col: "t.session_id",
    moves: &[
        (ExecutionStatus::Pending, ExecutionStatus::Running),
        (ExecutionStatus::Running, ExecutionStatus::Success),
        (ExecutionStatus::Running, ExecutionStatus::Failure),
        (ExecutionStatus::Running, ExecutionStatus::Timeout),
    ],
};

/// Limits on agent input, enforced before any statement runs (the table's CHECKs agree).
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_TYPE_LEN: usize = 100;
pub const MAX_MODEL_LEN: usize = 200;
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_LEN: usize = 100;
pub const MAX_TIMEOUT_SECONDS: i32 = 86_400;

/// Filters of the `agents` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AgentFilter {
    pub agent_type: Option<String>,
    pub active: Option<bool>,
    pub tag: Option<String>,
}

/// An agent's executions, as `Agent.stats` reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    pub executions: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    /// Mean of finished executions' durations.
    pub avg_duration_ms: Option<f64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: BigDecimal,
}

impl AgentStats {
    /// Successes over finished executions (success, failure, timeout); `None` before any ended.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.succeeded + self.failed + self.timed_out;
        (finished > 0).then(|| self.succeeded as f64 / finished as f64)
    }
}

/// One agent's share of a session: `CrawlSession.agentUsage`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentUsage {
    pub agent_id: Uuid,
    pub executions: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: BigDecimal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_execution_move_follows_the_contract() {
        use ExecutionStatus as E;
        let ok = [
            (E::Pending, E::Running),
            (E::Running, E::Success),
            (E::Running, E::Failure),
            (E::Running, E::Timeout),
        ];
        for &from in E::ALL {
            for &to in E::ALL {
                assert_eq!(
                    EXECUTION_LIFECYCLE.can_move(from, to),
                    ok.contains(&(from, to)),
                    "execution {from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn success_rate_counts_finished_executions_only() {
        let s = AgentStats {
            executions: 5,
            running: 1,
            pending: 1,
            succeeded: 2,
            failed: 0,
            timed_out: 1,
            ..AgentStats::default()
        };
        assert_eq!(s.success_rate(), Some(2.0 / 3.0));
        assert_eq!(AgentStats::default().success_rate(), None);
    }
}
