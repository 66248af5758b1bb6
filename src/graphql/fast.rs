//! A leaner resolver for the objects that lists return by the thousand (bugs and pages).
//!
//! async-graphql resolves every field of every object as a boxed future inside a
//! `FuturesUnordered` of its own, even a field that only copies a column. For the load
//! benchmark's Q1 that is about 20,000 futures per request, and the profile was dominated by
//! their allocation and polling. Here the plain columns of a selection are converted on the
//! spot, in selection order, and only the fields that need the database (or arguments) go
//! through the generated resolver, concurrently. Selections with fragments or directives take
//! the generic path unchanged.

use std::future::Future;

use async_graphql::parser::types::Selection;
use async_graphql::resolver_utils::{ContainerType, resolve_container};
use async_graphql::{ContextSelectionSet, Name, ServerResult, Value};

/// Resolves `fields`' object for the selection in `ctx`. `leaf` returns the value of a plain
/// column by its GraphQL name, or `None` for a field the generated resolver must handle.
pub async fn resolve_object<T, F>(
    ctx: &ContextSelectionSet<'_>,
    fields: &T,
    type_name: &'static str,
    leaf: F,
) -> ServerResult<Value>
where
    T: ContainerType + Sync,
    F: Fn(&str) -> Option<Value>,
{
    let items = &ctx.item.node.items;
    let simple = items
        .iter()
        .all(|s| matches!(&s.node, Selection::Field(f) if f.node.directives.is_empty()));
    // A response key selected twice (`page { id } page { url }`) needs async-graphql's merge of
    // the two selections.
    let repeated = || {
        items.iter().enumerate().any(|(i, a)| {
            let Selection::Field(a) = &a.node else {
                return false;
            };
            items[..i].iter().any(|b| {
                matches!(&b.node, Selection::Field(b)
                    if b.node.response_key().node == a.node.response_key().node)
            })
        })
    };
    if !simple || repeated() {
        return resolve_container(ctx, fields).await;
    }
    let mut out = async_graphql::indexmap::IndexMap::with_capacity(items.len());
    let mut pending = Vec::new();
    for sel in items {
        let Selection::Field(field) = &sel.node else {
            continue;
        };
        let key: Name = field.node.response_key().node.clone();
        let name = field.node.name.node.as_str();
        let value = if name == "__typename" {
            Some(Value::String(type_name.to_owned()))
        } else if field.node.arguments.is_empty() {
            leaf(name)
        } else {
            None
        };
        match value {
            Some(v) => {
                out.insert(key, v);
            }
            None => {
                // Keep the key's position; the value arrives below.
                out.insert(key.clone(), Value::Null);
                pending.push(resolve_one(ctx, fields, field, key));
            }
        }
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

// Written out as `impl Future` on purpose: with `async fn` the compiler cannot prove the
// future `Send` through the recursion Page -> bugs -> Bug -> page -> Page (a cycle error).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn makes the recursive Send proof cyclic"
)]
fn resolve_one<'a, T: ContainerType + Sync>(
    ctx: &'a ContextSelectionSet<'a>,
    fields: &'a T,
    field: &'a async_graphql::Positioned<async_graphql::parser::types::Field>,
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

/// The value of an optional column, as async-graphql would write it.
pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map_or(Value::Null, f)
}

/// Implements `OutputType` for `$ty` (a newtype over an `Arc` of a row) through
/// [`resolve_object`]: `$fields`, the `#[Object]` over the same row, supplies the type
/// information and the resolvers of relations; `$leaf` maps a field name to a plain column.
macro_rules! fast_output_type {
    ($ty:ident, $fields:ident, $name:literal, |$row:ident, $field:ident| $leaf:expr) => {
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
                let $row = &self.0;
                let fields = $fields($row.clone());
                $crate::graphql::fast::resolve_object(ctx, &fields, $name, |$field: &str| $leaf)
                    .await
            }
        }
    };
}

pub(crate) use fast_output_type;
