//! Relay connections shared by every list field: opaque keyset cursors, `first`/`after`
//! validation, and a `totalCount` that costs a statement only when it is asked for.
//!
//! Named after their node type (`PageConnection`, `PageEdge`), so a new entity's lists need no
//! change here.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use async_graphql::parser::types::Field;
use async_graphql::{
    Context, ContextSelectionSet, Object, OutputType, Positioned, ServerResult, SimpleObject,
    TypeName, Value,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::api::context::req;
use crate::error::AppResult;
use crate::store::batch::{CountKey, ListKey, Parent};
use crate::store::page::{Cursor, Keyed, Window};
use crate::store::row::{Cols, Slim};

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

impl<T: OutputType> TypeName for Edge<T> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Edge", T::type_name()).into()
    }
}

#[Object(name_type)]
impl<T: OutputType> Edge<T> {
    async fn cursor(&self) -> String {
        self.position.encode()
    }

    async fn node(&self) -> &T {
        &self.node
    }
}

/// How a type's connection writes its `nodes` list. Bug and page lists, which run to thousands
/// of rows, render straight to JSON (`exec::fast`); other types keep this default.
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

impl<T: OutputType> Connection<T> {
    /// Builds a connection from up to `window.limit()` rows in list order, each wrapped as its
    /// GraphQL type.
    pub fn from_rows<R: Keyed>(
        mut rows: Vec<R>,
        wrap: impl Fn(R) -> T,
        window: &Window,
        count: Box<dyn CountSource>,
    ) -> Self {
        let has_next = rows.len() as i64 > window.first;
        rows.truncate(window.first as usize);
        let edges = rows
            .into_iter()
            .map(|row| Edge {
                position: row.cursor(),
                node: wrap(row),
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

impl<T: OutputType> TypeName for Connection<T> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", T::type_name()).into()
    }
}

#[Object(name_type)]
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

/// A child list's `totalCount`, through the request's loader: one grouped statement per level.
struct ChildCount<P: Parent>(CountKey<P>);

impl<P: Parent> CountSource for ChildCount<P> {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<i64>> {
        async move { Ok(req(ctx)?.loader.load_one(self.0).await?.unwrap_or(0)) }.boxed()
    }
}

/// The GraphQL fields of a node type that read each optional column of its row (see
/// `store::row::Slim`): a list fetches a column only when the operation selects such a field.
pub trait SlimNode {
    /// `(field, column)` pairs.
    const NEEDS: &'static [(&'static str, &'static str)];
}

/// The optional columns of `R` that the current connection field's nodes (`nodes { … }` or
/// `edges { node { … } }`, fragments included) need. A column no field is known to read is
/// always fetched.
fn wanted<R: Slim, T: SlimNode>(ctx: &Context<'_>) -> Cols {
    let la = ctx.look_ahead();
    let nodes = [la.field("nodes"), la.field("edges").field("node")];
    let mut cols = Cols::NONE;
    for (i, (col, _)) in R::OPTIONAL.iter().enumerate() {
        let mut readers = T::NEEDS.iter().filter(|(_, c)| c == col).peekable();
        let unknown = readers.peek().is_none();
        if unknown || readers.any(|(f, _)| nodes.iter().any(|n| n.field(f).exists())) {
            cols = cols.with(i);
        }
    }
    cols
}

/// A parent's children as a connection of `T`, through the one child-list loader: all
/// parents of a level share one statement (`store::batch`), which selects only the optional
/// columns the operation reads.
pub async fn children<P: Parent, T: OutputType + SlimNode>(
    ctx: &Context<'_>,
    parent: P,
    filter: P::Filter,
    window: Window,
    wrap: impl Fn(Arc<P::Row>) -> T,
) -> AppResult<Connection<T>> {
    let key = ListKey {
        parent,
        filter,
        window,
        cols: wanted::<P::Row, T>(ctx),
    };
    let mut rows = req(ctx)?.loader.load_one(key).await?.unwrap_or_default();
    rows.sort_by_key(|r| r.cursor());
    Ok(Connection::from_rows(
        rows,
        wrap,
        &window,
        Box::new(ChildCount(CountKey { parent, filter })),
    ))
}
