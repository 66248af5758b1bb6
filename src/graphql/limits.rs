//! Query limits that keep one client from exhausting the gateway, and error codes for the
//! errors async-graphql raises itself.
//!
//! Depth and complexity are checked by async-graphql during validation (connections cost their
//! `first` times their selection); aliases and root fields per operation are counted here on the
//! parsed document. Every limit is configurable (see the README).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
    NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::error::AppError;

/// The limits of one deployment, from the environment (see [`Limits::from_env`]).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub introspection: bool,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 12,
            // The load benchmark's Q1 (20 sessions × 50 pages × 500 bugs) costs about 3.0 M.
            max_complexity: 4_000_000,
            max_aliases: 30,
            max_root_fields: 20,
            introspection: true,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// `GRAPHQL_MAX_DEPTH`, `GRAPHQL_MAX_COMPLEXITY`, `GRAPHQL_MAX_ALIASES`,
    /// `GRAPHQL_MAX_ROOT_FIELDS`, `GRAPHQL_INTROSPECTION` and `GRAPHQL_MAX_BODY_BYTES`.
    pub fn from_env() -> anyhow::Result<Self> {
        use crate::config::env_num;
        let d = Limits::default();
        let introspection = match std::env::var("GRAPHQL_INTROSPECTION") {
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "true" | "1" | "on" | "yes" => true,
                "false" | "0" | "off" | "no" => false,
                other => anyhow::bail!("GRAPHQL_INTROSPECTION={other:?} is not true or false"),
            },
            Err(_) => d.introspection,
        };
        Ok(Limits {
            max_depth: env_num("GRAPHQL_MAX_DEPTH", d.max_depth)?,
            max_complexity: env_num("GRAPHQL_MAX_COMPLEXITY", d.max_complexity)?,
            max_aliases: env_num("GRAPHQL_MAX_ALIASES", d.max_aliases)?,
            max_root_fields: env_num("GRAPHQL_MAX_ROOT_FIELDS", d.max_root_fields)?,
            introspection,
            max_body_bytes: env_num("GRAPHQL_MAX_BODY_BYTES", d.max_body_bytes)?,
        })
    }
}

/// Counts aliases and root fields, and refuses introspection when it is off. HTTP requests are
/// checked by `graphql::execute`; WebSocket operations by the same checks run as an extension
/// (an extension costs a hook on every field, which the HTTP path avoids).
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_aliases: usize,
    pub max_root_fields: usize,
    /// When false, `__schema` and `__type` are refused with `FORBIDDEN` (async-graphql alone
    /// would answer them with a silent null).
    pub introspection: bool,
}

impl Guard {
    pub fn new(limits: &Limits) -> Self {
        Guard {
            max_aliases: limits.max_aliases,
            max_root_fields: limits.max_root_fields,
            introspection: limits.introspection,
        }
    }

    /// Checks every operation of a parsed document.
    pub fn check(&self, doc: &ExecutableDocument) -> Result<(), ServerError> {
        for (_, op) in doc.operations.iter() {
            let set = &op.node.selection_set.node;
            let aliases = count_aliases(doc, set, 0);
            if aliases > self.max_aliases {
                return Err(too_complex(format!(
                    "the operation uses {aliases} aliases; at most {} are allowed",
                    self.max_aliases
                )));
            }
            let roots = count_root_fields(doc, set, 0, &|_| true);
            if roots > self.max_root_fields {
                return Err(too_complex(format!(
                    "the operation selects {roots} root fields; at most {} are allowed",
                    self.max_root_fields
                )));
            }
            if !self.introspection
                && count_root_fields(doc, set, 0, &|name| name == "__schema" || name == "__type")
                    > 0
            {
                return Err(
                    AppError::Forbidden("introspection is disabled on this server".into())
                        .to_server_error(),
                );
            }
        }
        Ok(())
    }
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExt(self.clone()))
    }
}

struct GuardExt(Guard);

fn count_aliases(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> usize {
    // Fragment cycles are rejected by validation later; the depth cap keeps this walk finite.
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|sel| match &sel.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some())
                    + count_aliases(doc, &f.node.selection_set.node, depth + 1)
            }
            Selection::InlineFragment(fr) => {
                count_aliases(doc, &fr.node.selection_set.node, depth + 1)
            }
            Selection::FragmentSpread(sp) => doc
                .fragments
                .get(&sp.node.fragment_name.node)
                .map_or(0, |fr| {
                    count_aliases(doc, &fr.node.selection_set.node, depth + 1)
                }),
        })
        .sum()
}

/// Root fields, counting those whose name `counts` accepts.
fn count_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    depth: usize,
    counts: &dyn Fn(&str) -> bool,
) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|sel| match &sel.node {
            Selection::Field(f) => usize::from(counts(f.node.name.node.as_str())),
            Selection::InlineFragment(fr) => {
                count_root_fields(doc, &fr.node.selection_set.node, depth + 1, counts)
            }
            Selection::FragmentSpread(sp) => doc
                .fragments
                .get(&sp.node.fragment_name.node)
                .map_or(0, |fr| {
                    count_root_fields(doc, &fr.node.selection_set.node, depth + 1, counts)
                }),
        })
        .sum()
}

fn too_complex(message: String) -> ServerError {
    AppError::QueryTooComplex(message).to_server_error()
}

/// Gives every error of a response a code.
pub fn with_codes(mut response: Response) -> Response {
    for err in &mut response.errors {
        AppError::classify_library_error(err);
    }
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for GuardExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(with_codes).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        self.0.check(&doc)?;
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for e in &mut errors {
                AppError::classify_library_error(e);
            }
            errors
        })
    }
}
