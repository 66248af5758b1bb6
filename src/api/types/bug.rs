use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, ScalarType, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::connection::{Connection, children};
use crate::api::context::{actor, detached, req};
use crate::api::exec::fast::{self, Leaf};
use crate::api::types::comment::{Comment, comments_connection};
use crate::api::types::evidence::{Evidence, bug_credibility, evidence_connection};
use crate::api::types::page::{Page, load_page_here};
use crate::api::types::search::{SimilarBug, similar_bugs};
use crate::api::types::session::{CrawlSession, load_session_here};
use crate::auth::Perm;
use crate::error::{AppError, AppResult};
use crate::store::bugs::keys::{BugFilterKey, BugParent, BugStatsKey};
use crate::store::bugs::model::{BugCategory, BugPriority, BugRow, BugStatus};
use crate::store::bugs::repo::{self, BugChange, NewBug};
use crate::store::evidence::keys::EvidenceParent;
use crate::store::page::Window;

/// A defect an agent found, with its evidence and where it stands in triage.
#[derive(Clone)]
pub struct Bug(pub Arc<BugRow>);

impl crate::api::connection::SlimNode for Bug {
    const NEEDS: &'static [(&'static str, &'static str)] = &[
        ("session", "session_id"),
        ("page", "page_id"),
        ("title", "title"),
        ("description", "description"),
        ("category", "category"),
        ("priority", "priority"),
        ("status", "status"),
        ("confidence", "confidence"),
        ("linearIssueId", "linear_issue_id"),
        ("updatedAt", "updated_at"),
        ("stepsToReproduce", "steps_to_reproduce"),
        ("evidence", "evidence"),
        ("expectedBehavior", "expected_behavior"),
        ("actualBehavior", "actual_behavior"),
        ("affectedUsers", "affected_users"),
        ("dismissReason", "dismiss_reason"),
    ];
}

impl From<BugRow> for Bug {
    fn from(row: BugRow) -> Self {
        Bug(Arc::new(row))
    }
}

/// The generated resolvers of `Bug`; [`Bug`]'s own `OutputType` answers plain columns without
/// them (see `api::exec::fast`).
pub struct BugFields(Arc<BugRow>);

fast::fast_output_type!(Bug, BugFields, "Bug", |row| {
    "id" => Leaf::Uuid(row.id),
    "title" => Leaf::Str(&row.title),
    "description" => Leaf::Str(&row.description),
    "category" => Leaf::enumeration(row.category),
    "priority" => Leaf::enumeration(row.priority),
    "status" => Leaf::enumeration(row.status),
    "confidence" => Leaf::Float(row.confidence),
    "expectedBehavior" => Leaf::opt_str(&row.expected_behavior),
    "actualBehavior" => Leaf::opt_str(&row.actual_behavior),
    "affectedUsers" => Leaf::opt_str(&row.affected_users),
    "linearIssueId" => Leaf::opt_str(&row.linear_issue_id),
    "dismissReason" => Leaf::opt_str(&row.dismiss_reason),
    "createdAt" => Leaf::Other(ScalarType::to_value(&row.created_at)),
    "updatedAt" => Leaf::Other(ScalarType::to_value(&row.updated_at)),
});

/// A defect an agent found, with its evidence and where it stands in triage.
#[Object(name = "Bug")]
impl BugFields {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<CrawlSession> {
        Ok(load_session_here(ctx, self.0.session_id)
            .await?
            .ok_or(AppError::NotFound {
                entity: "session",
                id: self.0.session_id.to_string(),
            })?)
    }
    async fn page(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Page>> {
        match self.0.page_id {
            Some(id) => Ok(load_page_here(ctx, id).await?),
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
        match self.0.steps_to_reproduce.value() {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    async fn evidence(&self) -> Json<serde_json::Value> {
        Json(self.0.evidence.value())
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
    /// Evidence registered for this bug (`addEvidence`), oldest first; the `evidence` JSON
    /// array is the crawler's own and stays as reported.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn evidence_items(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        verified: Option<bool>,
    ) -> async_graphql::Result<Connection<Evidence>> {
        Ok(
            evidence_connection(ctx, EvidenceParent::Bug(self.0.id), first, after, verified)
                .await?,
        )
    }
    /// Comments by users and agents, newest first; deleted ones are left out.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn comments(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<Comment>> {
        Ok(comments_connection(ctx, self.0.id, first, after).await?)
    }
    /// How credible the bug is on its registered evidence: their mean credibility, verified
    /// evidence counting twice; null without evidence. One statement per level.
    async fn credibility(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        Ok(bug_credibility(ctx, self.0.id).await?)
    }
    /// Bugs of the same site (base URL) or project with a similar title and page, most similar
    /// first: one statement for every bug of a level.
    #[graphql(complexity = "crate::api::connection::cost(first, 10, child_complexity)")]
    async fn similar(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] first: Option<i32>,
        #[graphql(default = 0.0)] min_score: f64,
    ) -> async_graphql::Result<Vec<SimilarBug>> {
        Ok(similar_bugs(ctx, self.0.id, first.unwrap_or(10), min_score, false).await?)
    }
    /// Likely originals of this bug: similar bugs reported before it (not its own batch),
    /// scoring at least `minScore`. `reportBugs` answers with them, so a crawler can skip
    /// re-reporting.
    #[graphql(complexity = "crate::api::connection::cost(first, 5, child_complexity)")]
    async fn duplicate_candidates(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 5)] first: Option<i32>,
        #[graphql(default = 0.6)] min_score: f64,
    ) -> async_graphql::Result<Vec<SimilarBug>> {
        Ok(similar_bugs(ctx, self.0.id, first.unwrap_or(5), min_score, true).await?)
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

/// A bug list's filter and window from its arguments.
pub fn bug_list(
    first: Option<i32>,
    after: Option<&str>,
    filter: Option<BugFilter>,
) -> AppResult<(BugFilterKey, Window)> {
    Ok((
        filter.unwrap_or_default().into_key()?,
        Window::parse(first, 50, after)?,
    ))
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

/// A parent's bug list, through the one child-list loader.
pub async fn bugs_connection(
    ctx: &Context<'_>,
    parent: BugParent,
    filter: BugFilterKey,
    window: Window,
) -> AppResult<Connection<Bug>> {
    children(ctx, parent, filter, window, Bug).await
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
        Ok(repo::by_id(&mut conn, &r.actor.scope(), id)
            .await?
            .map(Bug::from))
    }
}

/// Most bugs one `reportBugs` call accepts.
pub const MAX_BUGS_PER_CALL: usize = 1_000;
const MAX_TITLE_LEN: usize = 500;
const MAX_TEXT_LEN: usize = 50_000;
const MAX_STEPS: usize = 100;

#[derive(InputObject)]
pub struct BugInput {
    /// A page of the same session, if the bug belongs to one page.
    pub page_id: Option<Uuid>,
    pub title: String,
    pub description: Option<String>,
    pub category: BugCategory,
    pub priority: BugPriority,
    pub steps_to_reproduce: Option<Vec<String>>,
    /// An array of typed items; see the README for the shape.
    pub evidence: Option<Json<serde_json::Value>>,
    /// Between 0 and 1.
    pub confidence: f64,
    pub expected_behavior: Option<String>,
    pub actual_behavior: Option<String>,
    pub affected_users: Option<String>,
}

fn check_len(field: String, value: Option<&str>, max: usize) -> AppResult<()> {
    match value {
        Some(v) if v.chars().count() > max => Err(AppError::bad_field(
            field,
            format!("longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

fn validate_bug(i: usize, b: BugInput) -> AppResult<NewBug> {
    let f = |name: &str| format!("bugs[{i}].{name}");
    if b.title.trim().is_empty() {
        return Err(AppError::bad_field(
            f("title"),
            format!("{} must not be empty", f("title")),
        ));
    }
    check_len(f("title"), Some(&b.title), MAX_TITLE_LEN)?;
    for (name, v) in [
        ("description", &b.description),
        ("expectedBehavior", &b.expected_behavior),
        ("actualBehavior", &b.actual_behavior),
        ("affectedUsers", &b.affected_users),
    ] {
        check_len(f(name), v.as_deref(), MAX_TEXT_LEN)?;
    }
    if !(0.0..=1.0).contains(&b.confidence) {
        return Err(AppError::bad_field(
            f("confidence"),
            format!(
                "{} must be between 0 and 1, got {}",
                f("confidence"),
                b.confidence
            ),
        ));
    }
    let steps = b.steps_to_reproduce.unwrap_or_default();
    if steps.len() > MAX_STEPS {
        return Err(AppError::bad_field(
            f("stepsToReproduce"),
            format!("at most {MAX_STEPS} steps"),
        ));
    }
    for (j, s) in steps.iter().enumerate() {
        check_len(
            format!("bugs[{i}].stepsToReproduce[{j}]"),
            Some(s),
            MAX_TEXT_LEN,
        )?;
    }
    let evidence = crate::store::bugs::evidence::validate(
        b.evidence.map(|j| j.0).unwrap_or_default(),
        &f("evidence"),
    )
    .map_err(|m| AppError::bad_field(m.path, m.message))?;
    Ok(NewBug {
        id: Uuid::now_v7(),
        page_id: b.page_id,
        title: b.title,
        description: b.description.unwrap_or_default(),
        category: b.category,
        priority: b.priority,
        steps_to_reproduce: serde_json::Value::from(steps),
        evidence,
        confidence: b.confidence,
        expected_behavior: b.expected_behavior,
        actual_behavior: b.actual_behavior,
        affected_users: b.affected_users,
    })
}

async fn move_bug(ctx: &Context<'_>, id: Uuid, change: BugChange) -> AppResult<Bug> {
    let actor = actor(ctx, Perm::ReviewBugs)?;
    let row = detached(ctx, move |mut conn| async move {
        repo::transition(&mut conn, actor, id, change).await
    })
    .await?;
    Ok(Bug::from(row))
}

fn non_empty(field: &str, v: String) -> AppResult<String> {
    if v.trim().is_empty() {
        return Err(AppError::bad_field(
            field,
            format!("{field} must not be empty"),
        ));
    }
    check_len(field.to_owned(), Some(&v), MAX_TEXT_LEN)?;
    Ok(v)
}

#[derive(Default)]
pub struct BugsMutation;

#[Object]
impl BugsMutation {
    /// Stores up to 1,000 bugs atomically: one invalid item and nothing is written. Only while
    /// the session is PENDING or RUNNING.
    async fn report_bugs(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
        bugs: Vec<BugInput>,
    ) -> async_graphql::Result<Vec<Bug>> {
        if bugs.len() > MAX_BUGS_PER_CALL {
            return Err(AppError::bad_field(
                "bugs",
                format!(
                    "at most {MAX_BUGS_PER_CALL} bugs per call, got {}",
                    bugs.len()
                ),
            )
            .into());
        }
        let items = bugs
            .into_iter()
            .enumerate()
            .map(|(i, b)| validate_bug(i, b))
            .collect::<AppResult<Vec<_>>>()?;
        let actor = actor(ctx, Perm::Ingest)?;
        let rows = detached(ctx, move |mut conn| async move {
            repo::report(&mut conn, actor, session_id, items).await
        })
        .await?;
        Ok(rows.into_iter().map(Bug::from).collect())
    }

    /// DETECTED → VALIDATED.
    async fn validate_bug(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Bug> {
        Ok(move_bug(ctx, id, BugChange::Validate).await?)
    }

    /// VALIDATED → REPORTED, recording the tracker issue.
    async fn mark_bug_reported(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        linear_issue_id: String,
    ) -> async_graphql::Result<Bug> {
        let linear_issue_id = non_empty("linearIssueId", linear_issue_id)?;
        Ok(move_bug(ctx, id, BugChange::MarkReported { linear_issue_id }).await?)
    }

    /// DETECTED, VALIDATED or REPORTED → DISMISSED, with a reason.
    async fn dismiss_bug(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        reason: String,
    ) -> async_graphql::Result<Bug> {
        let reason = non_empty("reason", reason)?;
        Ok(move_bug(ctx, id, BugChange::Dismiss { reason }).await?)
    }

    /// DISMISSED → DETECTED; the dismissal reason is cleared.
    async fn reopen_bug(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Bug> {
        Ok(move_bug(ctx, id, BugChange::Reopen).await?)
    }
}

crate::api::scalars::graphql_enum!(
    crate::store::bugs::model::BugStatus,
    crate::store::bugs::model::BugPriority,
    crate::store::bugs::model::BugCategory,
);
