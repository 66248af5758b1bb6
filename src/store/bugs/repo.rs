//! Bug queries: batched per-parent lists and counts, and grouped statistics.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{BUG_LIFECYCLE, BugCategory, BugPriority, BugRow, BugStats, BugStatus};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry, New};
use crate::store::batch::{ById, SlimTable};
use crate::store::row::Cols;
use crate::store::schema::bugs::dsl as b;
use crate::store::scope::{Author, Scope};
use crate::store::sql::{Bind, Sql};

#[derive(QueryableByName)]
struct StatsRow {
    #[diesel(sql_type = SqlUuid)]
    session_id: Uuid,
    #[diesel(sql_type = Nullable<diesel::sql_types::Text>)]
    priority: Option<BugPriority>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Text>)]
    category: Option<BugCategory>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Text>)]
    status: Option<BugStatus>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<Double>)]
    avg_confidence: Option<f64>,
    #[diesel(sql_type = Integer)]
    g: i32,
}

/// A bug by id, if the scope may see its session.
pub async fn by_id(conn: &mut Conn, scope: &Scope, id: Uuid) -> AppResult<Option<BugRow>> {
    Ok(BugRow::by_ids(conn, scope, &[id], Cols::ALL).await?.pop())
}

/// Bugs by id (an event's bug), of sessions the scope may see.
impl SlimTable for BugRow {
    const TABLE: &'static str = "bugs";
    const SESSION: &'static str = "session_id";
}

/// Totals, average confidence and the three breakdowns for many sessions in one statement.
/// Every enum value is listed, with zero counts, so dashboards get a stable shape.
pub async fn stats_for_sessions(
    conn: &mut Conn,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, BugStats>> {
    let mut q = Sql::new(
        "SELECT session_id, priority, category, status, count(*) AS n, \
         avg(confidence) AS avg_confidence, GROUPING(priority, category, status) AS g \
         FROM bugs WHERE session_id = ANY(",
    );
    q.bind(Bind::Uuids(ids.to_vec())).push(
        ") GROUP BY GROUPING SETS ((session_id), (session_id, priority), \
         (session_id, category), (session_id, status))",
    );
    let rows: Vec<StatsRow> = q.load(conn).await?;
    let mut out: HashMap<Uuid, BugStats> = ids
        .iter()
        .map(|id| {
            (
                *id,
                BugStats {
                    total: 0,
                    avg_confidence: None,
                    by_priority: BugPriority::ALL.iter().map(|p| (*p, 0)).collect(),
                    by_category: BugCategory::ALL.iter().map(|c| (*c, 0)).collect(),
                    by_status: BugStatus::ALL.iter().map(|s| (*s, 0)).collect(),
                },
            )
        })
        .collect();
    for r in rows {
        let Some(s) = out.get_mut(&r.session_id) else {
            continue;
        };
        match (r.g, r.priority, r.category, r.status) {
            (7, ..) => {
                s.total = r.n;
                s.avg_confidence = r.avg_confidence;
            }
            (3, Some(p), _, _) => set(&mut s.by_priority, p, r.n),
            (5, _, Some(c), _) => set(&mut s.by_category, c, r.n),
            (6, _, _, Some(st)) => set(&mut s.by_status, st, r.n),
            _ => {}
        }
    }
    Ok(out)
}

fn set<T: PartialEq>(counts: &mut [(T, i64)], key: T, n: i64) {
    if let Some(slot) = counts.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = n;
    }
}

pub async fn insert_many(conn: &mut Conn, rows: &[BugRow]) -> AppResult<usize> {
    Ok(diesel::insert_into(b::bugs)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?)
}

/// A validated `BugInput`.
#[derive(Debug, Clone)]
pub struct NewBug {
    pub id: Uuid,
    pub page_id: Option<Uuid>,
    pub title: String,
    pub description: String,
    pub category: BugCategory,
    pub priority: BugPriority,
    pub steps_to_reproduce: serde_json::Value,
    pub evidence: serde_json::Value,
    pub confidence: f64,
    pub expected_behavior: Option<String>,
    pub actual_behavior: Option<String>,
    pub affected_users: Option<String>,
}

/// Stores a batch of bugs atomically: all or nothing, `bugs_found` incremented by the batch
/// size in the same transaction. Every `pageId` must be a page of the session.
pub async fn report(
    conn: &mut Conn,
    actor: Author,
    session_id: Uuid,
    bugs: Vec<NewBug>,
) -> AppResult<Vec<BugRow>> {
    use diesel_async::AsyncConnection;
    conn.transaction::<Vec<BugRow>, AppError, _>(async move |c| {
        let old = crate::store::sessions::repo::lock_ingesting_session(
            c,
            &actor.scope,
            session_id,
            "reportBugs",
        )
        .await?;
        let page_ids: Vec<Uuid> = bugs.iter().filter_map(|b| b.page_id).collect();
        if !page_ids.is_empty() {
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = SqlUuid)]
                id: Uuid,
            }
            let mut q = Sql::new("SELECT id FROM pages WHERE session_id = ");
            q.bind(Bind::Uuid(session_id)).push(" AND id = ANY(").bind(Bind::Uuids(page_ids)).push(")");
            let found: std::collections::HashSet<Uuid> = q.load::<Id>(c).await?.into_iter().map(|r| r.id).collect();
            if let Some((i, b)) = bugs.iter().enumerate().find(|(_, b)| b.page_id.is_some_and(|p| !found.contains(&p))) {
                return Err(AppError::bad_field(
                    format!("bugs[{i}].pageId"),
                    format!("page {} is not a page of session {session_id}", b.page_id.unwrap_or_default()),
                ));
            }
        }
        if bugs.is_empty() {
            return Ok(Vec::new());
        }
        let order: HashMap<Uuid, usize> = bugs.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
        let n = bugs.len() as i32;
        let mut cols = (
            Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(),
            Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(),
        );
        for b in bugs {
            cols.0.push(b.id);
            cols.1.push(b.page_id);
            cols.2.push(b.title);
            cols.3.push(b.description);
            cols.4.push(b.category.as_db().to_owned());
            cols.5.push(b.priority.as_db().to_owned());
            cols.6.push(b.steps_to_reproduce);
            cols.7.push(b.evidence);
            cols.8.push(b.confidence);
            cols.9.push(b.expected_behavior);
            cols.10.push(b.actual_behavior);
            cols.11.push(b.affected_users);
        }
        let mut q = Sql::new(
            "INSERT INTO bugs (id, session_id, page_id, title, description, category, priority, \
             steps_to_reproduce, evidence, confidence, expected_behavior, actual_behavior, affected_users) \
             SELECT u.id, ",
        );
        q.bind(Bind::Uuid(session_id))
            .push(", u.page_id, u.title, u.description, u.category, u.priority, u.steps, u.evidence, u.confidence, u.expected, u.actual, u.affected FROM unnest(")
            .bind(Bind::Uuids(cols.0))
            .push("::uuid[], ")
            .bind(Bind::NullableUuids(cols.1))
            .push("::uuid[], ")
            .bind(Bind::Texts(cols.2))
            .push("::text[], ")
            .bind(Bind::Texts(cols.3))
            .push("::text[], ")
            .bind(Bind::Texts(cols.4))
            .push("::text[], ")
            .bind(Bind::Texts(cols.5))
            .push("::text[], ")
            .bind(Bind::Jsons(cols.6))
            .push("::jsonb[], ")
            .bind(Bind::Jsons(cols.7))
            .push("::jsonb[], ")
            .bind(Bind::Floats(cols.8))
            .push("::float8[], ")
            .bind(Bind::NullableTexts(cols.9))
            .push("::text[], ")
            .bind(Bind::NullableTexts(cols.10))
            .push("::text[], ")
            .bind(Bind::NullableTexts(cols.11))
            .push("::text[]) AS u(id, page_id, title, description, category, priority, steps, evidence, confidence, expected, actual, affected) RETURNING ")
            .push(&Cols::ALL.select_list::<BugRow>());
        let mut rows: Vec<BugRow> = q.load(c).await?;
        let mut q = Sql::new("UPDATE crawl_sessions SET bugs_found = bugs_found + ");
        q.bind(Bind::Int(n)).push(" WHERE id = ").bind(Bind::Uuid(session_id));
        q.execute(c).await?;
        rows.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        audit::record(
            c,
            &actor,
            Entry {
                action: "reportBugs",
                resource_type: "session",
                resource_id: Some(session_id),
                old: Some(old),
                new: New::Json(serde_json::json!({
                    "reported": rows.len(),
                    "bug_ids": rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                })),
            },
        )
        .await?;
        Ok(rows)
    })
    .await
}

/// What a bug transition writes besides the status.
pub enum BugChange {
    Validate,
    MarkReported { linear_issue_id: String },
    Dismiss { reason: String },
    Reopen,
}

/// Moves a bug along its lifecycle: locked (scoped), one conditional statement, audit entry,
/// one transaction.
pub async fn transition(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    change: BugChange,
) -> AppResult<BugRow> {
    let (to, action) = match change {
        BugChange::Validate => (BugStatus::Validated, "validateBug"),
        BugChange::MarkReported { .. } => (BugStatus::Reported, "markBugReported"),
        BugChange::Dismiss { .. } => (BugStatus::Dismissed, "dismissBug"),
        BugChange::Reopen => (BugStatus::Detected, "reopenBug"),
    };
    let mut q = Sql::new("UPDATE bugs SET status = ");
    q.bind(Bind::Text(to.as_db().into()));
    match change {
        BugChange::Validate => {}
        BugChange::MarkReported { linear_issue_id } => {
            q.push(", linear_issue_id = ")
                .bind(Bind::Text(linear_issue_id));
        }
        BugChange::Dismiss { reason } => {
            q.push(", dismiss_reason = ").bind(Bind::Text(reason));
        }
        BugChange::Reopen => {
            q.push(", dismiss_reason = NULL");
        }
    }
    q.push(" WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" AND status = ANY(")
        .bind(Bind::Texts(BUG_LIFECYCLE.allowed_from(to)))
        // Not `*`: the row's columns only, without the search vector.
        .push(") RETURNING ")
        .push(&Cols::ALL.select_list::<BugRow>());
    use diesel_async::AsyncConnection;
    conn.transaction::<BugRow, AppError, _>(async move |c| {
        let locked = BUG_LIFECYCLE.lock(c, id, &actor.scope).await?;
        let row = BUG_LIFECYCLE.apply(c, q, &locked, to).await?;
        audit::record(
            c,
            &actor,
            Entry::row(action, "bug", id, Some(locked.old), "bugs"),
        )
        .await?;
        Ok(row)
    })
    .await
}
