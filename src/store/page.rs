//! Keyset paging: every list is ordered by `(created_at, id)`, which is unique and indexed, and
//! continues after an opaque cursor with the one keyset predicate, [`After`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// Largest `first` a client may ask for; larger values are an error, never a silent truncation.
pub const MAX_FIRST: i32 = 500;

/// A keyset position: every list is ordered by `(created_at, id)`, which is unique and indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl<T: Keyed> Keyed for std::sync::Arc<T> {
    fn cursor(&self) -> Cursor {
        (**self).cursor()
    }
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

/// Which way a list runs through `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Oldest first: pages, bugs, users, projects.
    Ascending,
    /// Newest first: sessions, the audit log.
    Descending,
}

impl Window {
    /// The one keyset predicate of this window, if it continues after a cursor.
    pub fn after(&self, direction: Direction) -> Option<After> {
        self.after.map(|cursor| After { cursor, direction })
    }
}

/// Rows after a cursor in list order: `(created_at, id) > ($1, $2)` (or `<` for newest-first
/// lists). One row-value comparison that a `(created_at, id)` index answers in either direction;
/// it is a diesel expression, so the DSL filters with it and `Sql` embeds it unchanged.
#[derive(Debug, Clone, Copy)]
pub struct After {
    cursor: Cursor,
    direction: Direction,
}

impl QueryFragment<Pg> for After {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("(created_at, id) ");
        out.push_sql(match self.direction {
            Direction::Ascending => ">",
            Direction::Descending => "<",
        });
        out.push_sql(" (");
        out.push_bind_param::<Timestamptz, _>(&self.cursor.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<SqlUuid, _>(&self.cursor.id)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryId for After {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Expression for After {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for After {}

impl<QS> SelectableExpression<QS> for After {}

impl ValidGrouping<()> for After {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyset_predicate_runs_both_ways() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1).unwrap_or_default(),
            id: Uuid::nil(),
        };
        let text = |direction| {
            let w = Window {
                first: 5,
                after: Some(cursor),
            };
            let after = w.after(direction).expect("a cursor was given");
            diesel::debug_query::<Pg, _>(&crate::store::sql::Sql::fragment(after)).to_string()
        };
        assert!(text(Direction::Ascending).starts_with("(created_at, id) > ($1, $2)"));
        assert!(text(Direction::Descending).starts_with("(created_at, id) < ($1, $2)"));
        let first_page = Window {
            first: 5,
            after: None,
        };
        assert!(first_page.after(Direction::Ascending).is_none());
    }
}
