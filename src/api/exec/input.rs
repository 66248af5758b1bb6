//! Checks on untrusted request input that run before anything recurses over it.
//!
//! The GraphQL parser, validation, the guard's counters, `Variables` conversion and the JSON
//! scalars all recurse once per nesting level. A document of a few kilobytes that nests a list
//! literal 2,000 deep overflowed a worker thread's stack and aborted the process, so:
//! 1. [`scan`] lexes the raw text (a flat loop, no recursion) and refuses documents that nest
//!    deeper than [`MAX_NESTING`] or hold more tokens than the configured limit, before the
//!    parser sees them;
//! 2. [`check_values`] walks the parsed document's literals and the variables (now bounded by
//!    the scan and by serde_json's own recursion limit of 128) and refuses values nested deeper
//!    than [`MAX_INPUT_DEPTH`] and strings or keys holding NUL characters, which PostgreSQL
//!    cannot store. Every input of every operation passes here, so no resolver repeats it.

use async_graphql::parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Positioned, Variables};
use async_graphql_value::{ConstValue, Value};

use crate::error::AppError;

/// Deepest bracket nesting (`{`, `[`, `(` together) a document may have. Selections are limited
/// to `GRAPHQL_MAX_DEPTH` levels later; this bound only has to leave room for them plus an input
/// value of [`MAX_INPUT_DEPTH`] levels, and keeps the recursive parser far from the end of a
/// 2 MiB worker stack: an unoptimized build needs about 8 KiB per level (a test parses a
/// document this deep on half that stack), an optimized one under 2 KiB.
pub const MAX_NESTING: usize = 64;

/// Deepest nesting of an input value (variables, literals and the JSON scalars `config`,
/// `payload`, `evidence`, `analysisResult`, `result`). Deeper JSON could be stored but not read
/// back faithfully (serde_json stops at 128 levels), so it is refused at the door instead.
pub const MAX_INPUT_DEPTH: usize = 32;

/// Lexes `src` without recursion: at most `max_tokens` tokens and [`MAX_NESTING`] levels of
/// brackets. Unknown characters count as tokens and are left to the parser to reject.
pub fn scan(src: &str, max_tokens: usize) -> Result<(), AppError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    let mut tokens = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(AppError::bad_input(format!(
                        "the document nests deeper than {MAX_NESTING} levels"
                    )));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if b[i..].starts_with(b"...") => i += 3,
            c if c == b'_' || c == b'-' || c.is_ascii_alphanumeric() => {
                i += 1;
                while i < b.len() && (b[i] == b'_' || b[i] == b'.' || b[i].is_ascii_alphanumeric())
                {
                    // A sign inside a number's exponent (`1e+5`) belongs to it.
                    let exp_sign = matches!(b[i], b'e' | b'E')
                        && b.get(i + 1).is_some_and(|n| *n == b'+' || *n == b'-');
                    i += if exp_sign { 2 } else { 1 };
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > max_tokens {
            return Err(AppError::QueryTooComplex(format!(
                "the document has more than {max_tokens} tokens"
            )));
        }
    }
    Ok(())
}

/// What executing and validating a document will walk: field selections as written and with
/// fragments expanded. async-graphql's validation walks every spread of a fragment again, with
/// no memo and no cycle check, so these are computed here first, linearly (each fragment once),
/// with recursion bounded by [`MAX_NESTING`] levels of fields, fragments and spreads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Fields written in operations and fragments (parsing cost).
    pub written: usize,
    /// Fields of the operations with every spread expanded (validation and execution cost).
    pub expanded: usize,
    /// Deepest chain of data fields, counted as async-graphql counts depth (`__typename` is
    /// not a level), leaving out what lies under `__schema` and `__type`.
    pub depth: usize,
    /// Deepest chain under `__schema` or `__type`, which have a limit of their own: the
    /// standard introspection query nests 15 levels (`ofType` nine times), more than any data
    /// query may, yet every level of it is cheap.
    pub introspection_depth: usize,
}

pub fn shape(doc: &ExecutableDocument) -> Result<Shape, AppError> {
    let mut walk = Expand {
        doc,
        memo: Default::default(),
        visiting: Default::default(),
        introspection_depth: 0,
    };
    let mut all = Size::default();
    for (_, op) in doc.operations.iter() {
        all = all.and(walk.set(&op.node.selection_set.node, 1)?);
    }
    Ok(Shape {
        written: count_fields(doc),
        expanded: all.fields,
        depth: all.data_depth,
        introspection_depth: walk.introspection_depth,
    })
}

/// What a selection set expands to.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    fields: usize,
    /// Depth of every field.
    depth: usize,
    /// Depth of the fields outside introspection.
    data_depth: usize,
}

impl Size {
    /// Siblings: fields add up, depths take the deeper.
    fn and(self, other: Size) -> Size {
        Size {
            fields: self.fields.saturating_add(other.fields),
            depth: self.depth.max(other.depth),
            data_depth: self.data_depth.max(other.data_depth),
        }
    }
}

struct Expand<'a> {
    doc: &'a ExecutableDocument,
    memo: std::collections::HashMap<&'a str, Size>,
    visiting: std::collections::HashSet<&'a str>,
    introspection_depth: usize,
}

impl<'a> Expand<'a> {
    fn set(&mut self, set: &'a SelectionSet, level: usize) -> Result<Size, AppError> {
        if level > MAX_NESTING {
            return Err(AppError::bad_input(format!(
                "selections and fragment spreads nest deeper than {MAX_NESTING} levels"
            )));
        }
        let mut total = Size::default();
        for sel in &set.items {
            let size = match &sel.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    let inner = self.set(&f.node.selection_set.node, level + 1)?;
                    let own = usize::from(name != "__typename");
                    let depth = own + inner.depth;
                    let data_depth = if name == "__schema" || name == "__type" {
                        self.introspection_depth = self.introspection_depth.max(depth);
                        0
                    } else {
                        own + inner.data_depth
                    };
                    Size {
                        fields: inner.fields.saturating_add(1),
                        depth,
                        data_depth,
                    }
                }
                Selection::InlineFragment(fr) => {
                    self.set(&fr.node.selection_set.node, level + 1)?
                }
                Selection::FragmentSpread(sp) => {
                    let name = sp.node.fragment_name.node.as_str();
                    if let Some(size) = self.memo.get(name) {
                        *size
                    } else if !self.visiting.insert(name) {
                        return Err(AppError::bad_input(format!(
                            "fragment {name} spreads itself"
                        )));
                    } else {
                        // Refused here rather than left to validation: an unknown fragment
                        // would count as empty, and async-graphql walks every spread of the
                        // fragments that spread it (3^31 walks in a 400-token document).
                        let Some(fr) = self.doc.fragments.get(&sp.node.fragment_name.node) else {
                            return Err(AppError::bad_input(format!("unknown fragment {name}")));
                        };
                        let size = self.set(&fr.node.selection_set.node, level + 1)?;
                        self.visiting.remove(name);
                        self.memo.insert(name, size);
                        size
                    }
                }
            };
            total = total.and(size);
        }
        Ok(total)
    }
}

/// Field selections written in the document (operations and fragments, each counted where it is
/// written, not where it is spread): the work parsing and validating it costs.
pub fn count_fields(doc: &ExecutableDocument) -> usize {
    fn set(s: &SelectionSet) -> usize {
        s.items
            .iter()
            .map(|sel| match &sel.node {
                Selection::Field(f) => 1 + set(&f.node.selection_set.node),
                Selection::InlineFragment(fr) => set(&fr.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let ops: usize = doc
        .operations
        .iter()
        .map(|(_, op)| set(&op.node.selection_set.node))
        .sum();
    let frags: usize = doc
        .fragments
        .values()
        .map(|f| set(&f.node.selection_set.node))
        .sum();
    ops + frags
}

/// Refuses input values nested deeper than [`MAX_INPUT_DEPTH`] and strings or object keys that
/// hold a NUL character, in the variables and in every literal of the document.
/// `extensions.field` names the variable or argument and the path inside it.
pub fn check_values(doc: &ExecutableDocument, variables: &Variables) -> Result<(), AppError> {
    for (name, value) in variables.iter() {
        check(value, &mut name.to_string(), 1)?;
    }
    for (_, op) in doc.operations.iter() {
        for var in &op.node.variable_definitions {
            if let Some(default) = &var.node.default_value {
                check(&default.node, &mut var.node.name.node.to_string(), 1)?;
            }
        }
        check_directives(&op.node.directives)?;
        check_set(&op.node.selection_set.node)?;
    }
    for frag in doc.fragments.values() {
        check_directives(&frag.node.directives)?;
        check_set(&frag.node.selection_set.node)?;
    }
    Ok(())
}

fn check_set(set: &SelectionSet) -> Result<(), AppError> {
    for sel in &set.items {
        match &sel.node {
            Selection::Field(f) => check_field(&f.node)?,
            Selection::InlineFragment(fr) => {
                check_directives(&fr.node.directives)?;
                check_set(&fr.node.selection_set.node)?;
            }
            Selection::FragmentSpread(sp) => check_directives(&sp.node.directives)?,
        }
    }
    Ok(())
}

fn check_field(f: &Field) -> Result<(), AppError> {
    check_args(&f.arguments)?;
    check_directives(&f.directives)?;
    check_set(&f.selection_set.node)
}

fn check_directives(ds: &[Positioned<Directive>]) -> Result<(), AppError> {
    for d in ds {
        check_args(&d.node.arguments)?;
    }
    Ok(())
}

fn check_args(args: &[(Positioned<Name>, Positioned<Value>)]) -> Result<(), AppError> {
    for (name, value) in args {
        check(&value.node, &mut name.node.to_string(), 1)?;
    }
    Ok(())
}

fn too_deep(path: &str) -> AppError {
    AppError::bad_field(
        path,
        format!("input values may nest at most {MAX_INPUT_DEPTH} levels"),
    )
}

fn has_nul(path: &str) -> AppError {
    AppError::bad_field(path, "text must not contain NUL (\\u0000) characters")
}

/// What the check needs of a value: variables are `ConstValue`s, literals `Value`s (which may
/// also be variables, checked where they are defined).
enum Node<'a, V> {
    Text(&'a str),
    List(&'a [V]),
    Object(&'a async_graphql_value::indexmap::IndexMap<Name, V>),
    Other,
}

trait InputNode: Sized {
    fn node(&self) -> Node<'_, Self>;
}

impl InputNode for ConstValue {
    fn node(&self) -> Node<'_, Self> {
        match self {
            ConstValue::String(s) => Node::Text(s),
            ConstValue::List(items) => Node::List(items),
            ConstValue::Object(map) => Node::Object(map),
            _ => Node::Other,
        }
    }
}

impl InputNode for Value {
    fn node(&self) -> Node<'_, Self> {
        match self {
            Value::String(s) => Node::Text(s),
            Value::List(items) => Node::List(items),
            Value::Object(map) => Node::Object(map),
            _ => Node::Other,
        }
    }
}

/// Checks one value and what it holds, keeping `path` (`pages[3].url`) as it descends.
fn check<V: InputNode>(v: &V, path: &mut String, depth: usize) -> Result<(), AppError> {
    if depth > MAX_INPUT_DEPTH {
        return Err(too_deep(path));
    }
    let len = path.len();
    match v.node() {
        Node::Text(s) if s.contains('\0') => return Err(has_nul(path)),
        Node::List(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                check(item, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Node::Object(map) => {
            for (key, item) in map {
                path.push('.');
                path.push_str(key);
                if key.contains('\0') {
                    return Err(has_nul(path));
                }
                check(item, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Node::Text(_) | Node::Other => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!(
            "{{ __typename @skip(if: {}true{}) }}",
            "[".repeat(n),
            "]".repeat(n)
        )
    }

    #[test]
    fn nesting_is_refused_before_parsing() {
        // Two levels for the selection set and the directive's arguments.
        assert!(scan(&nested(MAX_NESTING - 2), 10_000).is_ok());
        let err = scan(&nested(MAX_NESTING - 1), 10_000).expect_err("too deep");
        assert_eq!(err.code(), "BAD_USER_INPUT");
        let err = scan(&nested(100_000), usize::MAX).expect_err("too deep");
        assert_eq!(err.code(), "BAD_USER_INPUT");
    }

    #[test]
    fn brackets_inside_strings_and_comments_do_not_count() {
        let q = format!(
            "{{ a(s: \"{}\", b: \"\"\"{}\\\"\"\"]]\"\"\") # {}\n }}",
            "[".repeat(500),
            "{".repeat(500),
            "(".repeat(500)
        );
        assert!(scan(&q, 100).is_ok(), "{q}");
    }

    #[test]
    fn tokens_are_counted() {
        // `{`, `a`, `(`, `x`, `:`, `1.5e+3`, `)`, `...`, `F`, `}`
        assert!(scan("{ a(x: 1.5e+3) ...F }", 10).is_ok());
        let err = scan("{ a(x: 1.5e+3) ...F }", 9).expect_err("too many");
        assert_eq!(err.code(), "QUERY_TOO_COMPLEX");
        let many = format!("{{ {} }}", "a ".repeat(1_000_000));
        assert_eq!(
            scan(&many, 50_000).map_err(|e| e.code()),
            Err("QUERY_TOO_COMPLEX")
        );
    }

    /// The parser recurses per level; at the largest nesting the scan lets through it must still
    /// be far from overflowing a worker's 2 MiB stack.
    #[test]
    fn the_deepest_accepted_document_parses_on_a_small_stack() {
        let q = nested(MAX_NESTING - 2);
        scan(&q, 10_000).expect("accepted");
        let parsed = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || async_graphql::parser::parse_query(&q).map_err(|e| e.to_string()))
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(parsed.map(|_| ()), Ok(()));
    }

    fn doc(q: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(q).expect("parses")
    }

    #[test]
    fn values_are_checked_for_depth_and_nul() {
        let vars = |v: serde_json::Value| Variables::from_json(v);
        let d = doc("query($a: JSON) { f(x: 1) }");
        assert!(check_values(&d, &vars(serde_json::json!({ "a": { "b": [1, "x"] } }))).is_ok());
        let err = check_values(
            &d,
            &vars(serde_json::json!({ "a": { "b": ["ok", "n\u{0}l"] } })),
        )
        .expect_err("nul");
        assert_eq!(err.code(), "BAD_USER_INPUT");
        assert!(matches!(&err, AppError::BadUserInput { field: Some(f), .. } if f == "a.b[1]"));
        let err = check_values(&d, &vars(serde_json::json!({ "a": { "k\u{0}": 1 } })))
            .expect_err("nul key");
        assert_eq!(err.code(), "BAD_USER_INPUT");

        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_INPUT_DEPTH {
            deep = serde_json::json!([deep]);
        }
        let err = check_values(&d, &vars(serde_json::json!({ "a": deep.clone() })))
            .expect_err("too deep");
        assert!(
            matches!(&err, AppError::BadUserInput { field: Some(f), .. } if f.starts_with("a[0]"))
        );
        let ok = deep[0].clone();
        assert!(check_values(&d, &vars(serde_json::json!({ "a": ok }))).is_ok());

        let d = doc("{ f(input: { title: \"a\\u0000b\" }) { g @include(if: true) } }");
        let err = check_values(&d, &Variables::default()).expect_err("literal nul");
        assert!(
            matches!(&err, AppError::BadUserInput { field: Some(f), .. } if f == "input.title")
        );
        let d = doc("fragment F on Q { g(s: [\"\\u0000\"]) } { ...F }");
        assert!(check_values(&d, &Variables::default()).is_err());
    }

    /// `{ ...F0 }` and fragments F0..F`n`, each holding `own` and `spreads` spreads of the next;
    /// the last holds `last`.
    fn fragments(n: usize, on: &str, own: &str, spreads: usize, last: &str) -> String {
        let mut doc = String::from("{ ...F0 } ");
        for i in 0..n {
            let next = format!(" ...F{}", i + 1).repeat(spreads);
            doc.push_str(&format!("fragment F{i} on {on} {{ {own}{next} }} "));
        }
        doc.push_str(&format!("fragment F{n} on {on} {{ {last} }}"));
        doc
    }

    #[test]
    fn fragments_are_expanded_once_and_cycles_refused() {
        // 2^40 fields if every spread were walked again.
        let q = fragments(40, "Q", "a", 2, "b");
        let s = shape(&doc(&q)).expect("shape");
        assert_eq!(s.written, 41);
        assert_eq!(s.expanded, (1usize << 41) - 1);

        let err = shape(&doc(
            "{ ...A } fragment A on Q { a ...B } fragment B on Q { ...A }",
        ))
        .expect_err("cycle");
        assert_eq!(err.code(), "BAD_USER_INPUT");

        // Spreads that lead only to an unknown fragment expand to no field at all.
        let nope = fragments(31, "Q", "", 3, "...Nope");
        let err = shape(&doc(&nope)).expect_err("unknown fragment");
        assert_eq!(err.code(), "BAD_USER_INPUT");

        // A chain of spreads nests without any brackets in the text.
        let chain = fragments(5_000, "Q", "a", 1, "a");
        scan(&chain, usize::MAX).expect("flat text");
        let err = shape(&doc(&chain)).expect_err("too deep");
        assert_eq!(err.code(), "BAD_USER_INPUT");
    }

    #[test]
    fn depth_leaves_out_introspection_and_typename() {
        let d = doc("{ a { b { __typename } } ...F } fragment F on Q { c { d { e { f } } } }");
        let s = shape(&d).expect("shape");
        assert_eq!((s.depth, s.introspection_depth), (4, 0));
        let q = include_str!("../../../tests/fixtures/introspection-query.graphql");
        let s = shape(&doc(q)).expect("shape");
        assert_eq!((s.depth, s.introspection_depth), (0, 15));
        let s = shape(&doc(
            "{ me { id } __type(name: \"Bug\") { fields { type { ofType { name } } } } }",
        ))
        .expect("shape");
        assert_eq!((s.depth, s.introspection_depth), (2, 5));
    }

    #[test]
    fn fields_are_counted_where_written() {
        let d = doc("{ a { b c } ...F ... on Q { d } } fragment F on Q { e { f } }");
        assert_eq!(count_fields(&d), 6);
    }
}
