use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::schema::events;

db_enum!(
    /// What happened.
    EventKind {
        SessionCreated => "session_created",
        SessionStatus => "session_status",
        SessionCost => "session_cost",
        SessionDeleted => "session_deleted",
        PagesRecorded => "pages_recorded",
        BugReported => "bug_reported",
        BugStatus => "bug_status",
        JobCreated => "job_created",
        JobStatus => "job_status",
        JobProgress => "job_progress",
    }
);

/// Where an event sits in the log: its transaction's id, then its own id. Clients see it as an
/// opaque cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub txid: i64,
    pub id: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.txid, self.id)
    }
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an event cursor");
        let (t, i) = s.trim().split_once('.').ok_or_else(bad)?;
        let txid: i64 = t.parse().map_err(|_| bad())?;
        let id: i64 = i.parse().map_err(|_| bad())?;
        if txid < 0 || id < 0 {
            return Err(bad());
        }
        Ok(Position { txid, id })
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: i64,
    pub txid: i64,
    pub session_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub entity: String,
    pub entity_id: Option<Uuid>,
    pub kind: EventKind,
    pub payload: JsonText,
    pub created_at: DateTime<Utc>,
}

impl EventRow {
    pub fn position(&self) -> Position {
        Position {
            txid: self.txid,
            id: self.id,
        }
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub session: Option<Uuid>,
    pub project: Option<Uuid>,
    /// Only these kinds; empty means all.
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    pub fn matches(&self, e: &EventRow) -> bool {
        self.session.is_none_or(|s| e.session_id == Some(s))
            && self.project.is_none_or(|p| e.project_id == Some(p))
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
    }
}
