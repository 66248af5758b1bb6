//! Lifecycles as data: each entity's allowed moves are one table, and every transition is a
//! single conditional `UPDATE … WHERE id = $id AND status = ANY($allowed_from)`.

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::prelude::OptionalExtension;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::enums::DbEnum;
use super::sql::{Bind, Sql};
use crate::error::{AppError, AppResult};
use crate::store::scope::Scope;

/// The allowed `(from, to)` moves of one entity.
pub struct Lifecycle<S: 'static> {
    pub entity: &'static str,
    /// The table whose `status` column holds the lifecycle.
    pub table: &'static str,
    /// The column (of `t`, the locked row) that names the row's session, for scoping.
    pub session_col: &'static str,
    pub moves: &'static [(S, S)],
}

/// A row locked for a move: its status, and its state as JSON for the audit log.
#[derive(Debug)]
pub struct Locked<S> {
    pub id: Uuid,
    pub status: S,
    /// `to_jsonb(row)` before the change.
    pub old: String,
}

#[derive(QueryableByName)]
struct LockedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    old: String,
}

#[derive(QueryableByName)]
struct StatusText {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
}

impl<S: DbEnum> Lifecycle<S> {
    pub fn can_move(&self, from: S, to: S) -> bool {
        self.moves.iter().any(|&(f, t)| f == from && t == to)
    }

    /// Statuses from which `to` may be reached, as stored in the database.
    pub fn allowed_from(&self, to: S) -> Vec<String> {
        self.moves
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(f, _)| f.db_name().to_owned())
            .collect()
    }

    /// Locks the row for the rest of the transaction, if it exists and the scope may see it
    /// (otherwise `NOT_FOUND`), and returns its status and its state for the audit log.
    ///
    /// The lock only makes the audit's old value exact; the move itself is still decided by the
    /// conditional update of [`apply`](Self::apply).
    pub async fn lock(&self, conn: &mut Conn, id: Uuid, scope: &Scope) -> AppResult<Locked<S>> {
        // Derived columns (a bug's search vector) are not state worth recording.
        let mut q = Sql::new("SELECT t.status, (to_jsonb(t) - 'search')::text AS old FROM ");
        q.push(self.table)
            .push(" t WHERE t.id = ")
            .bind(Bind::Uuid(id));
        let session = diesel::dsl::sql::<diesel::sql_types::Uuid>(self.session_col);
        if let Some(visible) = scope.visible(session) {
            q.push(" AND ").push_fragment(visible);
        }
        q.push(" FOR NO KEY UPDATE OF t");
        let row: Option<LockedRow> = q.get_result(conn).await.optional()?;
        let row = row.ok_or_else(|| self.rejection(id, None, None))?;
        let status = S::parse_db(&row.status)
            .ok_or_else(|| AppError::internal(format!("unknown {} status", self.entity)))?;
        Ok(Locked {
            id,
            status,
            old: row.old,
        })
    }

    /// Runs a conditional update built for a move to `to` (its `WHERE` must require
    /// `status = ANY(allowed_from(to))`) on a locked row and returns the updated row; when it
    /// matches nothing, the move is not allowed from the locked status.
    pub async fn apply<R>(
        &self,
        conn: &mut Conn,
        update: Sql,
        locked: &Locked<S>,
        to: S,
    ) -> AppResult<R>
    where
        R: QueryableByName<Pg> + Send + 'static,
    {
        match update.get_result::<R>(conn).await.optional()? {
            Some(row) => Ok(row),
            None => Err(self.rejection(locked.id, Some(locked.status), Some(to))),
        }
    }

    /// The status stored for `id`, if the row exists.
    pub async fn current(&self, conn: &mut Conn, id: Uuid) -> AppResult<Option<S>> {
        let mut q = Sql::new("SELECT status FROM ");
        q.push(self.table).push(" WHERE id = ").bind(Bind::Uuid(id));
        let row: Option<StatusText> = q.get_result(conn).await.optional()?;
        Ok(row.and_then(|r| S::parse_db(&r.status)))
    }

    /// The error for a conditional update that matched no row: the entity is missing, or its
    /// current status does not allow the move.
    /// `to: None` names no target: a missing row is always `NOT_FOUND`.
    pub fn rejection(&self, id: Uuid, current: Option<S>, to: Option<S>) -> AppError {
        match (current, to) {
            (Some(from), Some(to)) => AppError::InvalidTransition {
                entity: self.entity,
                from: from.graphql_name(),
                to: to.graphql_name(),
            },
            _ => AppError::NotFound {
                entity: self.entity,
                id: id.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::bugs::model::{BUG_LIFECYCLE, BugStatus as B};
    use crate::store::pages::model::{PAGE_LIFECYCLE, PageStatus as P};
    use crate::store::sessions::model::{SESSION_LIFECYCLE, SessionStatus as S};

    /// Every (from, to) pair of every entity, against the tables of API.md written out again.
    #[test]
    fn every_pair_follows_the_contract() {
        let session_ok = [
            (S::Pending, S::Running),
            (S::Running, S::Completed),
            (S::Running, S::Failed),
            (S::Pending, S::Cancelled),
            (S::Running, S::Cancelled),
        ];
        for &from in S::ALL {
            for &to in S::ALL {
                assert_eq!(
                    SESSION_LIFECYCLE.can_move(from, to),
                    session_ok.contains(&(from, to)),
                    "session {from:?} -> {to:?}"
                );
            }
        }
        let page_ok = [
            (P::Discovered, P::Crawling),
            (P::Crawling, P::Analyzed),
            (P::Crawling, P::Failed),
            (P::Discovered, P::Skipped),
        ];
        for &from in P::ALL {
            for &to in P::ALL {
                assert_eq!(
                    PAGE_LIFECYCLE.can_move(from, to),
                    page_ok.contains(&(from, to)),
                    "page {from:?} -> {to:?}"
                );
            }
        }
        let bug_ok = [
            (B::Detected, B::Validated),
            (B::Validated, B::Reported),
            (B::Detected, B::Dismissed),
            (B::Validated, B::Dismissed),
            (B::Reported, B::Dismissed),
            (B::Dismissed, B::Detected),
        ];
        for &from in B::ALL {
            for &to in B::ALL {
                assert_eq!(
                    BUG_LIFECYCLE.can_move(from, to),
                    bug_ok.contains(&(from, to)),
                    "bug {from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn allowed_from_lists_database_values() {
        assert_eq!(
            SESSION_LIFECYCLE.allowed_from(S::Cancelled),
            vec!["pending", "running"]
        );
        assert_eq!(
            BUG_LIFECYCLE.allowed_from(B::Dismissed),
            vec!["detected", "validated", "reported"]
        );
        assert!(PAGE_LIFECYCLE.allowed_from(P::Discovered).is_empty());
    }

    #[test]
    fn rejections_name_the_current_status() {
        let id = uuid::Uuid::nil();
        assert_eq!(
            SESSION_LIFECYCLE
                .rejection(id, None, Some(S::Running))
                .code(),
            "NOT_FOUND"
        );
        match BUG_LIFECYCLE.rejection(id, Some(B::Validated), Some(B::Validated)) {
            crate::error::AppError::InvalidTransition { from, to, .. } => {
                assert_eq!((from.as_str(), to.as_str()), ("VALIDATED", "VALIDATED"));
            }
            other => panic!("{other:?}"),
        }
    }
}
