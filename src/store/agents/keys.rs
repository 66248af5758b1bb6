//! Batched reads of agents and executions: executions through the one child-list loader,
//! statistics and usage as one grouped statement per level.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::model::{AgentStats, AgentUsage, ExecutionRow, ExecutionStatus};
use super::repo;
use crate::error::AppResult;
use crate::store::batch::{Fetch, Filter, Reader, parents};
use crate::store::scope::Scope;
use crate::store::sql::{Bind, Sql};

parents!(
    /// Whose executions a list holds: an agent's, or a session's.
    ExecutionParent of agent_executions as ExecutionRow, filtered by ExecutionFilter {
        Agent => agent_id,
        Session => session_id,
    }
);

/// An execution list's filter. An agent's executions span sessions, so its list carries the
/// caller's scope (a session's list is already inside a visible session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    /// The user whose sessions' executions are listed, when the caller is scoped to its own.
    pub owner: Option<Uuid>,
}

impl ExecutionFilter {
    pub fn new(status: Option<ExecutionStatus>, scope: Scope) -> Self {
        ExecutionFilter {
            status,
            owner: match scope {
                Scope::All => None,
                Scope::Owner(user) => Some(user),
            },
        }
    }
}

impl Filter for ExecutionFilter {
    fn push(&self, q: &mut Sql) {
        if let Some(st) = self.status {
            q.push(" AND status = ").bind(Bind::Text(st.as_db().into()));
        }
        if let Some(user) = self.owner
            && let Some(v) = Scope::Owner(user).visible(
                diesel::dsl::sql::<diesel::sql_types::Uuid>("agent_executions.session_id"),
            )
        {
            q.push(" AND ").push_fragment(v);
        }
    }
}

/// Key of an agent's statistics over the executions the caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentStatsKey(pub Uuid);

impl Fetch<AgentStatsKey> for Reader {
    type Value = AgentStats;

    async fn fetch(&self, keys: &[AgentStatsKey]) -> AppResult<HashMap<AgentStatsKey, AgentStats>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let mut stats = repo::stats_for_agents(&mut conn, &self.scope, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (AgentStatsKey(id), stats.remove(&id).unwrap_or_default()))
            .collect())
    }
}

/// Key of a session's usage per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentUsageKey(pub Uuid);

impl Fetch<AgentUsageKey> for Reader {
    type Value = Arc<[AgentUsage]>;

    async fn fetch(
        &self,
        keys: &[AgentUsageKey],
    ) -> AppResult<HashMap<AgentUsageKey, Arc<[AgentUsage]>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let mut usage = repo::usage_for_sessions(&mut conn, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let list = usage.remove(&id).unwrap_or_default();
                (AgentUsageKey(id), Arc::from(list))
            })
            .collect())
    }
}
