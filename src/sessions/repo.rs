//! Session queries. Kept apart from the resolvers: diesel_async's `RunQueryDsl` confuses
//! async-graphql's macros when both are in scope.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{SessionFilter, SessionRow};
use crate::db::Conn;
use crate::db::schema::crawl_sessions::dsl as s;
use crate::error::AppResult;
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
