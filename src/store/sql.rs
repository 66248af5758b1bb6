//! A raw-SQL builder for the statements diesel's DSL cannot express (LATERAL batches, GROUPING
//! SETS). Unlike `diesel::sql_query`, its statements are safe to cache: the same query shape
//! reuses one prepared statement per connection instead of a parse/plan round trip each time.
//!
//! Predicates that both the DSL and raw statements use ([`crate::store::page::After`],
//! [`crate::store::scope::Visible`]) are diesel expressions, embedded here with
//! [`Sql::push_fragment`], so each is written once.

use std::sync::Arc;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self as st, Untyped};
use uuid::Uuid;

/// A bind parameter; the variant fixes its PostgreSQL type.
#[derive(Debug, Clone)]
pub enum Bind {
    Uuid(Uuid),
    Uuids(Vec<Uuid>),
    Text(String),
    Texts(Vec<String>),
    Int(i32),
    Ints(Vec<i32>),
    BigInt(i64),
    Float(f64),
    Floats(Vec<f64>),
    Timestamp(DateTime<Utc>),
    Timestamps(Vec<DateTime<Utc>>),
    NullableTexts(Vec<Option<String>>),
    NullableUuids(Vec<Option<Uuid>>),
    Json(serde_json::Value),
    Jsons(Vec<serde_json::Value>),
    Numeric(BigDecimal),
    Bool(bool),
    NullableText(Option<String>),
    NullableUuid(Option<Uuid>),
    NullableJson(Option<serde_json::Value>),
    NullableBool(Option<bool>),
    Bytes(Vec<u8>),
}

type Fragment = Arc<dyn QueryFragment<Pg> + Send + Sync>;

#[derive(Clone)]
enum Part {
    Raw(String),
    Bind(Bind),
    Fragment(Fragment),
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Raw(s) => f.debug_tuple("Raw").field(s).finish(),
            Part::Bind(b) => f.debug_tuple("Bind").field(b).finish(),
            Part::Fragment(_) => f.write_str("Fragment"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Sql {
    parts: Vec<Part>,
}

impl Sql {
    pub fn new(sql: impl Into<String>) -> Self {
        Sql {
            parts: vec![Part::Raw(sql.into())],
        }
    }

    /// A statement (or a piece of one) that is just this expression.
    pub fn fragment(f: impl QueryFragment<Pg> + Send + Sync + 'static) -> Self {
        Sql {
            parts: vec![Part::Fragment(Arc::new(f))],
        }
    }

    /// Appends a diesel expression, binds and all.
    pub fn push_fragment(
        &mut self,
        f: impl QueryFragment<Pg> + Send + Sync + 'static,
    ) -> &mut Self {
        self.parts.push(Part::Fragment(Arc::new(f)));
        self
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        match self.parts.last_mut() {
            Some(Part::Raw(s)) => s.push_str(sql),
            _ => self.parts.push(Part::Raw(sql.to_owned())),
        }
        self
    }

    pub fn bind(&mut self, value: Bind) -> &mut Self {
        self.parts.push(Part::Bind(value));
        self
    }

    /// The statement text with `$n` placeholders, as PostgreSQL receives it.
    pub fn text(&self) -> String {
        diesel::debug_query::<Pg, _>(self).to_string()
    }
}

impl QueryId for Sql {
    type QueryId = ();
    // No static id: diesel keys the statement cache on the SQL text, which is what we want.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Sql {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        for part in &self.parts {
            match part {
                Part::Raw(s) => out.push_sql(s),
                Part::Fragment(f) => f.walk_ast(out.reborrow())?,
                Part::Bind(b) => match b {
                    Bind::Uuid(v) => out.push_bind_param::<st::Uuid, _>(v)?,
                    Bind::Uuids(v) => out.push_bind_param::<st::Array<st::Uuid>, _>(v)?,
                    Bind::Text(v) => out.push_bind_param::<st::Text, _>(v)?,
                    Bind::Texts(v) => out.push_bind_param::<st::Array<st::Text>, _>(v)?,
                    Bind::Int(v) => out.push_bind_param::<st::Integer, _>(v)?,
                    Bind::Ints(v) => out.push_bind_param::<st::Array<st::Integer>, _>(v)?,
                    Bind::BigInt(v) => out.push_bind_param::<st::BigInt, _>(v)?,
                    Bind::Float(v) => out.push_bind_param::<st::Double, _>(v)?,
                    Bind::Floats(v) => out.push_bind_param::<st::Array<st::Double>, _>(v)?,
                    Bind::Timestamp(v) => out.push_bind_param::<st::Timestamptz, _>(v)?,
                    Bind::Timestamps(v) => {
                        out.push_bind_param::<st::Array<st::Timestamptz>, _>(v)?
                    }
                    Bind::NullableTexts(v) => {
                        out.push_bind_param::<st::Array<st::Nullable<st::Text>>, _>(v)?
                    }
                    Bind::NullableUuids(v) => {
                        out.push_bind_param::<st::Array<st::Nullable<st::Uuid>>, _>(v)?
                    }
                    Bind::Json(v) => out.push_bind_param::<st::Jsonb, _>(v)?,
                    Bind::Jsons(v) => out.push_bind_param::<st::Array<st::Jsonb>, _>(v)?,
                    Bind::Numeric(v) => out.push_bind_param::<st::Numeric, _>(v)?,
                    Bind::Bool(v) => out.push_bind_param::<st::Bool, _>(v)?,
                    Bind::NullableText(v) => out.push_bind_param::<st::Nullable<st::Text>, _>(v)?,
                    Bind::NullableUuid(v) => out.push_bind_param::<st::Nullable<st::Uuid>, _>(v)?,
                    Bind::NullableBool(v) => out.push_bind_param::<st::Nullable<st::Bool>, _>(v)?,
                    Bind::NullableJson(v) => {
                        out.push_bind_param::<st::Nullable<st::Jsonb>, _>(v)?
                    }
                    Bind::Bytes(v) => out.push_bind_param::<st::Binary, _>(v)?,
                },
            }
        }
        Ok(())
    }
}
