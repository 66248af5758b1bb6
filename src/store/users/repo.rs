//! User and project queries.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::model::{ProjectRow, Role, UserRow};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::batch::ById;
use crate::store::page::{Direction, Window};
use crate::store::row::Cols;
use crate::store::schema::projects::dsl as p;
use crate::store::schema::users::dsl as u;
use crate::store::scope::Scope;
use crate::store::sql::{Bind, Sql};

#[derive(Clone, Debug)]
pub struct NewUser {
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Used only when the user is created; afterwards the stored role is authoritative.
    pub role: Role,
}

/// Creates the user of a subject on first sight, or records that it was seen again. One
/// statement, `INSERT … ON CONFLICT (subject) DO UPDATE`, so concurrent first requests of one
/// subject leave exactly one row.
pub async fn provision(conn: &mut Conn, user: NewUser) -> AppResult<UserRow> {
    let mut q = Sql::new(
        "INSERT INTO users (id, subject, email, display_name, role, last_seen_at) VALUES (",
    );
    q.bind(Bind::Uuid(Uuid::now_v7()))
        .push(", ")
        .bind(Bind::Text(user.subject))
        .push(", ")
        .bind(Bind::NullableText(user.email))
        .push(", ")
        .bind(Bind::NullableText(user.display_name))
        .push(", ")
        .bind(Bind::Text(user.role.as_db().into()))
        .push(", now()) ON CONFLICT (subject) DO UPDATE SET last_seen_at = now() RETURNING *");
    Ok(q.get_result(conn).await?)
}

/// Users are visible to every caller that may name them (owners, audit actors).
impl ById for UserRow {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn by_ids(conn: &mut Conn, _: &Scope, ids: &[Uuid], _: Cols) -> AppResult<Vec<Self>> {
        by_ids(conn, ids).await
    }
}

/// A project is visible wherever one of its sessions is.
impl ById for ProjectRow {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn by_ids(conn: &mut Conn, _: &Scope, ids: &[Uuid], _: Cols) -> AppResult<Vec<Self>> {
        projects_by_ids(conn, ids).await
    }
}

pub async fn by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<UserRow>> {
    Ok(u::users
        .filter(u::id.eq_any(ids))
        .select(UserRow::as_select())
        .load(conn)
        .await?)
}

/// Users, oldest first.
pub async fn list(conn: &mut Conn, window: &Window) -> AppResult<Vec<UserRow>> {
    let mut q = u::users.select(UserRow::as_select()).into_boxed();
    if let Some(after) = window.after(Direction::Ascending) {
        q = q.filter(after);
    }
    Ok(q.order((u::created_at.asc(), u::id.asc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count(conn: &mut Conn) -> AppResult<i64> {
    Ok(u::users.count().get_result(conn).await?)
}

/// Locks a user row and returns it as JSON text (the audit log's old value) with the row.
pub async fn lock(conn: &mut Conn, id: Uuid) -> AppResult<(String, UserRow)> {
    #[derive(QueryableByName)]
    struct Old {
        #[diesel(sql_type = diesel::sql_types::Text)]
        old: String,
    }
    let mut q = Sql::new("SELECT to_jsonb(t)::text AS old FROM users t WHERE t.id = ");
    q.bind(Bind::Uuid(id)).push(" FOR NO KEY UPDATE");
    let old: Option<Old> = q.get_result(conn).await.optional()?;
    let old = old.ok_or(AppError::NotFound {
        entity: "user",
        id: id.to_string(),
    })?;
    let row = by_ids(conn, &[id])
        .await?
        .pop()
        .ok_or_else(|| AppError::internal("locked user vanished"))?;
    Ok((old.old, row))
}

pub async fn update(
    conn: &mut Conn,
    id: Uuid,
    role: Option<Role>,
    active: Option<bool>,
) -> AppResult<UserRow> {
    let mut q = Sql::new("UPDATE users SET role = coalesce(");
    q.bind(Bind::NullableText(role.map(|r| r.as_db().to_owned())))
        .push(", role), is_active = coalesce(")
        .bind(Bind::NullableBool(active))
        .push(", is_active) WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" RETURNING *");
    Ok(q.get_result(conn).await?)
}

pub async fn create_project(
    conn: &mut Conn,
    slug: String,
    name: String,
    owner: Uuid,
) -> AppResult<ProjectRow> {
    let mut q = Sql::new("INSERT INTO projects (id, slug, name, owner_id) VALUES (");
    q.bind(Bind::Uuid(Uuid::now_v7()))
        .push(", ")
        .bind(Bind::Text(slug.clone()))
        .push(", ")
        .bind(Bind::Text(name))
        .push(", ")
        .bind(Bind::Uuid(owner))
        .push(") ON CONFLICT (slug) DO NOTHING RETURNING *");
    let row: Option<ProjectRow> = q.get_result(conn).await.optional()?;
    row.ok_or_else(|| AppError::Conflict(format!("project slug {slug:?} is taken")))
}

pub async fn projects_by_ids(conn: &mut Conn, ids: &[Uuid]) -> AppResult<Vec<ProjectRow>> {
    Ok(p::projects
        .filter(p::id.eq_any(ids))
        .select(ProjectRow::as_select())
        .load(conn)
        .await?)
}

/// Projects the scope may see (a user sees the projects it owns), oldest first.
pub async fn list_projects(
    conn: &mut Conn,
    scope: &Scope,
    window: &Window,
) -> AppResult<Vec<ProjectRow>> {
    let mut q = p::projects.select(ProjectRow::as_select()).into_boxed();
    if let Scope::Owner(user) = scope {
        q = q.filter(p::owner_id.eq(*user));
    }
    if let Some(after) = window.after(Direction::Ascending) {
        q = q.filter(after);
    }
    Ok(q.order((p::created_at.asc(), p::id.asc()))
        .limit(window.limit())
        .load(conn)
        .await?)
}

pub async fn count_projects(conn: &mut Conn, scope: &Scope) -> AppResult<i64> {
    let mut q = p::projects.count().into_boxed();
    if let Scope::Owner(user) = scope {
        q = q.filter(p::owner_id.eq(*user));
    }
    Ok(q.get_result(conn).await?)
}
