//! Relay connections shared by every list field: opaque keyset cursors, `first`/`after`
//! validation, and a `totalCount` that costs a statement only when it is asked for.
//!
//! Named after their node type (`PageConnection`, `PageEdge`), so a new entity's lists need no
//! change here.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use async_graphql::Lookahead;
use async_graphql::parser::types::{Field, Selection};
use async_graphql::{
    Context, ContextSelectionSet, InputType, Object, OutputType, Positioned, ServerResult,
    SimpleObject, TypeName, Value,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::api::context::req;
use crate::api::exec::fast::{FastObject, PlainList};
use crate::api::exec::json;
use crate::error::{AppError, AppResult};
use crate::store::batch::{CountKey, ListKey, Parent};
use crate::store::page::{Cursor, Direction, Keyed, Window};
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
        rows: impl IntoIterator<Item = R>,
        wrap: impl Fn(R) -> T,
        window: &Window,
        count: Box<dyn CountSource>,
    ) -> Self {
        let first = usize::try_from(window.first).unwrap_or(0);
        let mut rows = rows.into_iter();
        let edges: Vec<Edge<T>> = rows
            .by_ref()
            .take(first)
            .map(|row| Edge {
                position: row.cursor(),
                node: wrap(row),
            })
            .collect();
        // Lists fetch one row past the window to know whether there is a next page.
        let has_next = rows.next().is_some();
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
/// `edges { node { … } }`, fragments included) need.
fn wanted<R: Slim, T: SlimNode>(ctx: &Context<'_>) -> Cols {
    let la = ctx.look_ahead();
    needed::<R, T>(&[la.field("nodes"), la.field("edges").field("node")])
}

/// The optional columns of `R` that the current field's own selection of `T` needs: what a
/// by-id load of the field's object reads.
pub fn wanted_here<R: Slim, T: SlimNode>(ctx: &Context<'_>) -> Cols {
    needed::<R, T>(&[ctx.look_ahead()])
}

/// The optional columns of `R` that the selections of `T` need. A column no field is known
/// to read is always fetched.
fn needed<R: Slim, T: SlimNode>(selections: &[Lookahead<'_>]) -> Cols {
    let mut cols = Cols::NONE;
    for (i, col) in R::OPTIONAL.iter().enumerate() {
        let mut readers = T::NEEDS.iter().filter(|(_, c)| c == col).peekable();
        let unknown = readers.peek().is_none();
        if unknown || readers.any(|(f, _)| selections.iter().any(|n| n.field(f).exists())) {
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
    let rows = req(ctx)?.loader.load_one(key).await?;
    let rows = rows.as_deref().unwrap_or_default();
    in_order::<P>(rows);
    Ok(Connection::from_rows(
        rows.iter().cloned(),
        wrap,
        &window,
        Box::new(ChildCount(CountKey { parent, filter })),
    ))
}

/// The child-list loader answers each parent's rows in list order (`store::batch`: the LATERAL
/// statement's `ORDER BY`, kept run by run); tests check it, release builds trust it (the
/// check's cursor comparisons were 2.5% of the gateway's CPU under the Q1 load).
fn in_order<P: Parent>(rows: &[Arc<P::Row>]) {
    debug_assert!(
        match P::DIRECTION {
            Direction::Ascending => rows.is_sorted_by_key(|r| r.cursor()),
            Direction::Descending => rows.iter().rev().is_sorted_by_key(|r| r.cursor()),
        },
        "child rows out of order"
    );
}

/// An argument of the current field, read as the generated resolver reads it.
pub fn arg<T: InputType>(ctx: &Context<'_>, name: &str) -> async_graphql::Result<T> {
    ctx.param_value::<T>(name, None)
        .map(|(_, v)| v)
        .map_err(|e| async_graphql::Error {
            message: e.message,
            source: None,
            extensions: e.extensions,
        })
}

/// One child-list field (`Page.bugs`) of every item of a list, with one loader call for the
/// whole list. Resolved item by item, each item costs a field future, a look-ahead, a loader
/// call with its own channel and hash-map entries, and a connection object resolved field by
/// field: under the Q1 load that was about a third of the gateway's CPU.
///
/// `ctxs` are the items' contexts and `parents` their parent keys, in item order; `args` reads
/// the field's filter and window from its arguments. Each item's connection is built from its
/// rows; one that selects only `nodes` is resolved as that list alone (written straight to
/// JSON by `exec::fast`), any other through the generic [`Connection`] object, whose
/// `totalCount` and nested fields still batch through the loader.
pub async fn children_of_list<'a, P, T>(
    ctxs: &'a [ContextSelectionSet<'a>],
    field: &'a Positioned<Field>,
    parents: Vec<P>,
    args: impl Fn(&Context<'_>) -> async_graphql::Result<(P::Filter, Window)>,
    wrap: impl Fn(Arc<P::Row>) -> T,
) -> Vec<ServerResult<Value>>
where
    P: Parent,
    T: ListItem + FastObject + SlimNode + Send + Sync,
    Edge<T>: OutputType,
{
    let Some(first) = ctxs.first() else {
        return Vec::new();
    };
    let field_ctx = first.with_field(field);
    let loaded = async {
        let (filter, window) = args(&field_ctx)?;
        let cols = wanted::<P::Row, T>(&field_ctx);
        let keys: Vec<ListKey<P>> = parents
            .iter()
            .map(|&parent| ListKey {
                parent,
                filter,
                window,
                cols,
            })
            .collect();
        let rows = req(&field_ctx)?
            .loader
            .load_many(keys.iter().copied())
            .await
            .map_err(AppError::from)?;
        async_graphql::Result::Ok((keys, rows, window))
    };
    let (keys, rows, window) = match loaded.await {
        Ok(loaded) => loaded,
        Err(e) => {
            let e = async_graphql::Error::into_server_error(e, field.pos);
            return ctxs
                .iter()
                .map(|c| Err(c.with_field(field).set_error_path(e.clone())))
                .collect();
        }
    };
    let nodes_only = match field.node.selection_set.node.items.as_slice() {
        [only] => match &only.node {
            Selection::Field(f) if f.node.name.node == "nodes" && f.node.directives.is_empty() => {
                Some(f)
            }
            _ => None,
        },
        _ => None,
    };
    // The common shape (`bugs { nodes { id title … } }`): every list written straight from its
    // rows, one after another.
    if let Some(nodes) = nodes_only
        && let Some(plan) = PlainList::new::<T>(&field_ctx, &nodes.node.selection_set)
    {
        let mut key = Vec::new();
        json::write_str(&nodes.node.response_key().node, &mut key);
        let first = usize::try_from(window.first).unwrap_or(0);
        return keys
            .iter()
            .map(|k| {
                let list = rows.get(k).map(|l| &**l).unwrap_or_default();
                in_order::<P>(list);
                let items: Vec<T> = list.iter().take(first).cloned().map(&wrap).collect();
                let mut out = Vec::with_capacity(key.len() + 3 + plan.estimate(items.len()));
                out.push(b'{');
                out.extend_from_slice(&key);
                out.push(b':');
                plan.write(&items, &mut out);
                out.push(b'}');
                Ok(Value::Binary(out.into()))
            })
            .collect();
    }
    let each = ctxs.iter().zip(&keys).map(|(ctx, key)| {
        let list = rows.get(key).map(|l| &**l).unwrap_or_default();
        in_order::<P>(list);
        let conn = Connection::from_rows(
            list.iter().cloned(),
            &wrap,
            &window,
            Box::new(ChildCount(CountKey {
                parent: key.parent,
                filter: key.filter,
            })),
        );
        async move {
            let field_ctx = ctx.with_field(field);
            let sel = field_ctx.with_selection_set(&field.node.selection_set);
            let Some(nodes) = nodes_only else {
                return OutputType::resolve(&conn, &sel, field).await;
            };
            let nodes_ctx = sel.with_field(nodes);
            let nodes_sel = nodes_ctx.with_selection_set(&nodes.node.selection_set);
            let items = conn.edges.iter().map(|e| &e.node).collect();
            let value = T::resolve_nodes(items, &nodes_sel, nodes).await?;
            let key = nodes.node.response_key().node.clone();
            Ok(match value {
                Value::Binary(list) => {
                    let mut out = Vec::with_capacity(list.len() + key.len() + 5);
                    out.push(b'{');
                    json::write_str(&key, &mut out);
                    out.push(b':');
                    out.extend_from_slice(&list);
                    out.push(b'}');
                    Value::Binary(out.into())
                }
                other => Value::Object([(key, other)].into_iter().collect()),
            })
        }
    });
    let each: Vec<_> = each.collect();
    futures_util::future::join_all(each).await
}
