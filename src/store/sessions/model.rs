use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::lifecycle::Lifecycle;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::crawl_sessions;

db_enum!(SessionStatus {
    Pending => "pending",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = crawl_sessions, check_for_backend(diesel::pg::Pg))]
pub struct SessionRow {
    pub id: Uuid,
    pub base_url: String,
    pub status: SessionStatus,
    pub config: JsonText,
    pub pages_discovered: i32,
    pub pages_crawled: i32,
    pub bugs_found: i32,
    pub total_cost: BigDecimal,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub owner_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
}

// Statements that select the columns in order decode by position: see `store::row`.
by_position!(
    SessionRow,
    crawl_sessions,
    [
        id,
        base_url,
        status,
        config,
        pages_discovered,
        pages_crawled,
        bugs_found,
        total_cost,
        error_message,
        created_at,
        updated_at,
        started_at,
        completed_at,
        owner_id,
        project_id,
    ]
);

/// Every column but the key and the cursor: a by-id load reads only what its fields need
/// (`api::types::session` says which field reads which).
impl crate::store::row::Slim for SessionRow {
    const OPTIONAL: &'static [&'static str] = &[
        "base_url",
        "status",
        "config",
        "pages_discovered",
        "pages_crawled",
        "bugs_found",
        "total_cost",
        "error_message",
        "updated_at",
        "started_at",
        "completed_at",
        "owner_id",
        "project_id",
    ];
}

impl Keyed for SessionRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Filters of the `sessions` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    pub base_url: Option<String>,
}

/// Session lifecycle (API.md): start, complete, fail, cancel.
pub const SESSION_LIFECYCLE: Lifecycle<SessionStatus> = Lifecycle {
    entity: "session",
    table: "crawl_sessions",
    session_col: "t.id",
    moves: &[
        (SessionStatus::Pending, SessionStatus::Running),
        (SessionStatus::Running, SessionStatus::Completed),
        (SessionStatus::Running, SessionStatus::Failed),
        (SessionStatus::Pending, SessionStatus::Cancelled),
        (SessionStatus::Running, SessionStatus::Cancelled),
    ],
};

/// Statuses in which workers may still add pages and bugs to a session.
pub const INGESTING: &[SessionStatus] = &[SessionStatus::Pending, SessionStatus::Running];
