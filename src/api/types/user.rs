use std::sync::Arc;

use async_graphql::{Context, Object};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::api::connection::{Connection, CountSource};
use crate::api::context::{actor, detached, principal, req};
use crate::auth::{Perm, Scope};
use crate::error::{AppError, AppResult};
use crate::store::audit::repo::{self as audit, Entry};
use crate::store::batch::Id;
use crate::store::page::Window;
use crate::store::users::model::{ProjectRow, Role, UserRow};
use crate::store::users::repo;

/// Someone who calls the gateway: provisioned from the identity provider's `sub`.
#[derive(Clone)]
pub struct User(pub Arc<UserRow>);

impl crate::api::connection::ListItem for User {}

#[Object]
impl User {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The identity provider's `sub`.
    async fn subject(&self) -> &str {
        &self.0.subject
    }
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }
    async fn role(&self) -> Role {
        self.0.role
    }
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn last_seen_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_seen_at
    }
}

/// A group of sessions; its owner sees and changes every session in it.
#[derive(Clone)]
pub struct Project(pub Arc<ProjectRow>);

impl crate::api::connection::ListItem for Project {}

#[Object]
impl Project {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn owner(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        Ok(load_user(ctx, self.0.owner_id).await?)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A user by id (owners of visible sessions and projects are visible).
pub async fn load_user(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<User>> {
    Ok(req(ctx)?
        .loader
        .load_one(Id::<UserRow>::new(id))
        .await?
        .map(User))
}

pub async fn load_project(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<Project>> {
    Ok(req(ctx)?
        .loader
        .load_one(Id::<ProjectRow>::new(id))
        .await?
        .map(Project))
}

struct UserCount;

impl CountSource for UserCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let mut conn = req(ctx)?.db.conn().await?;
            repo::count(&mut conn).await
        }
        .boxed()
    }
}

struct ProjectCount(Scope);

impl CountSource for ProjectCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let mut conn = req(ctx)?.db.conn().await?;
            repo::count_projects(&mut conn, &self.0).await
        }
        .boxed()
    }
}

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let p = principal(ctx)?;
        load_user(ctx, p.user_id).await?.ok_or_else(|| {
            AppError::NotFound {
                entity: "user",
                id: p.user_id.to_string(),
            }
            .into()
        })
    }

    /// Every user, oldest first (admins and managers).
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<User>> {
        principal(ctx)?.require(Perm::SeeUsers)?;
        let window = Window::parse(first, 50, after.as_deref())?;
        let mut conn = req(ctx)?.db.conn().await?;
        let rows = repo::list(&mut conn, &window).await?;
        Ok(Connection::from_rows(
            rows,
            |r| User(Arc::new(r)),
            &window,
            Box::new(UserCount),
        ))
    }

    /// Projects the caller may see (a user sees its own), oldest first.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<Project>> {
        let scope = principal(ctx)?.scope();
        let window = Window::parse(first, 50, after.as_deref())?;
        let mut conn = req(ctx)?.db.conn().await?;
        let rows = repo::list_projects(&mut conn, &scope, &window).await?;
        Ok(Connection::from_rows(
            rows,
            |r| Project(Arc::new(r)),
            &window,
            Box::new(ProjectCount(scope)),
        ))
    }
}

fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Creates a project owned by the caller.
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        slug: String,
        name: String,
    ) -> async_graphql::Result<Project> {
        let actor = actor(ctx, Perm::CreateProjects)?;
        if !valid_slug(&slug) {
            return Err(AppError::bad_field(
                "slug",
                "slug must be 1-63 lower-case letters, digits or '-', starting with a letter or digit",
            )
            .into());
        }
        if name.trim().is_empty() || name.chars().count() > 200 {
            return Err(AppError::bad_field("name", "name must be 1-200 characters").into());
        }
        let row = detached(ctx, move |mut conn| async move {
            use diesel_async::AsyncConnection;
            conn.transaction::<ProjectRow, AppError, _>(async move |c| {
                let row = repo::create_project(c, slug, name, actor.user_id).await?;
                let entry = Entry::row("createProject", "project", row.id, None, "projects");
                audit::record(c, &actor, entry).await?;
                Ok(row)
            })
            .await
        })
        .await?;
        Ok(Project(Arc::new(row)))
    }

    /// Changes a user's role and/or deactivates or reactivates it (admins only). Takes effect
    /// within the principal cache's 30 seconds on other replicas, at once on this one.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        role: Option<Role>,
        is_active: Option<bool>,
    ) -> async_graphql::Result<User> {
        let actor = actor(ctx, Perm::AdministerUsers)?;
        if id == actor.user_id
            && (is_active == Some(false) || role.is_some_and(|r| r != Role::Admin))
        {
            return Err(
                AppError::bad_input("admins cannot demote or deactivate themselves").into(),
            );
        }
        let row = detached(ctx, move |mut conn| async move {
            use diesel_async::AsyncConnection;
            conn.transaction::<UserRow, AppError, _>(async move |c| {
                let (old, _) = repo::lock(c, id).await?;
                let row = repo::update(c, id, role, is_active).await?;
                let entry = Entry::row("updateUser", "user", id, Some(old), "users");
                audit::record(c, &actor, entry).await?;
                Ok(row)
            })
            .await
        })
        .await?;
        if let Ok(auth) = ctx.data::<crate::auth::Authenticator>() {
            auth.forget(Some(&row.subject));
        }
        Ok(User(Arc::new(row)))
    }
}

crate::api::scalars::graphql_enum!(crate::store::users::model::Role,);
