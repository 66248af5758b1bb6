use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::lifecycle::Lifecycle;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::bugs;

db_enum!(BugStatus {
    Detected => "detected",
    Validated => "validated",
    Reported => "reported",
    Dismissed => "dismissed",
});

db_enum!(BugPriority {
    Critical => "critical",
    High => "high",
    Medium => "medium",
    Low => "low",
});

db_enum!(BugCategory {
    UiUx => "ui_ux",
    Functional => "functional",
    Performance => "performance",
    Security => "security",
    Accessibility => "accessibility",
    Content => "content",
    Seo => "seo",
    Other => "other",
});

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = bugs, check_for_backend(diesel::pg::Pg))]
pub struct BugRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub page_id: Option<Uuid>,
    pub title: String,
    pub description: String,
    pub category: BugCategory,
    pub priority: BugPriority,
    pub status: BugStatus,
    pub steps_to_reproduce: JsonText,
    pub evidence: JsonText,
    pub confidence: f64,
    pub expected_behavior: Option<String>,
    pub actual_behavior: Option<String>,
    pub affected_users: Option<String>,
    pub linear_issue_id: Option<String>,
    pub dismiss_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// `SELECT k.parent_key, x.*` lists decode by position: see `store::row`.
by_position!(
    BugRow,
    bugs,
    [
        id,
        session_id,
        page_id,
        title,
        description,
        category,
        priority,
        status,
        steps_to_reproduce,
        evidence,
        confidence,
        expected_behavior,
        actual_behavior,
        affected_users,
        linear_issue_id,
        dismiss_reason,
        created_at,
        updated_at
    ]
);

/// Every column but the key and the cursor: a list reads only what its fields need
/// (`api::types::bug` says which field reads which).
impl crate::store::row::Slim for BugRow {
    const OPTIONAL: &'static [&'static str] = &[
        "session_id",
        "page_id",
        "title",
        "description",
        "category",
        "priority",
        "status",
        "steps_to_reproduce",
        "evidence",
        "confidence",
        "expected_behavior",
        "actual_behavior",
        "affected_users",
        "linear_issue_id",
        "dismiss_reason",
        "updated_at",
    ];
}

impl Keyed for BugRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Per-session aggregates of `CrawlSession.statistics`.
#[derive(Debug, Clone, Default)]
pub struct BugStats {
    pub total: i64,
    pub avg_confidence: Option<f64>,
    pub by_priority: Vec<(BugPriority, i64)>,
    pub by_category: Vec<(BugCategory, i64)>,
    pub by_status: Vec<(BugStatus, i64)>,
}

/// Bug lifecycle (API.md): validate, mark reported, dismiss, reopen.
pub const BUG_LIFECYCLE: Lifecycle<BugStatus> = Lifecycle {
    entity: "bug",
    table: "bugs",
    session_col: "t.session_id",
    moves: &[
        (BugStatus::Detected, BugStatus::Validated),
        (BugStatus::Validated, BugStatus::Reported),
        (BugStatus::Detected, BugStatus::Dismissed),
        (BugStatus::Validated, BugStatus::Dismissed),
        (BugStatus::Reported, BugStatus::Dismissed),
        (BugStatus::Dismissed, BugStatus::Detected),
    ],
};
