use std::sync::Arc;

use async_graphql::{Context, Object, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::api::connection::PageInfo;
use crate::api::context::req;
use crate::api::types::bug::{Bug, BugFilter};
use crate::error::{AppError, AppResult};
use crate::store::search::keys::{SimilarHit, SimilarKey};
use crate::store::search::repo::{self, SearchArgs, SimilarArgs};

/// Longest `searchBugs` query accepted.
const MAX_QUERY_LEN: usize = 500;
/// Most results one page of `searchBugs` or `similar` returns.
const MAX_FIRST: i32 = 100;

/// One `searchBugs` match.
pub struct BugSearchHit(repo::Hit);

#[Object]
impl BugSearchHit {
    async fn bug(&self) -> Bug {
        Bug(Arc::new(self.0.bug.clone()))
    }
    /// Relevance (`ts_rank_cd` over title, then description, then steps and behaviours); higher
    /// is better, comparable within one search only.
    async fn rank(&self) -> f64 {
        self.0.rank
    }
    /// Title and description around the matches, HTML-escaped, matches in `<mark>…</mark>`.
    async fn snippet(&self) -> &str {
        &self.0.snippet
    }
}

#[derive(SimpleObject)]
pub struct BugSearchHitEdge {
    pub cursor: String,
    pub node: BugSearchHit,
}

/// Ranked matches. Cursors are positions in the ranking: a page after a cursor continues the
/// ranking as it is when asked (search results are not stable under inserts, like any search).
pub struct BugSearchHitConnection {
    edges: Vec<BugSearchHitEdge>,
    has_next: bool,
    offset: i64,
    args: SearchArgs,
}

#[Object]
impl BugSearchHitConnection {
    async fn edges(&self) -> &Vec<BugSearchHitEdge> {
        &self.edges
    }
    async fn nodes(&self) -> Vec<&BugSearchHit> {
        self.edges.iter().map(|e| &e.node).collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next,
            has_previous_page: self.offset > 0,
            start_cursor: self.edges.first().map(|e| e.cursor.clone()),
            end_cursor: self.edges.last().map(|e| e.cursor.clone()),
        }
    }
    /// Matches the caller may see, ignoring `first` and `after`.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let r = req(ctx)?;
        let mut conn = r.db.conn().await?;
        Ok(repo::count(&mut conn, &r.actor.scope(), &self.args).await?)
    }
}

fn encode(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("rank:{position}"))
}

fn decode(cursor: &str) -> AppResult<i64> {
    let bad = || AppError::bad_field("after", format!("invalid cursor {cursor:?}"));
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad())?;
    let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
    raw.strip_prefix("rank:")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| (0..1_000_000).contains(n))
        .ok_or_else(bad)
}

/// Ranked full-text search over the bugs the caller may see.
pub async fn search_bugs(
    ctx: &Context<'_>,
    query: String,
    session_id: Option<Uuid>,
    project_id: Option<Uuid>,
    filter: Option<BugFilter>,
    first: i32,
    after: Option<String>,
) -> AppResult<BugSearchHitConnection> {
    let query = query.trim().to_owned();
    if query.is_empty() {
        return Err(AppError::bad_field("query", "query must not be empty"));
    }
    if query.chars().count() > MAX_QUERY_LEN {
        return Err(AppError::bad_field(
            "query",
            format!("query is longer than {MAX_QUERY_LEN} characters"),
        ));
    }
    if !(0..=MAX_FIRST).contains(&first) {
        return Err(AppError::bad_field(
            "first",
            format!("first must be between 0 and {MAX_FIRST}"),
        ));
    }
    let offset = match after.as_deref() {
        Some(c) => decode(c)? + 1,
        None => 0,
    };
    let args = SearchArgs {
        query,
        session_id,
        project_id,
        filter: filter.unwrap_or_default().into_key()?,
    };
    let r = req(ctx)?;
    let mut conn = r.db.conn().await?;
    let mut hits = repo::search(
        &mut conn,
        &r.actor.scope(),
        &args,
        i64::from(first) + 1,
        offset,
    )
    .await?;
    let has_next = hits.len() > usize::try_from(first).unwrap_or(0);
    hits.truncate(usize::try_from(first).unwrap_or(0));
    let edges = hits
        .into_iter()
        .enumerate()
        .map(|(i, h)| BugSearchHitEdge {
            cursor: encode(offset + i as i64),
            node: BugSearchHit(h),
        })
        .collect();
    Ok(BugSearchHitConnection {
        edges,
        has_next,
        offset,
        args,
    })
}

/// A bug like another one, and how alike (0–1: 0.8 × title trigram similarity + 0.2 × page URL
/// similarity).
pub struct SimilarBug(SimilarHit);

#[Object]
impl SimilarBug {
    async fn bug(&self) -> Bug {
        Bug(self.0.bug.clone())
    }
    async fn score(&self) -> f64 {
        self.0.score
    }
}

/// The bugs like `bug` (see `Bug.similar`): one statement for every bug of a level.
pub async fn similar_bugs(
    ctx: &Context<'_>,
    bug: Uuid,
    first: i32,
    min_score: f64,
    older_only: bool,
) -> AppResult<Vec<SimilarBug>> {
    if !(0..=MAX_FIRST).contains(&first) {
        return Err(AppError::bad_field(
            "first",
            format!("first must be between 0 and {MAX_FIRST}"),
        ));
    }
    if !(0.0..=1.0).contains(&min_score) {
        return Err(AppError::bad_field(
            "minScore",
            "minScore must be between 0 and 1",
        ));
    }
    let key = SimilarKey {
        bug,
        args: SimilarArgs {
            first,
            min_score_milli: (min_score * 1000.0).round() as u16,
            older_only,
        },
    };
    let hits = req(ctx)?.loader.load_one(key).await?;
    Ok(hits
        .as_deref()
        .unwrap_or_default()
        .iter()
        .cloned()
        .map(SimilarBug)
        .collect())
}

#[derive(Default)]
pub struct SearchQuery;

#[Object]
impl SearchQuery {
    /// Bugs matching `query` (web-search syntax: words, `"a phrase"`, `or`, `-word`) in title,
    /// description, steps and expected/actual behaviour, best first, with highlighted snippets.
    /// Only bugs the caller may see; optionally of one session or project, and filtered.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per filter of the API"
    )]
    #[graphql(complexity = "crate::api::connection::cost(first, 20, child_complexity)")]
    async fn search_bugs(
        &self,
        ctx: &Context<'_>,
        query: String,
        session_id: Option<Uuid>,
        project_id: Option<Uuid>,
        filter: Option<BugFilter>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<BugSearchHitConnection> {
        Ok(search_bugs(
            ctx,
            query,
            session_id,
            project_id,
            filter,
            first.unwrap_or(20),
            after,
        )
        .await?)
    }
}
