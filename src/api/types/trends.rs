use std::collections::BTreeMap;

use async_graphql::{Context, Enum, Object, SimpleObject};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use uuid::Uuid;

use crate::api::context::req;
use crate::api::scalars::Decimal;
use crate::api::types::bug::{CategoryCount, PriorityCount};
use crate::error::{AppError, AppResult};
use crate::store::bugs::model::{BugCategory, BugPriority};
use crate::store::pages::url::normalize_url;
use crate::store::sessions::model::SessionStatus;
use crate::store::trends::repo::{self, TrendArgs};

/// The width of a trend bucket.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TrendBucket {
    /// Calendar days (UTC).
    Day,
    /// ISO weeks (UTC), Monday first.
    Week,
}

/// Longest window `trends` answers, in buckets.
const MAX_BUCKETS: i64 = 400;

#[derive(SimpleObject)]
pub struct SessionStatusCount {
    pub status: SessionStatus,
    pub count: i32,
}

/// One bucket of a trend: what was found and spent in sessions and bugs created in it.
#[derive(SimpleObject)]
pub struct TrendPoint {
    /// The bucket's first instant (UTC midnight; a Monday for weeks).
    pub start: DateTime<Utc>,
    pub bugs: i32,
    /// Every priority, zeros included.
    pub bugs_by_priority: Vec<PriorityCount>,
    /// Every category, zeros included.
    pub bugs_by_category: Vec<CategoryCount>,
    pub sessions: i32,
    /// Sessions created in the bucket, by their status now; every status, zeros included.
    pub sessions_by_status: Vec<SessionStatusCount>,
    /// The cost of the sessions created in the bucket, exact.
    pub cost: Decimal,
}

/// Trends across the sessions the caller may see, from rollups refreshed every
/// `TRENDS_REFRESH_SECS` (see `refreshedAt`).
#[derive(SimpleObject)]
pub struct Trends {
    pub bucket: TrendBucket,
    /// When the last refresh of the rollups behind this answer began: everything committed
    /// before it is in the answer (later changes may be too).
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Every bucket from `from` up to `to`, empty ones included, oldest first.
    pub points: Vec<TrendPoint>,
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::UNIX_EPOCH)
}

#[derive(Default)]
struct Acc {
    priority: BTreeMap<BugPriority, i64>,
    category: BTreeMap<BugCategory, i64>,
    status: BTreeMap<SessionStatus, i64>,
    cost: BigDecimal,
}

#[derive(Default)]
pub struct TrendsQuery;

#[Object]
impl TrendsQuery {
    /// Bugs found by priority and category, sessions by status, and cost, per day or week, across
    /// the sessions the caller may see (optionally one project's or one site's). `from` is
    /// inclusive and `to` exclusive, both taken at their UTC day; at most 400 buckets.
    async fn trends(
        &self,
        ctx: &Context<'_>,
        project_id: Option<Uuid>,
        base_url: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(desc = "DAY when absent or null.")] bucket: Option<TrendBucket>,
    ) -> async_graphql::Result<Trends> {
        let bucket = bucket.unwrap_or(TrendBucket::Day);
        Ok(trends(ctx, project_id, base_url, from, to, bucket).await?)
    }
}

async fn trends(
    ctx: &Context<'_>,
    project_id: Option<Uuid>,
    base_url: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: TrendBucket,
) -> AppResult<Trends> {
    // As given (how `sessions(baseUrl:)` matches) or normalized (how `createSession` stores it).
    let base_urls = base_url
        .map(|u| {
            let normalized = normalize_url(&u).map_err(|m| AppError::bad_field("baseUrl", m))?;
            Ok::<_, AppError>(vec![u, normalized])
        })
        .transpose()?;
    let (step, unit) = match bucket {
        TrendBucket::Day => (Duration::days(1), "day"),
        TrendBucket::Week => (Duration::weeks(1), "week"),
    };
    let mut first = from.date_naive();
    if bucket == TrendBucket::Week {
        first -= Duration::days(i64::from(first.weekday().num_days_from_monday()));
    }
    let end = to.date_naive();
    if end <= from.date_naive() {
        return Err(AppError::bad_field(
            "to",
            "to must be at least a day after from",
        ));
    }
    if (end - first).num_days() > MAX_BUCKETS * step.num_days() {
        return Err(AppError::bad_field(
            "to",
            format!("at most {MAX_BUCKETS} buckets per call"),
        ));
    }
    let args = TrendArgs {
        project_id,
        base_urls,
        from: first,
        to: end,
        bucket: unit,
    };
    let r = req(ctx)?;
    let scope = r.actor.scope();
    let mut conn = r.db.conn().await?;
    let bugs = repo::bugs(&mut conn, &scope, &args).await?;
    let sessions = repo::sessions(&mut conn, &scope, &args).await?;
    let refreshed_at = repo::refreshed_at(&mut conn).await?;
    drop(conn);

    let mut acc: BTreeMap<NaiveDate, Acc> = BTreeMap::new();
    let mut day = first;
    while day < end {
        acc.insert(day, Acc::default());
        day += step;
    }
    for b in bugs {
        let (Some(a), Some(p), Some(c)) = (
            acc.get_mut(&b.bucket),
            BugPriority::from_db(&b.priority),
            BugCategory::from_db(&b.category),
        ) else {
            continue;
        };
        *a.priority.entry(p).or_default() += b.bugs;
        *a.category.entry(c).or_default() += b.bugs;
    }
    for s in sessions {
        let (Some(a), Some(st)) = (acc.get_mut(&s.bucket), SessionStatus::from_db(&s.status))
        else {
            continue;
        };
        *a.status.entry(st).or_default() += s.sessions;
        a.cost += s.cost;
    }
    let points = acc
        .into_iter()
        .map(|(day, a)| TrendPoint {
            start: midnight(day),
            bugs: clamp(a.priority.values().sum()),
            bugs_by_priority: BugPriority::ALL
                .iter()
                .map(|&priority| PriorityCount {
                    priority,
                    count: clamp(a.priority.get(&priority).copied().unwrap_or(0)),
                })
                .collect(),
            bugs_by_category: BugCategory::ALL
                .iter()
                .map(|&category| CategoryCount {
                    category,
                    count: clamp(a.category.get(&category).copied().unwrap_or(0)),
                })
                .collect(),
            sessions: clamp(a.status.values().sum()),
            sessions_by_status: SessionStatus::ALL
                .iter()
                .map(|&status| SessionStatusCount {
                    status,
                    count: clamp(a.status.get(&status).copied().unwrap_or(0)),
                })
                .collect(),
            cost: Decimal(a.cost),
        })
        .collect();
    Ok(Trends {
        bucket,
        refreshed_at,
        points,
    })
}
