//! Relay connections shared by every list field: opaque keyset cursors, `first`/`after`
//! validation, and a `totalCount` that costs a statement only when it is asked for.

use std::borrow::Cow;
use std::future::Future;

use async_graphql::parser::types::Field;
use async_graphql::{
    Context, ContextSelectionSet, Object, OutputType, Positioned, ServerResult, SimpleObject, Value,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// Largest `first` a client may ask for; larger values are an error, never a silent truncation.
pub const MAX_FIRST: i32 = 500;

/// A keyset position: every list is ordered by `(created_at, id)`, which is unique and indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(s: &str) -> AppResult<Self> {
        let bad = || AppError::bad_field("after", format!("invalid cursor {s:?}"));
        let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).map_err(|_| bad())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        // chrono reaches far past what PostgreSQL's timestamptz holds (4713 BC to 294276 AD);
        // a position no stored row can have is the client's mistake, not a database error.
        if !(1..=9999).contains(&chrono::Datelike::year(&created_at)) {
            return Err(bad());
        }
        Ok(Cursor {
            created_at,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Anything listed through a connection knows its own cursor.
pub trait Keyed {
    fn cursor(&self) -> Cursor;
}

/// Validated `first`/`after` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub first: i64,
    pub after: Option<Cursor>,
}

impl Window {
    pub fn parse(first: Option<i32>, default: i32, after: Option<&str>) -> AppResult<Self> {
        let first = first.unwrap_or(default);
        if first < 0 {
            return Err(AppError::bad_field("first", "first must not be negative"));
        }
        if first > MAX_FIRST {
            return Err(AppError::bad_field(
                "first",
                format!("first must be at most {MAX_FIRST}, got {first}"),
            ));
        }
        Ok(Window {
            first: i64::from(first),
            after: after.map(Cursor::decode).transpose()?,
        })
    }

    /// Rows to fetch: one more than asked, to learn `hasNextPage` without a count.
    pub fn limit(&self) -> i64 {
        self.first + 1
    }
}

/// The complexity of a connection field: every row it may return costs its selection, so a
/// client pays for `first`, not for how many rows happen to exist.
pub fn cost(first: Option<i32>, default: i32, child_complexity: usize) -> usize {
    let rows = usize::try_from(first.unwrap_or(default))
        .unwrap_or(0)
        .max(1);
    rows.saturating_mul(child_complexity).saturating_add(1)
}

/// Resolves `totalCount` lazily, so a query that does not select it pays nothing.
pub trait CountSource: Send + Sync {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>>;
}

/// An edge keeps its position as a [`Cursor`] and encodes it only if the client asks for it.
pub struct Edge<T: OutputType> {
    position: Cursor,
    node: T,
}

#[Object(
    concrete(
        name = "CrawlSessionEdge",
        params(crate::sessions::graphql::CrawlSession)
    ),
    concrete(name = "PageEdge", params(crate::pages::graphql::Page)),
    concrete(name = "BugEdge", params(crate::bugs::graphql::Bug)),
    concrete(name = "UserEdge", params(crate::users::graphql::User)),
    concrete(name = "ProjectEdge", params(crate::users::graphql::Project)),
    concrete(name = "AuditEntryEdge", params(crate::audit::graphql::AuditEntry))
)]
impl<T: OutputType> Edge<T> {
    async fn cursor(&self) -> String {
        self.position.encode()
    }

    async fn node(&self) -> &T {
        &self.node
    }
}

/// How a type's connection writes its `nodes` list. Bug and page lists, which run to thousands
/// of rows, render straight to JSON (`graphql::fast`); other types keep this default.
pub trait ListItem: OutputType + Sized {
    fn resolve_nodes<'a>(
        items: Vec<&'a Self>,
        ctx: &'a ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> impl Future<Output = ServerResult<Value>> + Send + 'a {
        let len = items.len();
        async_graphql::resolver_utils::resolve_list(ctx, field, items, Some(len))
    }
}

/// A connection's `nodes`: in the schema exactly a `[T!]!`, resolved by [`ListItem`].
pub struct Nodes<'a, T: OutputType>(&'a [Edge<T>]);

impl<T: ListItem> OutputType for Nodes<'_, T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        T::resolve_nodes(self.0.iter().map(|e| &e.node).collect(), ctx, field).await
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

pub struct Connection<T: OutputType> {
    edges: Vec<Edge<T>>,
    has_next: bool,
    has_previous: bool,
    count: Box<dyn CountSource>,
}

impl<T: OutputType + Keyed> Connection<T> {
    /// Builds a connection from up to `window.limit()` rows in list order.
    pub fn from_rows(mut rows: Vec<T>, window: &Window, count: Box<dyn CountSource>) -> Self {
        let has_next = rows.len() as i64 > window.first;
        rows.truncate(window.first as usize);
        let edges = rows
            .into_iter()
            .map(|node| Edge {
                position: node.cursor(),
                node,
            })
            .collect();
        Connection {
            edges,
            has_next,
            // Forward-only pagination: a page after a cursor has at least that row before it.
            has_previous: window.after.is_some(),
            count,
        }
    }
}

#[Object(
    concrete(
        name = "CrawlSessionConnection",
        params(crate::sessions::graphql::CrawlSession)
    ),
    concrete(name = "PageConnection", params(crate::pages::graphql::Page)),
    concrete(name = "BugConnection", params(crate::bugs::graphql::Bug)),
    concrete(name = "UserConnection", params(crate::users::graphql::User)),
    concrete(name = "ProjectConnection", params(crate::users::graphql::Project)),
    concrete(
        name = "AuditEntryConnection",
        params(crate::audit::graphql::AuditEntry)
    )
)]
impl<T: ListItem> Connection<T>
where
    Edge<T>: OutputType,
{
    async fn edges(&self) -> &Vec<Edge<T>> {
        &self.edges
    }

    async fn nodes(&self) -> Nodes<'_, T> {
        Nodes(&self.edges)
    }

    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next,
            has_previous_page: self.has_previous,
            start_cursor: self.edges.first().map(|e| e.position.encode()),
            end_cursor: self.edges.last().map(|e| e.position.encode()),
        }
    }

    /// Rows matching the filters, ignoring `first` and `after`.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(self.count.count(ctx).await?)
    }
}
