//! Session queries. Kept apart from the resolvers: diesel_async's `RunQueryDsl` confuses
//! async-graphql's macros when both are in scope.

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{SESSION_LIFECYCLE, SessionFilter, SessionRow, SessionStatus};
use crate::db::Conn;
use crate::db::schema::crawl_sessions::dsl as s;
use crate::db::sql::{Bind, Sql};
use crate::error::{AppError, AppResult};
use crate::graphql::connection::Window;

pub async fn by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<SessionRow>> {
    Ok(s::crawl_sessions
        .filter(s::id.eq_any(ids))
        .select(SessionRow::as_select())
        .load(conn)
        .await?)
}

/// Newest first, keyset-paginated.
pub async fn list(
    conn: &mut Conn,
    filter: &SessionFilter,
    window: &Window,
) -> AppResult<Vec<SessionRow>> {
    let mut q = s::crawl_sessions
        .select(SessionRow::as_select())
        .into_boxed();
    if let Some(st) = filter.status {
        q = q.filter(s::status.eq(st));
    }
    if let Some(url) = &filter.base_url {
        q = q.filter(s::base_url.eq(url));
    }
    if let Some(c) = window.after {
        q = q.filter(
            s::created_at
                .lt(c.created_at)
                .or(s::created_at.eq(c.created_at).and(s::id.lt(c.id))),
        );
    }
    Ok(q.order((s::created_at.desc(), s::id.desc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count(conn: &mut Conn, filter: &SessionFilter) -> AppResult<i64> {
    let mut q = s::crawl_sessions.count().into_boxed();
    if let Some(st) = filter.status {
        q = q.filter(s::status.eq(st));
    }
    if let Some(url) = &filter.base_url {
        q = q.filter(s::base_url.eq(url));
    }
    Ok(q.get_result(conn).await?)
}

pub async fn insert_many(conn: &mut Conn, rows: &[SessionRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(s::crawl_sessions)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}

pub async fn create(
    conn: &mut Conn,
    base_url: String,
    config: serde_json::Value,
) -> AppResult<SessionRow> {
    Ok(diesel::insert_into(s::crawl_sessions)
        .values((
            s::id.eq(Uuid::now_v7()),
            s::base_url.eq(base_url),
            s::config.eq(config),
        ))
        .returning(SessionRow::as_returning())
        .get_result(conn)
        .await?)
}

/// Moves a session along its lifecycle in one conditional statement; the transition's
/// timestamps (and a failure's message) are set by the same statement.
pub async fn transition(
    conn: &mut Conn,
    id: Uuid,
    to: SessionStatus,
    error: Option<String>,
) -> AppResult<SessionRow> {
    SESSION_LIFECYCLE
        .apply(conn, transition_sql(id, to, error), id, to)
        .await
}

/// The same conditional move, for moves that follow from another entity's (a crawl job's): a
/// session whose status does not allow it is left alone and `None` is returned.
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
pub async fn add_cost(conn: &mut Conn, id: Uuid, amount: BigDecimal) -> AppResult<SessionRow> {
    let mut q = Sql::new("UPDATE crawl_sessions SET total_cost = total_cost + ");
    q.bind(Bind::Numeric(amount.clone()))
        .push(" WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" AND total_cost + ")
        .bind(Bind::Numeric(amount))
        .push(" <= ")
        .bind(Bind::Numeric(max_cost()))
        .push(" RETURNING *");
    let row: Option<SessionRow> = q.get_result(conn).await.optional()?;
    match row {
        Some(row) => Ok(row),
        None => match SESSION_LIFECYCLE.current(conn, id).await? {
            None => Err(AppError::NotFound {
                entity: "session",
                id: id.to_string(),
            }),
            Some(_) => Err(AppError::bad_field(
                "amount",
                "total cost would exceed 999999.9999, the most NUMERIC(10,4) holds",
            )),
        },
    }
}
