//! Query limits that keep one client from exhausting the gateway, and error codes for the
//! errors async-graphql raises itself.
//!
//! Depth and complexity are checked by async-graphql during validation (connections cost their
//! `first` times their selection); aliases and root fields per operation are counted here on the
//! parsed document. Every limit is configurable (see the README).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ValidationResult, Variables};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::input;
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
    /// Tokens per document, counted by a flat lexer before parsing.
    pub max_tokens: usize,
    /// Field selections per document, as written and with fragments expanded.
    pub max_fields: usize,
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
            // The largest legitimate request is a 5,000-page `recordPages` (about 1.5 MB of
            // variables with 100-character URLs and titles).
            max_body_bytes: 4 * 1024 * 1024,
            // Real documents (GraphiQL's introspection query included) have a few hundred
            // tokens and fields; a 900,000-field document took 7 s of CPU to parse and validate.
            max_tokens: 15_000,
            max_fields: 2_000,
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
            max_tokens: env_num("GRAPHQL_MAX_TOKENS", d.max_tokens)?,
            max_fields: env_num("GRAPHQL_MAX_FIELDS", d.max_fields)?,
        })
    }
}

/// Counts aliases and root fields, and refuses introspection when it is off. HTTP requests are
/// checked by `api::exec::execute`, WebSocket operations by the socket loop (`http::ws`), both
/// before async-graphql parses or validates anything; the extension on the WebSocket schema
/// only gives library errors their codes (an extension costs a hook on every field, which the
/// HTTP path avoids).
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_aliases: usize,
    pub max_root_fields: usize,
    /// When false, `__schema` and `__type` are refused with `FORBIDDEN` (async-graphql alone
    /// would answer them with a silent null).
    pub introspection: bool,
    pub max_tokens: usize,
    pub max_fields: usize,
    pub max_depth: usize,
}

/// Deepest chain of fields under `__schema` or `__type` (the standard introspection query needs
/// 15), and how many of those a document may select at its root.
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
pub const MAX_INTROSPECTION_FIELDS: usize = 5;

impl Guard {
    pub fn new(limits: &Limits) -> Self {
        Guard {
            max_depth: limits.max_depth,
            max_aliases: limits.max_aliases,
            max_root_fields: limits.max_root_fields,
            introspection: limits.introspection,
            max_tokens: limits.max_tokens,
            max_fields: limits.max_fields,
        }
    }

    /// The check on the raw text, before it is parsed: nesting and tokens (see [`input::scan`]).
    pub fn scan(&self, query: &str) -> Result<(), ServerError> {
        input::scan(query, self.max_tokens).map_err(|e| e.to_server_error())
    }

    /// Checks a parsed document and its variables before validation: its shape (fields,
    /// fragment spreads), the input values, and every operation's aliases, root fields and
    /// introspection.
    pub fn check(
        &self,
        doc: &ExecutableDocument,
        variables: &Variables,
    ) -> Result<(), ServerError> {
        let shape = input::shape(doc).map_err(|e| e.to_server_error())?;
        let fields = shape.written.max(shape.expanded);
        if fields > self.max_fields {
            return Err(too_complex(format!(
                "the document selects {fields} fields (fragments expanded); at most {} are allowed",
                self.max_fields
            )));
        }
        if shape.depth > self.max_depth {
            return Err(too_complex(format!(
                "the document nests fields {} levels deep; at most {} are allowed",
                shape.depth, self.max_depth
            )));
        }
        if shape.introspection_depth > MAX_INTROSPECTION_DEPTH {
            return Err(too_complex(format!(
                "introspection nests {} levels deep; at most {MAX_INTROSPECTION_DEPTH} are allowed",
                shape.introspection_depth
            )));
        }
        input::check_values(doc, variables).map_err(|e| e.to_server_error())?;
        for (_, op) in doc.operations.iter() {
            let set = &op.node.selection_set.node;
            let aliases = count_aliases(doc, set);
            if aliases > self.max_aliases {
                return Err(too_complex(format!(
                    "the operation uses {aliases} aliases; at most {} are allowed",
                    self.max_aliases
                )));
            }
            let roots = count_root_fields(doc, set, &|_| true);
            if roots > self.max_root_fields {
                return Err(too_complex(format!(
                    "the operation selects {roots} root fields; at most {} are allowed",
                    self.max_root_fields
                )));
            }
            let introspection =
                count_root_fields(doc, set, &|name| name == "__schema" || name == "__type");
            if introspection > MAX_INTROSPECTION_FIELDS {
                return Err(too_complex(format!(
                    "the operation selects {introspection} introspection fields; at most \
                     {MAX_INTROSPECTION_FIELDS} are allowed"
                )));
            }
            if !self.introspection && introspection > 0 {
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
        Arc::new(GuardExt)
    }
}

struct GuardExt;

/// Counts over a selection set with fragments expanded. Each fragment is counted once and its
/// total reused wherever it is spread, so a document that spreads fragments exponentially
/// (`fragment F { ...G ...G }` chains) costs linear time; a fragment that spreads itself counts
/// as empty here and is rejected by validation afterwards.
struct Counter<'a, F: Fn(&Selection) -> usize> {
    doc: &'a ExecutableDocument,
    own: F,
    /// Whether to descend into fields' selection sets (aliases) or stay at the root.
    nested: bool,
    memo: std::collections::HashMap<&'a str, usize>,
    visiting: std::collections::HashSet<&'a str>,
}

impl<'a, F: Fn(&Selection) -> usize> Counter<'a, F> {
    fn new(doc: &'a ExecutableDocument, nested: bool, own: F) -> Self {
        Counter {
            doc,
            own,
            nested,
            memo: Default::default(),
            visiting: Default::default(),
        }
    }

    fn count(&mut self, set: &'a SelectionSet) -> usize {
        let mut total = 0usize;
        for sel in &set.items {
            let n = match &sel.node {
                Selection::Field(f) => {
                    let inner = if self.nested {
                        self.count(&f.node.selection_set.node)
                    } else {
                        0
                    };
                    (self.own)(&sel.node).saturating_add(inner)
                }
                Selection::InlineFragment(fr) => self.count(&fr.node.selection_set.node),
                Selection::FragmentSpread(sp) => {
                    let name = sp.node.fragment_name.node.as_str();
                    if let Some(n) = self.memo.get(name) {
                        *n
                    } else if !self.visiting.insert(name) {
                        0
                    } else {
                        let n = match self.doc.fragments.get(&sp.node.fragment_name.node) {
                            Some(fr) => self.count(&fr.node.selection_set.node),
                            None => 0,
                        };
                        self.visiting.remove(name);
                        self.memo.insert(name, n);
                        n
                    }
                }
            };
            total = total.saturating_add(n);
        }
        total
    }
}

fn count_aliases(doc: &ExecutableDocument, set: &SelectionSet) -> usize {
    Counter::new(doc, true, |sel| match sel {
        Selection::Field(f) => usize::from(f.node.alias.is_some()),
        _ => 0,
    })
    .count(set)
}

/// Root fields, counting those whose name `counts` accepts.
fn count_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    counts: &dyn Fn(&str) -> bool,
) -> usize {
    Counter::new(doc, false, |sel| match sel {
        Selection::Field(f) => usize::from(counts(f.node.name.node.as_str())),
        _ => 0,
    })
    .count(set)
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
