//! Page queries. Lists for many parents run as one LATERAL statement per level.

use std::collections::HashMap;

use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{PAGE_LIFECYCLE, PageRow, PageStatus};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry, New};
use crate::store::batch::SlimTable;
use crate::store::schema::pages::dsl as p;
use crate::store::scope::Author;
use crate::store::sql::{Bind, Sql};

/// Pages by id, of sessions the scope may see.
impl SlimTable for PageRow {
    const TABLE: &'static str = "pages";
    const SESSION: &'static str = "session_id";
}

pub async fn insert_many(conn: &mut Conn, rows: &[PageRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(p::pages)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}

/// A validated, normalized `PageInput`.
#[derive(Debug, Clone)]
pub struct NewPage {
    pub url: String,
    pub title: Option<String>,
    pub depth: i32,
    pub parent_url: Option<String>,
}

pub struct Recorded {
    pub inserted: usize,
    pub duplicates: usize,
    /// One page per distinct input URL, in input order, whether new or already stored.
    pub pages: Vec<PageRow>,
}

/// Records a batch of pages in one transaction: `INSERT … ON CONFLICT (session_id, url) DO
/// NOTHING`, parents resolved from the batch or the stored pages, and `pages_discovered`
/// incremented by exactly the number of new rows.
pub async fn record(
    conn: &mut Conn,
    actor: Author,
    session_id: Uuid,
    items: Vec<NewPage>,
) -> AppResult<Recorded> {
    use diesel_async::AsyncConnection;
    let total = items.len();
    conn.transaction::<Recorded, AppError, _>(async move |c| {
        let old = crate::store::sessions::repo::lock_ingesting_session(c, &actor.scope, session_id, "recordPages").await?;

        // First occurrence of a URL wins; later ones are duplicates.
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        let mut distinct: Vec<(usize, &NewPage)> = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            if !index.contains_key(it.url.as_str()) {
                index.insert(it.url.as_str(), distinct.len());
                distinct.push((i, it));
            }
        }
        let mut lookup: Vec<String> = distinct.iter().map(|(_, p)| p.url.clone()).collect();
        lookup.extend(distinct.iter().filter_map(|(_, p)| p.parent_url.clone()));
        let mut q = Sql::new("SELECT * FROM pages WHERE session_id = ");
        q.bind(Bind::Uuid(session_id))
            .push(" AND url = ANY(")
            .bind(Bind::Texts(lookup))
            .push(")");
        let existing: Vec<PageRow> = q.load(c).await?;
        let mut ids: HashMap<String, Uuid> = existing.iter().map(|p| (p.url.clone(), p.id)).collect();
        let mut by_url: HashMap<String, PageRow> = existing.into_iter().map(|p| (p.url.clone(), p)).collect();

        let fresh: Vec<(usize, &NewPage)> = distinct
            .iter()
            .filter(|(_, p)| !ids.contains_key(&p.url))
            .copied()
            .collect();
        for (_, p) in &fresh {
            ids.insert(p.url.clone(), Uuid::now_v7());
        }
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, p) in &fresh {
            let parent = match &p.parent_url {
                None => None,
                Some(u) if *u == p.url => {
                    return Err(AppError::bad_field(format!("pages[{i}].parentUrl"), "a page cannot be its own parent"));
                }
                Some(u) => Some(*ids.get(u).ok_or_else(|| {
                    AppError::bad_field(
                        format!("pages[{i}].parentUrl"),
                        format!("parent {u} is neither in this batch nor recorded in the session"),
                    )
                })?),
            };
            cols.0.push(ids[&p.url]);
            cols.1.push(p.url.clone());
            cols.2.push(p.title.clone());
            cols.3.push(p.depth);
            cols.4.push(parent);
        }
        let mut inserted_rows: Vec<PageRow> = Vec::new();
        if !fresh.is_empty() {
            let mut q = Sql::new("INSERT INTO pages (id, session_id, url, title, depth, parent_page_id) SELECT u.id, ");
            q.bind(Bind::Uuid(session_id))
                .push(", u.url, u.title, u.depth, u.parent FROM unnest(")
                .bind(Bind::Uuids(cols.0))
                .push("::uuid[], ")
                .bind(Bind::Texts(cols.1))
                .push("::text[], ")
                .bind(Bind::NullableTexts(cols.2))
                .push("::text[], ")
                .bind(Bind::Ints(cols.3))
                .push("::int4[], ")
                .bind(Bind::NullableUuids(cols.4))
                .push("::uuid[]) AS u(id, url, title, depth, parent) ON CONFLICT (session_id, url) DO NOTHING RETURNING *");
            inserted_rows = q.load(c).await?;
            let mut q = Sql::new("UPDATE crawl_sessions SET pages_discovered = pages_discovered + ");
            q.bind(Bind::Int(inserted_rows.len() as i32))
                .push(" WHERE id = ")
                .bind(Bind::Uuid(session_id));
            q.execute(c).await?;
        }
        let inserted = inserted_rows.len();
        audit::record(
            c,
            &actor,
            Entry {
                action: "recordPages",
                resource_type: "session",
                resource_id: Some(session_id),
                old: Some(old),
                new: New::Json(serde_json::json!({
                    "inserted": inserted,
                    "duplicates": total - inserted,
                })),
            },
        )
        .await?;
        by_url.extend(inserted_rows.into_iter().map(|p| (p.url.clone(), p)));
        let pages = distinct.iter().filter_map(|(_, p)| by_url.remove(&p.url)).collect();
        Ok(Recorded {
            inserted,
            duplicates: total - inserted,
            pages,
        })
    })
    .await
}

/// Moves a page along its lifecycle: the page is locked (scoped), one conditional statement
/// moves it, and reaching ANALYZED or FAILED stamps `crawled_at` and increments the session's
/// `pages_crawled` in that same statement; the audit entry commits with it.
pub async fn set_status(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    to: PageStatus,
    analysis_result: Option<serde_json::Value>,
) -> AppResult<PageRow> {
    use diesel_async::AsyncConnection;
    conn.transaction::<PageRow, AppError, _>(async move |c| {
        let locked = PAGE_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let mut q = Sql::new("WITH p AS (UPDATE pages SET status = ");
        q.bind(Bind::Text(to.as_db().into()));
        if to.is_crawled() {
            q.push(", crawled_at = now()");
        }
        if let Some(ar) = analysis_result {
            q.push(", analysis_result = ").bind(Bind::Json(ar));
        }
        q.push(" WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" AND status = ANY(")
            .bind(Bind::Texts(PAGE_LIFECYCLE.allowed_from(to)))
            .push(") RETURNING *)");
        if to.is_crawled() {
            q.push(", s AS (UPDATE crawl_sessions SET pages_crawled = pages_crawled + 1 WHERE id IN (SELECT session_id FROM p))");
        }
        q.push(" SELECT * FROM p");
        let row = PAGE_LIFECYCLE.apply(c, q, &locked, to).await?;
        audit::record(
            c,
            &actor,
            Entry::row("setPageStatus", "page", id, Some(locked.old), "pages"),
        )
        .await?;
        Ok(row)
    })
    .await
}
