//! Writing and reading the audit log.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{AuditFilter, AuditRow};
use crate::error::AppResult;
use crate::store::Conn;
use crate::store::page::{Direction, Window};
use crate::store::schema::audit_logs::dsl as a;
use crate::store::scope::Author;
use crate::store::sql::{Bind, Sql};

/// The state after the change, as stored in `new_value`.
pub enum New {
    /// The row of this table whose id is the entry's resource id, read in the same statement.
    Row(&'static str),
    Json(serde_json::Value),
    Nothing,
}

/// One audit entry.
pub struct Entry {
    /// The mutation, e.g. `startSession`.
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<Uuid>,
    /// The state before the change, as JSON text (usually `to_jsonb` of the locked row).
    pub old: Option<String>,
    pub new: New,
}

impl Entry {
    /// An entry whose new value is the row `resource_id` of `table` after the change.
    pub fn row(
        action: &'static str,
        resource_type: &'static str,
        resource_id: Uuid,
        old: Option<String>,
        table: &'static str,
    ) -> Self {
        Entry {
            action,
            resource_type,
            resource_id: Some(resource_id),
            old,
            new: New::Row(table),
        }
    }
}

/// Appends an entry. Call it inside the mutation's transaction: the entry commits or rolls back
/// with the change it describes.
pub async fn record(conn: &mut Conn, actor: &Author, entry: Entry) -> AppResult<()> {
    let p = actor;
    let mut q = Sql::new(
        "INSERT INTO audit_logs (id, actor_id, actor_subject, actor_role, action, \
         resource_type, resource_id, request_id, old_value, new_value) SELECT ",
    );
    q.bind(Bind::Uuid(Uuid::now_v7()))
        .push(", ")
        // System actors (the lease reaper) have no user row.
        .bind(Bind::NullableUuid(
            Some(p.user_id).filter(|id| !id.is_nil()),
        ))
        .push(", ")
        .bind(Bind::Text(p.subject.clone()))
        .push(", ")
        .bind(Bind::Text(p.role.as_db().into()))
        .push(", ")
        .bind(Bind::Text(entry.action.into()))
        .push(", ")
        .bind(Bind::Text(entry.resource_type.into()))
        .push(", ")
        .bind(Bind::NullableUuid(entry.resource_id))
        .push(", ")
        .bind(Bind::NullableText(actor.request_id.clone()))
        .push(", ")
        .bind(Bind::NullableText(entry.old))
        .push("::jsonb, ");
    match entry.new {
        New::Row(table) => {
            // Without derived columns (a bug's search vector).
            q.push("to_jsonb(t) - 'search' FROM ")
                .push(table)
                .push(" t WHERE t.id = ")
                .bind(Bind::NullableUuid(entry.resource_id));
        }
        New::Json(v) => {
            q.bind(Bind::NullableJson(Some(v)));
        }
        New::Nothing => {
            q.push("NULL::jsonb");
        }
    }
    q.execute(conn).await?;
    Ok(())
}

fn filtered(
    f: &AuditFilter,
) -> crate::store::schema::audit_logs::BoxedQuery<'static, diesel::pg::Pg> {
    let mut q = a::audit_logs.into_boxed();
    if let Some(t) = &f.resource_type {
        q = q.filter(a::resource_type.eq(t.clone()));
    }
    if let Some(id) = f.resource_id {
        q = q.filter(a::resource_id.eq(id));
    }
    if let Some(id) = f.actor_id {
        q = q.filter(a::actor_id.eq(id));
    }
    if let Some(t) = f.since {
        q = q.filter(a::created_at.ge(t));
    }
    if let Some(t) = f.until {
        q = q.filter(a::created_at.lt(t));
    }
    q
}

/// Entries matching the filter, newest first.
pub async fn list(conn: &mut Conn, f: &AuditFilter, window: &Window) -> AppResult<Vec<AuditRow>> {
    let mut q = filtered(f);
    if let Some(after) = window.after(Direction::Descending) {
        q = q.filter(after);
    }
    Ok(q.select(AuditRow::as_select())
        .order((a::created_at.desc(), a::id.desc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count(conn: &mut Conn, f: &AuditFilter) -> AppResult<i64> {
    Ok(filtered(f).count().get_result(conn).await?)
}
