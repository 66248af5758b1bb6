//! Page queries. Lists for many parents run as one LATERAL statement per level.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::loaders::{PageFilter, PageParent};
use super::model::PageRow;
use crate::db::Conn;
use crate::db::schema::pages::dsl as p;
use crate::db::sql::{Bind, Sql};
use crate::error::AppResult;
use crate::graphql::connection::Window;

#[derive(QueryableByName)]
struct KeyedPage {
    #[diesel(sql_type = SqlUuid)]
    parent_key: Uuid,
    #[diesel(embed)]
    page: PageRow,
}

#[derive(QueryableByName)]
struct KeyedCount {
    #[diesel(sql_type = SqlUuid)]
    parent_key: Uuid,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub async fn by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<PageRow>> {
    Ok(p::pages
        .filter(p::id.eq_any(ids))
        .select(PageRow::as_select())
        .load(conn)
        .await?)
}

fn push_filter(q: &mut Sql, filter: &PageFilter) {
    if let Some(st) = filter.status {
        q.push(" AND status = ").bind(Bind::Text(st.as_db().into()));
    }
    if let Some(d) = filter.max_depth {
        q.push(" AND depth <= ").bind(Bind::Int(d));
    }
}

/// Up to `window.limit()` pages for each parent, in `(created_at, id)` order, in one statement.
pub async fn list_for_parents(
    conn: &mut Conn,
    parent: PageParent,
    ids: &[Uuid],
    filter: &PageFilter,
    window: &Window,
) -> AppResult<Vec<(Uuid, PageRow)>> {
    let col = parent.column();
    let mut q = Sql::new("SELECT k.parent_key, x.* FROM unnest(");
    q.bind(Bind::Uuids(ids.to_vec()))
        .push(") AS k(parent_key) CROSS JOIN LATERAL (SELECT * FROM pages WHERE ")
        .push(col)
        .push(" = k.parent_key");
    push_filter(&mut q, filter);
    if let Some(c) = window.after {
        q.push(" AND (created_at, id) > (")
            .bind(Bind::Timestamp(c.created_at))
            .push(", ")
            .bind(Bind::Uuid(c.id))
            .push(")");
    }
    q.push(" ORDER BY created_at, id LIMIT ")
        .bind(Bind::BigInt(window.limit()))
        .push(") x");
    let rows: Vec<KeyedPage> = q.load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.parent_key, r.page)).collect())
}

/// `totalCount` of each parent's list, in one grouped statement.
pub async fn count_for_parents(
    conn: &mut Conn,
    parent: PageParent,
    ids: &[Uuid],
    filter: &PageFilter,
) -> AppResult<Vec<(Uuid, i64)>> {
    let col = parent.column();
    let mut q = Sql::new("SELECT ");
    q.push(col)
        .push(" AS parent_key, count(*) AS n FROM pages WHERE ")
        .push(col)
        .push(" = ANY(")
        .bind(Bind::Uuids(ids.to_vec()))
        .push(")");
    push_filter(&mut q, filter);
    q.push(" GROUP BY 1");
    let rows: Vec<KeyedCount> = q.load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.parent_key, r.n)).collect())
}

pub async fn insert_many(conn: &mut Conn, rows: &[PageRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(p::pages)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}
