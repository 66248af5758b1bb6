//! Session queries. Kept apart from the resolvers: diesel_async's `RunQueryDsl` confuses
//! async-graphql's macros when both are in scope.

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::sync::Arc;
use uuid::Uuid;

use super::model::{INGESTING, SESSION_LIFECYCLE, SessionFilter, SessionRow, SessionStatus};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry, New};
use crate::store::batch::SlimTable;
use crate::store::credentials::cipher::Keyring;
use crate::store::page::{Direction, Window};
use crate::store::schema::crawl_sessions::dsl as s;
use crate::store::scope::{Author, Scope};
use crate::store::sql::{Bind, Sql};

/// Sessions by id, whoever owns them: for the live-update hub and internal checks. Requests go
/// through [`visible_by_ids`].
pub async fn by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<SessionRow>> {
    visible_by_ids(conn, &Scope::All, ids).await
}

/// Sessions by id that the scope may see.
pub async fn visible_by_ids(
    conn: &mut Conn,
    scope: &Scope,
    ids: &[Uuid],
) -> AppResult<Vec<SessionRow>> {
    let mut q = s::crawl_sessions
        .filter(s::id.eq_any(ids))
        .select(SessionRow::as_select())
        .into_boxed();
    if let Some(v) = scope.visible(s::id) {
        q = q.filter(v);
    }
    Ok(q.load(conn).await?)
}

/// Sessions by id that the scope may see.
impl SlimTable for SessionRow {
    const TABLE: &'static str = "crawl_sessions";
    const SESSION: &'static str = "id";
}

/// The sessions the scope may see that match the filter: the base of the list and its count, as
/// the audit log's `filtered` is.
fn filtered(
    scope: &Scope,
    filter: &SessionFilter,
) -> crate::store::schema::crawl_sessions::BoxedQuery<'static, diesel::pg::Pg> {
    let mut q = s::crawl_sessions.into_boxed();
    if let Some(v) = scope.visible(s::id) {
        q = q.filter(v);
    }
    if let Some(st) = filter.status {
        q = q.filter(s::status.eq(st));
    }
    if let Some(url) = &filter.base_url {
        q = q.filter(s::base_url.eq(url.clone()));
    }
    q
}

/// Newest first, keyset-paginated.
pub async fn list(
    conn: &mut Conn,
    scope: &Scope,
    filter: &SessionFilter,
    window: &Window,
) -> AppResult<Vec<SessionRow>> {
    let mut q = filtered(scope, filter);
    if let Some(after) = window.after(Direction::Descending) {
        q = q.filter(after);
    }
    Ok(q.select(SessionRow::as_select())
        .order((s::created_at.desc(), s::id.desc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count(conn: &mut Conn, scope: &Scope, filter: &SessionFilter) -> AppResult<i64> {
    Ok(filtered(scope, filter).count().get_result(conn).await?)
}

pub async fn insert_many(conn: &mut Conn, rows: &[SessionRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(s::crawl_sessions)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}

/// Creates a PENDING session owned by the actor, optionally in a project the actor may use,
/// with the crawled site's credentials sealed in the same transaction.
pub async fn create(
    conn: &mut Conn,
    actor: Author,
    base_url: String,
    config: serde_json::Value,
    project_id: Option<Uuid>,
    credentials: Option<(Arc<Keyring>, serde_json::Value)>,
) -> AppResult<SessionRow> {
    conn.transaction::<SessionRow, AppError, _>(async move |c| {
        if let Some(pid) = project_id {
            let mut q = Sql::new("SELECT id FROM projects WHERE id = ");
            q.bind(Bind::Uuid(pid));
            if let Scope::Owner(user) = actor.scope {
                q.push(" AND owner_id = ").bind(Bind::Uuid(user));
            }
            q.push(" FOR KEY SHARE");
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = diesel::sql_types::Uuid)]
                #[expect(dead_code, reason = "only its presence matters")]
                id: Uuid,
            }
            if q.get_result::<Id>(c).await.optional()?.is_none() {
                return Err(AppError::NotFound {
                    entity: "project",
                    id: pid.to_string(),
                });
            }
        }
        let id = Uuid::now_v7();
        let row: SessionRow = diesel::insert_into(s::crawl_sessions)
            .values((
                s::id.eq(id),
                s::base_url.eq(base_url),
                s::config.eq(config),
                s::owner_id.eq(actor.user_id),
                s::project_id.eq(project_id),
            ))
            .returning(SessionRow::as_returning())
            .get_result(c)
            .await?;
        if let Some((keyring, credentials)) = &credentials {
            crate::store::credentials::repo::store(c, keyring, id, credentials).await?;
        }
        audit::record(
            c,
            &actor,
            Entry::row("createSession", "session", id, None, "crawl_sessions"),
        )
        .await?;
        Ok(row)
    })
    .await
}

#[derive(QueryableByName)]
struct SessionOf {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
}

/// For a write that refers to a row of a session (a bug, an execution, a piece of evidence):
/// finds the row's session, holds it (`FOR KEY SHARE`, if the scope may see it), then holds the
/// row, and returns the session; `NOT_FOUND` for a missing or invisible row.
///
/// Session first, then row: the order [`delete`] takes them in (its cascade reaches the rows
/// after the session). Holding the row first deadlocks against a concurrent delete.
pub async fn hold_row_of_session(
    c: &mut Conn,
    scope: &Scope,
    entity: &'static str,
    table: &'static str,
    id: Uuid,
) -> AppResult<Uuid> {
    let missing = || AppError::NotFound {
        entity,
        id: id.to_string(),
    };
    let mut q = Sql::new("SELECT session_id FROM ");
    q.push(table).push(" WHERE id = ").bind(Bind::Uuid(id));
    let session = q
        .get_result::<SessionOf>(c)
        .await
        .optional()?
        .ok_or_else(missing)?
        .session_id;
    let mut q = Sql::new("SELECT id AS session_id FROM crawl_sessions WHERE id = ");
    q.bind(Bind::Uuid(session));
    if let Some(v) = scope.visible(diesel::dsl::sql::<diesel::sql_types::Uuid>(
        "crawl_sessions.id",
    )) {
        q.push(" AND ").push_fragment(v);
    }
    q.push(" FOR KEY SHARE");
    q.get_result::<SessionOf>(c)
        .await
        .optional()?
        .ok_or_else(missing)?;
    let mut q = Sql::new("SELECT session_id FROM ");
    q.push(table)
        .push(" WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" FOR KEY SHARE");
    match q.get_result::<SessionOf>(c).await.optional()? {
        Some(r) if r.session_id == session => Ok(session),
        _ => Err(missing()),
    }
}

/// Locks the session row for the rest of the transaction (if the scope may see it) and checks
/// that it still ingests. Holding the lock serializes writers of one session, so a batch's view
/// of which URLs exist stays true until it commits. Returns the session as JSON, the audit log's
/// old value.
pub async fn lock_ingesting_session(
    conn: &mut Conn,
    scope: &Scope,
    session_id: Uuid,
    action: &'static str,
) -> AppResult<String> {
    let locked = SESSION_LIFECYCLE.lock(conn, session_id, scope).await?;
    if INGESTING.contains(&locked.status) {
        Ok(locked.old)
    } else {
        Err(AppError::NotAllowedIn {
            entity: "session",
            status: locked.status.as_graphql(),
            action,
        })
    }
}

/// Moves a session along its lifecycle: the row is locked (scoped to what the actor may see),
/// one conditional statement makes the move and sets its timestamps (and a failure's
/// message), and the audit entry is written, all in one transaction.
pub async fn transition(
    conn: &mut Conn,
    actor: Author,
    action: &'static str,
    id: Uuid,
    to: SessionStatus,
    error: Option<String>,
) -> AppResult<SessionRow> {
    conn.transaction::<SessionRow, AppError, _>(async move |c| {
        let locked = SESSION_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let row = SESSION_LIFECYCLE
            .apply(c, transition_sql(id, to, error), &locked, to)
            .await?;
        audit::record(
            c,
            &actor,
            Entry::row(action, "session", id, Some(locked.old), "crawl_sessions"),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// The same conditional move, for moves that follow from another entity's (a crawl job's), in
/// the caller's transaction: a session whose status does not allow it is left alone and `None`
/// is returned.
pub async fn try_transition(
    conn: &mut Conn,
    id: Uuid,
    to: SessionStatus,
    error: Option<String>,
) -> AppResult<Option<SessionRow>> {
    Ok(transition_sql(id, to, error)
        .get_result(conn)
        .await
        .optional()?)
}

fn transition_sql(id: Uuid, to: SessionStatus, error: Option<String>) -> Sql {
    let mut q = Sql::new("UPDATE crawl_sessions SET status = ");
    q.bind(Bind::Text(to.as_db().into()));
    match to {
        SessionStatus::Running => q.push(", started_at = now()"),
        SessionStatus::Completed | SessionStatus::Cancelled => q.push(", completed_at = now()"),
        SessionStatus::Failed => q
            .push(", completed_at = now(), error_message = ")
            .bind(Bind::Text(error.unwrap_or_default())),
        SessionStatus::Pending => &mut q,
    };
    q.push(" WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" AND status = ANY(")
        .bind(Bind::Texts(SESSION_LIFECYCLE.allowed_from(to)))
        .push(") RETURNING *");
    q
}

/// The largest value NUMERIC(10,4) holds.
pub fn max_cost() -> BigDecimal {
    BigDecimal::new(9_999_999_999i64.into(), 4)
}

/// Adds to `total_cost` with one atomic increment, refusing a sum that would overflow.
pub async fn add_cost(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    amount: BigDecimal,
) -> AppResult<SessionRow> {
    conn.transaction::<SessionRow, AppError, _>(async move |c| {
        let locked = SESSION_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let mut q = Sql::new("UPDATE crawl_sessions SET total_cost = total_cost + ");
        q.bind(Bind::Numeric(amount.clone()))
            .push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" AND total_cost + ")
            .bind(Bind::Numeric(amount))
            .push(" <= ")
            .bind(Bind::Numeric(max_cost()))
            .push(" RETURNING *");
        let row: SessionRow = q.get_result(c).await.optional()?.ok_or_else(|| {
            AppError::bad_field(
                "amount",
                "total cost would exceed 999999.9999, the most NUMERIC(10,4) holds",
            )
        })?;
        audit::record(
            c,
            &actor,
            Entry::row(
                "addSessionCost",
                "session",
                id,
                Some(locked.old),
                "crawl_sessions",
            ),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// Deletes a session with its pages, bugs and agent executions (its jobs stay, unlinked).
///
/// Job, execution and page mutations lock their row and then update the session; the delete's
/// cascade touches those rows after the session. So the delete takes its locks in their order:
/// the session's jobs, executions and pages first (`FOR NO KEY UPDATE`, which still lets
/// ingestion's foreign-key checks through), then the session. Otherwise a delete racing
/// `completeJob` or `finishExecution` deadlocks.
pub async fn delete(conn: &mut Conn, actor: Author, id: Uuid) -> AppResult<Uuid> {
    conn.transaction::<Uuid, AppError, _>(async move |c| {
        if visible_by_ids(c, &actor.scope, &[id]).await?.is_empty() {
            return Err(AppError::NotFound {
                entity: "session",
                id: id.to_string(),
            });
        }
        for table in ["jobs", "agent_executions", "pages"] {
            let mut q = Sql::new("SELECT id FROM ");
            q.push(table)
                .push(" WHERE session_id = ")
                .bind(Bind::Uuid(id))
                .push(" ORDER BY id FOR NO KEY UPDATE");
            q.execute(c).await?;
        }
        let locked = SESSION_LIFECYCLE.lock(c, id, &actor.scope).await?;
        diesel::delete(s::crawl_sessions.filter(s::id.eq(id)))
            .execute(c)
            .await?;
        let entry = Entry {
            action: "deleteSession",
            resource_type: "session",
            resource_id: Some(id),
            old: Some(locked.old),
            new: New::Nothing,
        };
        audit::record(c, &actor, entry).await?;
        Ok(id)
    })
    .await
}
