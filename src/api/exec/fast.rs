//! A leaner resolver for the objects that lists return by the thousand (bugs and pages).
//!
//! async-graphql resolves every field of every object as a boxed future inside a
//! `FuturesUnordered` of its own, even a field that only copies a column, and builds the answer
//! as a tree of `Value`s (an `IndexMap` per object, a `String` per text column) that is then
//! serialized and freed. For the load benchmark's Q1 that is about 20,000 futures and 3,000
//! maps per request, and the profile was dominated by their allocation.
//!
//! Here the plain columns of a selection are read straight from the row, in selection order,
//! and only the fields that need the database (or arguments) go through the generated resolver,
//! concurrently, so a level still becomes one batch. A connection's `nodes` list of such objects
//! is written directly as JSON into one buffer and handed up as a `Value::Binary` fragment,
//! which the response writer (`exec::json`) splices in. That happens only for requests whose
//! response that writer serializes (`RequestCtx::raw_json`); other requests get ordinary
//! `Value`s. Selections with fragments, directives or a response key selected twice take the
//! generic path unchanged.

use std::future::Future;

use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::resolver_utils::{ContainerType, EnumType, resolve_container};
use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ServerResult, Value,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::json;
use super::order;
use crate::api::context::RequestCtx;

/// A plain column of a row, borrowed, so the JSON path copies nothing it does not write.
pub enum Leaf<'a> {
    Null,
    Str(&'a str),
    Uuid(Uuid),
    /// A GraphQL enum value's name.
    Enum(&'static str),
    Float(f64),
    /// Anything rarer, as async-graphql converts it.
    Other(Value),
}

impl<'a> Leaf<'a> {
    pub fn opt_str(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Leaf::Null, Leaf::Str)
    }

    /// An enum value under its GraphQL name.
    pub fn enumeration<E: EnumType>(v: E) -> Self {
        E::items()
            .iter()
            .find(|item| item.value == v)
            .map_or(Leaf::Null, |item| Leaf::Enum(item.name))
    }

    /// The value async-graphql's generated resolver would produce.
    fn into_value(self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Str(s) => Value::String(s.to_owned()),
            Leaf::Uuid(u) => Value::String(u.to_string()),
            Leaf::Enum(name) => Value::Enum(Name::new(name)),
            Leaf::Float(f) => async_graphql::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Leaf::Other(v) => v,
        }
    }

    /// The same value as JSON.
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Leaf::Null => out.extend_from_slice(b"null"),
            Leaf::Str(s) => json::write_str(s, out),
            Leaf::Uuid(u) => {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                out.push(b'"');
                out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
                out.push(b'"');
            }
            // GraphQL names (`[_A-Za-z][_0-9A-Za-z]*`) need no escaping.
            Leaf::Enum(name) => {
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.push(b'"');
            }
            // serde_json writes a non-finite float as null, as `into_value` makes it.
            Leaf::Float(f) => json::write_serde(f, out),
            Leaf::Other(v) => json::write_value(v, out),
        }
    }
}

/// How a plain column is read from an object.
pub type LeafFn<T> = for<'r> fn(&'r T) -> Leaf<'r>;

/// The position of a plain column in `T::LEAVES`.
fn leaf_index<T: FastObject>(name: &str) -> Option<usize> {
    T::LEAVES.iter().position(|(n, _)| *n == name)
}

/// An object type with a fast path: a row newtype whose plain columns are [`Leaf`]s and whose
/// other fields are resolved by `Fields`, the `#[Object]` over the same row.
pub trait FastObject: OutputType + Sized + 'static {
    type Fields: ContainerType + Send + Sync;
    const NAME: &'static str;
    fn fields(&self) -> Self::Fields;
    /// The plain columns: each field's GraphQL name and how to read it. A selection is
    /// planned once per list (names to positions here); items are then read by position.
    const LEAVES: &'static [(&'static str, LeafFn<Self>)];
    /// The values of `field` for every item of a list at once, one per item (with `ctxs`, the
    /// items' contexts), when the type can load it for the whole list together (a child
    /// connection: one loader call for the list instead of one per item). `None`: the field is
    /// resolved item by item.
    fn batch<'a>(
        items: &'a [&'a Self],
        field: &'a Positioned<Field>,
        ctxs: &'a [ContextSelectionSet<'a>],
    ) -> Option<BoxFuture<'a, Vec<ServerResult<Value>>>> {
        let _ = (items, field, ctxs);
        None
    }
}

/// What a selection's field is, decided once per object or list.
enum Slot<'a> {
    Typename,
    /// A position in `FastObject::LEAVES`.
    Leaf(usize),
    Resolved(&'a Positioned<Field>),
}

/// The selection as response keys and slots, or `None` when it needs the generic path.
fn plain_selection<'a, T: FastObject>(
    set: &'a Positioned<SelectionSet>,
) -> Option<Vec<(&'a Name, Slot<'a>)>> {
    let items = &set.node.items;
    let mut out: Vec<(&Name, Slot)> = Vec::with_capacity(items.len());
    for sel in items {
        let Selection::Field(field) = &sel.node else {
            return None;
        };
        if !field.node.directives.is_empty() {
            return None;
        }
        let key = &field.node.response_key().node;
        // A response key selected twice (`page { id } page { url }`) needs async-graphql's merge
        // of the two selections.
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        let name = field.node.name.node.as_str();
        let leaf = field
            .node
            .arguments
            .is_empty()
            .then(|| leaf_index::<T>(name))
            .flatten();
        let slot = match leaf {
            _ if name == "__typename" => Slot::Typename,
            Some(i) => Slot::Leaf(i),
            None => Slot::Resolved(field),
        };
        out.push((key, slot));
    }
    Some(out)
}

/// Resolves one object for the selection in `ctx`.
pub async fn resolve_object<T: FastObject>(
    ctx: &ContextSelectionSet<'_>,
    obj: &T,
) -> ServerResult<Value> {
    let fields = obj.fields();
    let Some(plan) = plain_selection::<T>(ctx.item) else {
        return resolve_container(ctx, &fields).await;
    };
    let mut out = async_graphql::indexmap::IndexMap::with_capacity(plan.len());
    let mut pending = Vec::new();
    for (key, slot) in &plan {
        let value = match slot {
            Slot::Typename => Value::String(T::NAME.to_owned()),
            Slot::Leaf(i) => (T::LEAVES[*i].1)(obj).into_value(),
            Slot::Resolved(field) => {
                pending.push(resolve_one(ctx, &fields, field, (*key).clone()));
                // Keep the key's position; the value arrives below.
                Value::Null
            }
        };
        out.insert((*key).clone(), value);
    }
    for (key, result) in futures_util::future::join_all(pending).await {
        match result {
            Ok(v) => {
                out.insert(key, v);
            }
            Err(e) => {
                // As async-graphql does: the error is reported and the field left out.
                out.shift_remove(&key);
                ctx.add_error(e);
            }
        }
    }
    // As async-graphql does: an object none of whose fields resolved is null.
    if out.is_empty() {
        return Ok(Value::Null);
    }
    Ok(Value::Object(out))
}

/// Resolves a list of objects: as one JSON fragment when the request allows it and the
/// selection is plain, else item by item as async-graphql does.
pub async fn resolve_list<T: FastObject>(
    items: Vec<&T>,
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<Field>,
) -> ServerResult<Value> {
    let raw = ctx.data_opt::<RequestCtx>().is_some_and(|r| r.raw_json);
    let plan = match items.first() {
        _ if !raw => None,
        None => return Ok(Value::Binary(bytes::Bytes::from_static(b"[]"))),
        Some(_) => plain_selection::<T>(ctx.item),
    };
    let Some(plan) = plan else {
        let len = items.len();
        return async_graphql::resolver_utils::resolve_list(ctx, field, items, Some(len)).await;
    };
    let resolved: Vec<&Positioned<Field>> = plan
        .iter()
        .filter_map(|(_, slot)| match slot {
            Slot::Resolved(f) => Some(*f),
            _ => None,
        })
        .collect();
    // Every item's relations are requested before any is awaited, so each relation of the
    // whole list is one loader batch. Errors carry their item's path. A field the type can
    // load for the whole list at once (`FastObject::batch`) is one future for all items.
    let item_ctxs: Vec<_> = if resolved.is_empty() {
        Vec::new()
    } else {
        (0..items.len()).map(|i| ctx.with_index(i)).collect()
    };
    let fields: Vec<_> = item_ctxs
        .iter()
        .zip(&items)
        .map(|(_, item)| item.fields())
        .collect();
    let columns = resolved.iter().map(|f| {
        T::batch(&items, f, &item_ctxs).unwrap_or_else(|| {
            let each = item_ctxs
                .iter()
                .zip(&fields)
                .map(|(item_ctx, item_fields)| {
                    resolve_one(item_ctx, item_fields, f, Name::new("")).map(|(_, r)| r)
                });
            futures_util::future::join_all(each).boxed()
        })
    });
    let mut columns: Vec<std::vec::IntoIter<ServerResult<Value>>> =
        futures_util::future::join_all(columns)
            .await
            .into_iter()
            .map(Vec::into_iter)
            .collect();
    let nested: usize = columns
        .iter()
        .flat_map(|c| c.as_slice())
        .map(|r| r.as_ref().map_or(0, json::size_hint))
        .sum();
    // The resolved values are objects async-graphql built, in completion order; the response's
    // reordering pass cannot see inside this fragment, so they are put in order here.
    let orders: Vec<order::Plan> = resolved
        .iter()
        .map(|f| order::Plan::new(&ctx.query_env.fragments, &[&f.node.selection_set.node]))
        .collect();

    // Each response key as JSON (`"key":`), escaped once per list rather than once per item.
    let keys: Vec<Vec<u8>> = plan
        .iter()
        .map(|(key, _)| {
            let mut k = Vec::with_capacity(key.len() + 3);
            json::write_str(key, &mut k);
            k.push(b':');
            k
        })
        .collect();
    // Nested lists are fragments of known size; plain fields are estimated, and the estimate is
    // corrected after the first item, so the buffer grows at most once or twice.
    let mut out = Vec::with_capacity(2 + nested + items.len() * (2 + plan.len() * 32));
    out.push(b'[');
    let mut first_nested = 0usize;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        out.push(b'{');
        let mut written = 0usize;
        let mut order = orders.iter();
        let mut column = columns.iter_mut();
        for (k, (_, slot)) in plan.iter().enumerate() {
            let mut value = None;
            match slot {
                Slot::Resolved(_) => {
                    let plan = order.next();
                    match column.next().and_then(Iterator::next) {
                        Some(Ok(mut v)) => {
                            if let Some(plan) = plan {
                                plan.apply(&mut v);
                            }
                            value = Some(v);
                        }
                        Some(Err(e)) => {
                            // As async-graphql does: the error is reported and the field left out.
                            ctx.add_error(e);
                            continue;
                        }
                        None => continue,
                    }
                }
                Slot::Typename | Slot::Leaf(_) => {}
            }
            if written > 0 {
                out.push(b',');
            }
            written += 1;
            out.extend_from_slice(&keys[k]);
            match (slot, value) {
                (_, Some(v)) => {
                    if i == 0 {
                        first_nested += json::size_hint(&v);
                    }
                    json::write_value(&v, &mut out)
                }
                (Slot::Typename, _) => json::write_str(T::NAME, &mut out),
                (Slot::Leaf(i), _) => (T::LEAVES[*i].1)(item).write(&mut out),
                (Slot::Resolved(_), None) => out.extend_from_slice(b"null"),
            }
        }
        if written == 0 {
            // As async-graphql does: an object none of whose fields resolved is null.
            out.truncate(start);
            out.extend_from_slice(b"null");
        } else {
            out.push(b'}');
        }
        if i == 0 {
            let plain = (out.len() - 1).saturating_sub(first_nested);
            out.reserve((plain + 1) * (items.len() - 1) + nested.saturating_sub(first_nested) + 1);
        }
    }
    out.push(b']');
    Ok(Value::Binary(out.into()))
}

/// A list selection of plain columns only (no relation, argument, fragment or directive),
/// planned once and written for many lists: the lists of one batched child field
/// ([`FastObject::batch`]) are written one after another, with no future, connection object
/// or intermediate buffer per list.
pub struct PlainList {
    /// Per selected field: its `"key":` and the position of its column in
    /// `FastObject::LEAVES` (`None` for `__typename`).
    fields: Vec<(Vec<u8>, Option<usize>)>,
}

impl PlainList {
    /// The plan of `set` for lists of `T`, or `None` when the selection needs resolvers or the
    /// request's response is not written by `exec::json` (so values must be `Value` trees).
    pub fn new<T: FastObject>(ctx: &Context<'_>, set: &Positioned<SelectionSet>) -> Option<Self> {
        if !ctx.data_opt::<RequestCtx>().is_some_and(|r| r.raw_json) {
            return None;
        }
        let fields = plain_selection::<T>(set)?
            .into_iter()
            .map(|(key, slot)| {
                let mut k = Vec::with_capacity(key.len() + 3);
                json::write_str(key, &mut k);
                k.push(b':');
                match slot {
                    Slot::Typename => Some((k, None)),
                    Slot::Leaf(i) => Some((k, Some(i))),
                    Slot::Resolved(_) => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PlainList { fields })
    }

    /// Bytes a list of `n` items takes, about.
    pub fn estimate(&self, n: usize) -> usize {
        2 + n * (2 + self.fields.len() * 32)
    }

    /// Writes `items` as a JSON array.
    pub fn write<T: FastObject>(&self, items: &[T], out: &mut Vec<u8>) {
        out.push(b'[');
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (f, (key, leaf)) in self.fields.iter().enumerate() {
                if f > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                match leaf {
                    Some(i) => (T::LEAVES[*i].1)(item).write(out),
                    None => json::write_str(T::NAME, out),
                }
            }
            out.push(b'}');
        }
        out.push(b']');
    }
}

// Written out as `impl Future` on purpose: with `async fn` the compiler cannot prove the
// future `Send` through the recursion Page -> bugs -> Bug -> page -> Page (a cycle error).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn makes the recursive Send proof cyclic"
)]
fn resolve_one<'a, T: ContainerType + Sync>(
    ctx: &'a ContextSelectionSet<'a>,
    fields: &'a T,
    field: &'a Positioned<Field>,
    key: Name,
) -> impl Future<Output = (Name, ServerResult<Value>)> + Send + 'a {
    async move {
        let ctx_field = ctx.with_field(field);
        let result = fields
            .resolve_field(&ctx_field)
            .await
            .map(Option::unwrap_or_default);
        (key, result)
    }
}

/// Implements [`FastObject`], `OutputType` and `ListItem` for `$ty` (a newtype over an `Arc` of
/// a row): `$fields`, the `#[Object]` over the same row, supplies the type information and the
/// resolvers of relations; the `"field" => value` arms read plain columns of `$row` ([`Leaf`]);
/// the optional `batch:` function is its [`FastObject::batch`].
macro_rules! fast_output_type {
    (
        $ty:ident, $fields:ident, $name:literal, $(batch: $batch:path,)?
        |$row:ident| { $($leaf:literal => $value:expr),+ $(,)? }
    ) => {
        impl $crate::api::exec::fast::FastObject for $ty {
            type Fields = $fields;
            const NAME: &'static str = $name;
            const LEAVES: &'static [(&'static str, $crate::api::exec::fast::LeafFn<Self>)] = &[
                $(($leaf, |this| {
                    let $row = &*this.0;
                    $value
                })),+
            ];

            $(
                fn batch<'a>(
                    items: &'a [&'a Self],
                    field: &'a async_graphql::Positioned<async_graphql::parser::types::Field>,
                    ctxs: &'a [async_graphql::ContextSelectionSet<'a>],
                ) -> Option<
                    futures_util::future::BoxFuture<
                        'a,
                        Vec<async_graphql::ServerResult<async_graphql::Value>>,
                    >,
                > {
                    $batch(items, field, ctxs)
                }
            )?

            fn fields(&self) -> $fields {
                $fields(self.0.clone())
            }
        }

        impl async_graphql::OutputType for $ty {
            fn type_name() -> std::borrow::Cow<'static, str> {
                <$fields as async_graphql::OutputType>::type_name()
            }

            fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
                <$fields as async_graphql::OutputType>::create_type_info(registry)
            }

            async fn resolve(
                &self,
                ctx: &async_graphql::ContextSelectionSet<'_>,
                _field: &async_graphql::Positioned<async_graphql::parser::types::Field>,
            ) -> async_graphql::ServerResult<async_graphql::Value> {
                $crate::api::exec::fast::resolve_object(ctx, self).await
            }
        }

        impl $crate::api::connection::ListItem for $ty {
            fn resolve_nodes<'a>(
                items: Vec<&'a Self>,
                ctx: &'a async_graphql::ContextSelectionSet<'a>,
                field: &'a async_graphql::Positioned<async_graphql::parser::types::Field>,
            ) -> impl std::future::Future<
                Output = async_graphql::ServerResult<async_graphql::Value>,
            > + Send
            + 'a {
                $crate::api::exec::fast::resolve_list(items, ctx, field)
            }
        }
    };
}

pub(crate) use fast_output_type;
