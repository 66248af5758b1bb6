use async_graphql::{Context, Json, Object};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::loaders::SessionId;
use super::model::{SessionFilter, SessionRow, SessionStatus};
use super::repo;
use crate::bugs::graphql::{Bug, BugFilter, SessionStatistics, bugs_connection};
use crate::bugs::loaders::BugParent;
use crate::error::AppResult;
use crate::graphql::connection::{Connection, CountSource, Keyed, Window};
use crate::graphql::context::req;
use crate::graphql::scalars::Decimal;
use crate::pages::graphql::{Page, pages_connection};
use crate::pages::loaders::{PageFilter, PageParent};
use crate::pages::model::PageStatus;

/// A crawl of one site: its counters, cost and lifecycle, and the pages and bugs it found.
#[derive(Clone)]
pub struct CrawlSession(pub SessionRow);

impl Keyed for CrawlSession {
    fn cursor(&self) -> crate::graphql::connection::Cursor {
        self.0.cursor()
    }
}

#[Object]
impl CrawlSession {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn base_url(&self) -> &str {
        &self.0.base_url
    }
    async fn status(&self) -> SessionStatus {
        self.0.status
    }
    async fn config(&self) -> Json<&serde_json::Value> {
        Json(&self.0.config)
    }
    async fn pages_discovered(&self) -> i32 {
        self.0.pages_discovered
    }
    async fn pages_crawled(&self) -> i32 {
        self.0.pages_crawled
    }
    async fn bugs_found(&self) -> i32 {
        self.0.bugs_found
    }
    async fn total_cost(&self) -> Decimal {
        Decimal(self.0.total_cost.clone())
    }
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }

    /// Pages in discovery order, optionally limited to one status or a maximum depth.
    async fn pages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        status: Option<PageStatus>,
        max_depth: Option<i32>,
    ) -> async_graphql::Result<Connection<Page>> {
        let window = Window::parse(first, 50, after.as_deref())?;
        let filter = PageFilter::new(status, max_depth)?;
        Ok(pages_connection(ctx, PageParent::Session(self.0.id), filter, window).await?)
    }

    /// Bugs of the whole session in detection order.
    async fn bugs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<BugFilter>,
    ) -> async_graphql::Result<Connection<Bug>> {
        let window = Window::parse(first, 50, after.as_deref())?;
        let filter = filter.unwrap_or_default().into_key()?;
        Ok(bugs_connection(ctx, BugParent::Session(self.0.id), filter, window).await?)
    }

    /// Aggregates over the session's bugs, computed in one grouped statement for all sessions.
    async fn statistics(&self, ctx: &Context<'_>) -> async_graphql::Result<SessionStatistics> {
        Ok(SessionStatistics::load(ctx, self.0.id).await?)
    }
}

/// Loads one session by id through the request's batch loader.
pub async fn load_session(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<CrawlSession>> {
    let r = req(ctx)?;
    Ok(r.loader.load_one(SessionId(id)).await?.map(CrawlSession))
}

struct SessionCount(SessionFilter);

impl CountSource for SessionCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move {
            let r = req(ctx)?;
            let mut conn = r.db.conn().await?;
            repo::count(&mut conn, &self.0).await
        }
        .boxed()
    }
}

#[derive(Default)]
pub struct SessionsQuery;

#[Object]
impl SessionsQuery {
    /// One session by id; null when it does not exist.
    async fn session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<CrawlSession>> {
        Ok(load_session(ctx, id).await?)
    }

    /// Sessions, newest first.
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
        status: Option<SessionStatus>,
        base_url: Option<String>,
    ) -> async_graphql::Result<Connection<CrawlSession>> {
        let window = Window::parse(first, 20, after.as_deref())?;
        let filter = SessionFilter { status, base_url };
        let r = req(ctx)?;
        let mut conn = r.db.conn().await?;
        let rows = repo::list(&mut conn, &filter, &window).await?;
        drop(conn);
        let rows = rows.into_iter().map(CrawlSession).collect();
        Ok(Connection::from_rows(
            rows,
            &window,
            Box::new(SessionCount(filter)),
        ))
    }
}
