//! Search statements. Both read only rows the caller's scope may see.

use diesel::QueryableByName;
use diesel::deserialize;
use diesel::pg::Pg;
use diesel::row::NamedRow;
use diesel::sql_types::{Double, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::error::AppResult;
use crate::store::Conn;
use crate::store::batch::Filter;
use crate::store::bugs::keys::BugFilterKey;
use crate::store::bugs::model::BugRow;
use crate::store::row::Positional;
use crate::store::scope::Scope;
use crate::store::sql::{Bind, Sql};

/// `BugRow`'s columns of the table aliased `x`, in order (they decode by position).
pub fn bug_columns(alias: &str) -> String {
    BugRow::COLUMNS
        .iter()
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `searchBugs` searches.
#[derive(Debug, Clone)]
pub struct SearchArgs {
    /// Web-search syntax (`websearch_to_tsquery`): words, `"a phrase"`, `or`, `-not`.
    pub query: String,
    pub session_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub filter: BugFilterKey,
}

/// One match: its rank (`ts_rank_cd`), an HTML-escaped snippet of title and description with
/// the matched words in `<mark>`, and the bug.
pub struct Hit {
    pub rank: f64,
    pub snippet: String,
    pub bug: BugRow,
}

impl QueryableByName<Pg> for Hit {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        Ok(Hit {
            rank: NamedRow::get::<Double, f64>(row, "rank")?,
            snippet: NamedRow::get::<Text, String>(row, "snippet")?,
            bug: BugRow::build(row)?,
        })
    }
}

/// `FROM bugs, q WHERE …`: the matching rows the scope may see.
fn matching(q: &mut Sql, scope: &Scope, args: &SearchArgs) {
    q.push(" FROM bugs, q WHERE bugs.search @@ q.q");
    if let Some(s) = args.session_id {
        q.push(" AND bugs.session_id = ").bind(Bind::Uuid(s));
    }
    if let Some(p) = args.project_id {
        q.push(" AND bugs.session_id IN (SELECT id FROM crawl_sessions WHERE project_id = ")
            .bind(Bind::Uuid(p))
            .push(")");
    }
    args.filter.push(q);
    if let Some(v) = scope.visible(diesel::dsl::sql::<SqlUuid>("bugs.session_id")) {
        q.push(" AND ").push_fragment(v);
    }
}

fn with_query(args: &SearchArgs) -> Sql {
    let mut q = Sql::new("WITH q AS (SELECT websearch_to_tsquery('english', ");
    q.bind(Bind::Text(args.query.clone())).push(") AS q) ");
    q
}

/// Best first (rank, then id): `limit` matches after the first `offset`. Snippets are built for
/// the returned rows only (`ts_headline` reads the whole text).
pub async fn search(
    conn: &mut Conn,
    scope: &Scope,
    args: &SearchArgs,
    limit: i64,
    offset: i64,
) -> AppResult<Vec<Hit>> {
    let mut q = with_query(args);
    q.push(", hits AS (SELECT bugs.id AS hit_id, ts_rank_cd(bugs.search, q.q)::float8 AS rank");
    matching(&mut q, scope, args);
    q.push(" ORDER BY rank DESC, bugs.id LIMIT ")
        .bind(Bind::BigInt(limit))
        .push(" OFFSET ")
        .bind(Bind::BigInt(offset))
        .push(
            ") SELECT hits.rank, ts_headline('english', \
             replace(replace(replace(x.title || ' — ' || x.description, '&', '&amp;'), \
             '<', '&lt;'), '>', '&gt;'), q.q, \
             'StartSel=<mark>, StopSel=</mark>, MaxFragments=2, MaxWords=18, MinWords=6, \
             FragmentDelimiter=\" … \"') AS snippet, ",
        )
        .push(&bug_columns("x"))
        .push(" FROM hits JOIN bugs x ON x.id = hits.hit_id, q ORDER BY hits.rank DESC, x.id");
    Ok(q.load(conn).await?)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// How many bugs match, whatever the window.
pub async fn count(conn: &mut Conn, scope: &Scope, args: &SearchArgs) -> AppResult<i64> {
    let mut q = with_query(args);
    q.push("SELECT count(*) AS n");
    matching(&mut q, scope, args);
    let c: Count = q.get_result(conn).await?;
    Ok(c.n)
}

/// A similar bug, with its score (0–1) and the bug it is similar to.
pub struct Similar {
    pub of: Uuid,
    pub score: f64,
    pub bug: BugRow,
}

impl QueryableByName<Pg> for Similar {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        Ok(Similar {
            of: NamedRow::get::<SqlUuid, Uuid>(row, "parent_key")?,
            score: NamedRow::get::<Double, f64>(row, "score")?,
            bug: BugRow::build(row)?,
        })
    }
}

/// What a similarity list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimilarArgs {
    pub first: i32,
    /// The least score, in thousandths (keys must hash).
    pub min_score_milli: u16,
    /// Only bugs reported before the bug itself: its likely originals, not its batch-mates.
    pub older_only: bool,
}

/// For each bug, up to `first` bugs of the same site (session base URL) or project whose title
/// is similar (`%`, by the trigram index), scored as 0.8 × title similarity + 0.2 × page URL
/// similarity (title again when either has no page): one statement for all bugs of a level.
pub async fn similar(
    conn: &mut Conn,
    scope: &Scope,
    ids: &[Uuid],
    args: SimilarArgs,
) -> AppResult<Vec<Similar>> {
    let mut q = Sql::new("SELECT k.parent_key, c.score, ");
    q.push(&bug_columns("x"))
        .push(" FROM unnest(")
        .bind(Bind::Uuids(ids.to_vec()))
        .push(
            ") AS k(parent_key) \
             JOIN bugs me ON me.id = k.parent_key \
             JOIN crawl_sessions ms ON ms.id = me.session_id \
             LEFT JOIN pages mp ON mp.id = me.page_id \
             CROSS JOIN LATERAL (SELECT * FROM (\
             SELECT b.id AS sim_id, (0.8 * similarity(b.title, me.title) + 0.2 * \
             coalesce(similarity(p.url, mp.url), similarity(b.title, me.title)))::float8 AS score \
             FROM bugs b JOIN crawl_sessions s ON s.id = b.session_id \
             LEFT JOIN pages p ON p.id = b.page_id \
             WHERE b.title % me.title AND b.id <> me.id \
             AND (s.base_url = ms.base_url OR s.project_id = ms.project_id)",
        );
    if args.older_only {
        // A batch shares its transaction's `now()`: batch-mates are not each other's originals.
        q.push(" AND b.created_at < me.created_at");
    }
    if let Some(v) = scope.visible(diesel::dsl::sql::<SqlUuid>("b.session_id")) {
        q.push(" AND ").push_fragment(v);
    }
    q.push(") scored WHERE score >= ")
        .bind(Bind::Float(f64::from(args.min_score_milli) / 1000.0))
        .push(" ORDER BY score DESC, sim_id LIMIT ")
        .bind(Bind::BigInt(i64::from(args.first)))
        .push(") c JOIN bugs x ON x.id = c.sim_id ORDER BY k.parent_key, c.score DESC, x.id");
    Ok(q.load(conn).await?)
}
