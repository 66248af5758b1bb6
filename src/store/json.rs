//! JSONB columns kept as text until a resolver asks for them.
//!
//! Most queries never select `evidence`, `stepsToReproduce`, `config` or `analysisResult`, yet
//! decoding them into `serde_json::Value` trees (and dropping those again) showed up in the load
//! profile. Rows carry the JSON text instead and parse it only when the field is resolved.

use std::borrow::Cow;
use std::io::Write;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;

#[derive(Debug, Clone, PartialEq, Eq, FromSqlRow, AsExpression)]
#[diesel(sql_type = Jsonb)]
pub struct JsonText(Cow<'static, str>);

impl JsonText {
    /// The parsed value; PostgreSQL only stores valid JSON, so a failure means a broken row.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).unwrap_or(serde_json::Value::Null)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// JSON `null`: what a row holds in place of a column its list left out (`store::row::Slim`).
impl Default for JsonText {
    fn default() -> Self {
        JsonText(Cow::Borrowed("null"))
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(v: serde_json::Value) -> Self {
        JsonText(Cow::Owned(v.to_string()))
    }
}

impl FromSql<Jsonb, Pg> for JsonText {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        // Binary JSONB is a version byte (1) followed by the JSON text.
        match value.as_bytes().split_first() {
            // Empty arrays and objects are what most rows hold, and what lists that leave the
            // column out select in its place: they cost no allocation.
            Some((1, b"[]")) => Ok(JsonText(Cow::Borrowed("[]"))),
            Some((1, b"{}")) => Ok(JsonText(Cow::Borrowed("{}"))),
            Some((1, text)) => Ok(JsonText(Cow::Owned(std::str::from_utf8(text)?.to_owned()))),
            _ => Err("unsupported JSONB version".into()),
        }
    }
}

impl ToSql<Jsonb, Pg> for JsonText {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[1])?;
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::JsonText;

    #[test]
    fn keeps_and_parses_the_text() {
        let j = JsonText::from(serde_json::json!({ "a": [1, "x"] }));
        assert_eq!(j.as_str(), r#"{"a":[1,"x"]}"#);
        assert_eq!(j.value(), serde_json::json!({ "a": [1, "x"] }));
    }
}
