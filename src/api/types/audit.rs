use std::sync::Arc;

use async_graphql::{Context, Json, Object};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::api::connection::{Connection, CountSource};
use crate::api::context::{principal, req};
use crate::api::types::user::{User, load_user};
use crate::auth::Perm;
use crate::error::AppResult;
use crate::store::audit::model::{AuditFilter, AuditRow};
use crate::store::audit::repo;
use crate::store::page::Window;

/// One change: who made it, to what, and the state before and after.
#[derive(Clone)]
pub struct AuditEntry(pub Arc<AuditRow>);

impl crate::api::connection::ListItem for AuditEntry {}

#[Object]
impl AuditEntry {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The acting user; null for the system (the lease reaper).
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        match self.0.actor_id {
            Some(id) => Ok(load_user(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn actor_subject(&self) -> &str {
        &self.0.actor_subject
    }
    async fn actor_role(&self) -> &str {
        &self.0.actor_role
    }
    /// The mutation, e.g. `startSession`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// `session`, `page`, `bug`, `job`, `project` or `user`.
    async fn resource_type(&self) -> &str {
        &self.0.resource_type
    }
    async fn resource_id(&self) -> Option<Uuid> {
        self.0.resource_id
    }
    async fn old_value(&self) -> Option<Json<serde_json::Value>> {
        self.0.old_value.as_ref().map(|v| Json(v.value()))
    }
    async fn new_value(&self) -> Option<Json<serde_json::Value>> {
        self.0.new_value.as_ref().map(|v| Json(v.value()))
    }
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

struct AuditCount(AuditFilter);

impl CountSource for AuditCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let mut conn = req(ctx)?.db.conn().await?;
            repo::count(&mut conn, &self.0).await
        }
        .boxed()
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit log, newest first (admins only). `since` is inclusive, `until` exclusive.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per filter of the API"
    )]
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        resource_type: Option<String>,
        resource_id: Option<Uuid>,
        actor_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Connection<AuditEntry>> {
        principal(ctx)?.require(Perm::ReadAuditLog)?;
        let window = Window::parse(first, 50, after.as_deref())?;
        let filter = AuditFilter {
            resource_type,
            resource_id,
            actor_id,
            since,
            until,
        };
        let mut conn = req(ctx)?.db.conn().await?;
        let rows = repo::list(&mut conn, &filter, &window).await?;
        Ok(Connection::from_rows(
            rows,
            |r| AuditEntry(Arc::new(r)),
            &window,
            Box::new(AuditCount(filter)),
        ))
    }
}
