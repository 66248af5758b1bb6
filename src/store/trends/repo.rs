//! Reading and refreshing the trend rollups.

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::prelude::OptionalExtension;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::store::scope::Scope;
use crate::store::sql::{Bind, Sql};
use crate::store::{Conn, Db};

/// What a `trends` call covers.
#[derive(Debug, Clone)]
pub struct TrendArgs {
    pub project_id: Option<Uuid>,
    /// Sessions of one site: any of these spellings of its base URL.
    pub base_urls: Option<Vec<String>>,
    /// First day, inclusive.
    pub from: NaiveDate,
    /// Last day, exclusive.
    pub to: NaiveDate,
    /// `day` or `week` (weeks start on Monday), as `date_trunc` names them.
    pub bucket: &'static str,
}

#[derive(QueryableByName, Debug)]
pub struct BugTrend {
    #[diesel(sql_type = diesel::sql_types::Date)]
    pub bucket: NaiveDate,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub priority: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub category: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub bugs: i64,
}

#[derive(QueryableByName, Debug)]
pub struct SessionTrend {
    #[diesel(sql_type = diesel::sql_types::Date)]
    pub bucket: NaiveDate,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub sessions: i64,
    #[diesel(sql_type = diesel::sql_types::Numeric)]
    pub cost: BigDecimal,
}

/// `WHERE …` of a rollup: the window, the filters and the caller's scope (the owner or the
/// project's owner, as the visibility of sessions has it).
fn window(q: &mut Sql, scope: &Scope, args: &TrendArgs) {
    q.push(" WHERE day >= ")
        .bind(Bind::Text(args.from.to_string()))
        .push("::date AND day < ")
        .bind(Bind::Text(args.to.to_string()))
        .push("::date");
    if let Some(p) = args.project_id {
        q.push(" AND project_key = ").bind(Bind::Uuid(p));
    }
    if let Some(urls) = &args.base_urls {
        q.push(" AND base_url = ANY(")
            .bind(Bind::Texts(urls.clone()))
            .push(")");
    }
    if let Scope::Owner(user) = scope {
        q.push(" AND (owner_key = ")
            .bind(Bind::Uuid(*user))
            .push(" OR project_key IN (SELECT id FROM projects WHERE owner_id = ")
            .bind(Bind::Uuid(*user))
            .push("))");
    }
}

fn bucket_expr(args: &TrendArgs) -> String {
    format!("date_trunc('{}', day)::date AS bucket", args.bucket)
}

/// Bugs per bucket, priority and category: one grouped statement over the daily rollup.
pub async fn bugs(conn: &mut Conn, scope: &Scope, args: &TrendArgs) -> AppResult<Vec<BugTrend>> {
    let mut q = Sql::new("SELECT ");
    q.push(&bucket_expr(args))
        .push(", priority, category, sum(bugs)::bigint AS bugs FROM trend_bugs_daily");
    window(&mut q, scope, args);
    q.push(" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    Ok(q.load(conn).await?)
}

/// Sessions and their cost per bucket and status: one grouped statement over the daily rollup.
pub async fn sessions(
    conn: &mut Conn,
    scope: &Scope,
    args: &TrendArgs,
) -> AppResult<Vec<SessionTrend>> {
    let mut q = Sql::new("SELECT ");
    q.push(&bucket_expr(args)).push(
        ", status, sum(sessions)::bigint AS sessions, \
         sum(cost)::numeric(14, 4) AS cost FROM trend_sessions_daily",
    );
    window(&mut q, scope, args);
    q.push(" GROUP BY 1, 2 ORDER BY 1, 2");
    Ok(q.load(conn).await?)
}

#[derive(QueryableByName)]
struct Refreshed {
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    refreshed_at: DateTime<Utc>,
}

/// When the rollups were last refreshed.
pub async fn refreshed_at(conn: &mut Conn) -> AppResult<Option<DateTime<Utc>>> {
    let r: Option<Refreshed> =
        Sql::new("SELECT refreshed_at FROM trend_refreshes WHERE view_name = 'trends'")
            .get_result(conn)
            .await
            .optional()?;
    Ok(r.map(|r| r.refreshed_at))
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Arbitrary, fixed: the advisory lock that lets one replica refresh at a time.
const REFRESH_LOCK: i64 = 0x6275_6768_7472_6e64;

#[derive(QueryableByName)]
struct Fresh {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    fresh: bool,
}

/// Refreshes both rollups concurrently (readers keep reading the old rows meanwhile), unless
/// another replica is refreshing them right now or did less than `min_age` ago (so N replicas
/// still refresh about once per interval); returns whether this call did. The statement
/// timeout of the pool does not apply: a refresh over millions of bugs may take longer than
/// any request should. `refreshed_at` records when the refresh began: everything committed
/// before it is in the rollups (later changes may be too).
pub async fn refresh(db: &Db, min_age: std::time::Duration) -> AppResult<bool> {
    let db = db.clone();
    let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
    crate::store::run_detached(async move {
        let mut conn = db.conn().await?;
        conn.transaction::<bool, AppError, _>(async move |c| {
            let mut q = Sql::new("SELECT pg_try_advisory_xact_lock(");
            q.bind(Bind::BigInt(REFRESH_LOCK)).push(") AS locked");
            let l: Locked = q.get_result(c).await?;
            if !l.locked {
                return Ok(false);
            }
            let mut q = Sql::new(
                "SELECT coalesce(bool_or(refreshed_at > clock_timestamp() - \
                 make_interval(secs => ",
            );
            q.bind(Bind::BigInt(min_age_ms)).push(
                " / 1000.0)), false) AS fresh FROM trend_refreshes WHERE view_name = 'trends'",
            );
            if q.get_result::<Fresh>(c).await?.fresh {
                return Ok(false);
            }
            let began: Refreshed = Sql::new("SELECT clock_timestamp() AS refreshed_at")
                .get_result(c)
                .await?;
            Sql::new("SET LOCAL statement_timeout = 0")
                .execute(c)
                .await?;
            Sql::new("REFRESH MATERIALIZED VIEW CONCURRENTLY trend_bugs_daily")
                .execute(c)
                .await?;
            Sql::new("REFRESH MATERIALIZED VIEW CONCURRENTLY trend_sessions_daily")
                .execute(c)
                .await?;
            let mut q = Sql::new("INSERT INTO trend_refreshes VALUES ('trends', ");
            q.bind(Bind::Timestamp(began.refreshed_at)).push(
                ") ON CONFLICT (view_name) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at",
            );
            q.execute(c).await?;
            Ok(true)
        })
        .await
    })
    .await
}
