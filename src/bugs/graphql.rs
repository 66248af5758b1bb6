use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::loaders::{BugCountKey, BugFilterKey, BugListKey, BugParent, BugStatsKey};
use super::model::{BugCategory, BugPriority, BugRow, BugStatus};
use super::repo;
use crate::error::{AppError, AppResult};
use crate::graphql::connection::{Connection, CountSource, Cursor, Keyed, Window};
use crate::graphql::context::req;
use crate::pages::graphql::{Page, load_page};
use crate::sessions::graphql::{CrawlSession, load_session};

/// A defect an agent found, with its evidence and where it stands in triage.
#[derive(Clone)]
pub struct Bug(pub BugRow);

impl Keyed for Bug {
    fn cursor(&self) -> Cursor {
        self.0.cursor()
    }
}

#[Object]
impl Bug {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<CrawlSession> {
        Ok(load_session(ctx, self.0.session_id)
            .await?
            .ok_or(AppError::NotFound {
                entity: "session",
                id: self.0.session_id.to_string(),
            })?)
    }
    async fn page(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Page>> {
        match self.0.page_id {
            Some(id) => Ok(load_page(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn category(&self) -> BugCategory {
        self.0.category
    }
    async fn priority(&self) -> BugPriority {
        self.0.priority
    }
    async fn status(&self) -> BugStatus {
        self.0.status
    }
    async fn steps_to_reproduce(&self) -> Vec<String> {
        match &self.0.steps_to_reproduce {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    async fn evidence(&self) -> Json<&serde_json::Value> {
        Json(&self.0.evidence)
    }
    async fn confidence(&self) -> f64 {
        self.0.confidence
    }
    async fn expected_behavior(&self) -> Option<&str> {
        self.0.expected_behavior.as_deref()
    }
    async fn actual_behavior(&self) -> Option<&str> {
        self.0.actual_behavior.as_deref()
    }
    async fn affected_users(&self) -> Option<&str> {
        self.0.affected_users.as_deref()
    }
    async fn linear_issue_id(&self) -> Option<&str> {
        self.0.linear_issue_id.as_deref()
    }
    async fn dismiss_reason(&self) -> Option<&str> {
        self.0.dismiss_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Narrows a bug list. List fields match any of their values; an empty or absent list does not
/// filter.
#[derive(InputObject, Default)]
pub struct BugFilter {
    pub status: Option<Vec<BugStatus>>,
    pub priority: Option<Vec<BugPriority>>,
    pub category: Option<Vec<BugCategory>>,
    pub min_confidence: Option<f64>,
}

impl BugFilter {
    pub fn into_key(self) -> AppResult<BugFilterKey> {
        BugFilterKey::new(
            self.status.as_deref().unwrap_or_default(),
            self.priority.as_deref().unwrap_or_default(),
            self.category.as_deref().unwrap_or_default(),
            self.min_confidence,
        )
    }
}

struct BugCount(BugCountKey);

impl CountSource for BugCount {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move { Ok(req(ctx)?.loader.load_one(self.0).await?.unwrap_or(0)) }.boxed()
    }
}

/// A parent's bug list through the batch loader: one statement for all parents of a level.
pub async fn bugs_connection(
    ctx: &Context<'_>,
    parent: BugParent,
    filter: BugFilterKey,
    window: Window,
) -> AppResult<Connection<Bug>> {
    let key = BugListKey {
        parent,
        filter,
        window,
    };
    let mut rows = req(ctx)?.loader.load_one(key).await?.unwrap_or_default();
    rows.sort_by_key(|r| (r.created_at, r.id));
    Ok(Connection::from_rows(
        rows.into_iter().map(Bug).collect(),
        &window,
        Box::new(BugCount(BugCountKey { parent, filter })),
    ))
}

#[derive(SimpleObject)]
pub struct PriorityCount {
    pub priority: BugPriority,
    pub count: i32,
}

#[derive(SimpleObject)]
pub struct CategoryCount {
    pub category: BugCategory,
    pub count: i32,
}

#[derive(SimpleObject)]
pub struct BugStatusCount {
    pub status: BugStatus,
    pub count: i32,
}

/// Aggregates over one session's bugs. Every enum value appears in each breakdown.
#[derive(SimpleObject)]
pub struct SessionStatistics {
    pub total_bugs: i32,
    pub avg_confidence: Option<f64>,
    pub by_priority: Vec<PriorityCount>,
    pub by_category: Vec<CategoryCount>,
    pub by_status: Vec<BugStatusCount>,
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl SessionStatistics {
    pub async fn load(ctx: &Context<'_>, session_id: Uuid) -> AppResult<Self> {
        let s = req(ctx)?
            .loader
            .load_one(BugStatsKey(session_id))
            .await?
            .unwrap_or_default();
        Ok(SessionStatistics {
            total_bugs: clamp(s.total),
            avg_confidence: s.avg_confidence,
            by_priority: s
                .by_priority
                .into_iter()
                .map(|(priority, n)| PriorityCount {
                    priority,
                    count: clamp(n),
                })
                .collect(),
            by_category: s
                .by_category
                .into_iter()
                .map(|(category, n)| CategoryCount {
                    category,
                    count: clamp(n),
                })
                .collect(),
            by_status: s
                .by_status
                .into_iter()
                .map(|(status, n)| BugStatusCount {
                    status,
                    count: clamp(n),
                })
                .collect(),
        })
    }
}

#[derive(Default)]
pub struct BugsQuery;

#[Object]
impl BugsQuery {
    /// One bug by id; null when it does not exist.
    async fn bug(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Bug>> {
        let r = req(ctx)?;
        let mut conn = r.db.conn().await?;
        Ok(repo::by_id(&mut conn, id).await?.map(Bug))
    }
}
