use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::lifecycle::Lifecycle;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::pages;

db_enum!(PageStatus {
    Discovered => "discovered",
    Crawling => "crawling",
    Analyzed => "analyzed",
    Failed => "failed",
    Skipped => "skipped",
});

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = pages, check_for_backend(diesel::pg::Pg))]
pub struct PageRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub url: String,
    pub title: Option<String>,
    pub status: PageStatus,
    pub depth: i32,
    pub parent_page_id: Option<Uuid>,
    pub analysis_result: Option<JsonText>,
    pub crawled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// `SELECT k.parent_key, x.*` lists decode by position: see `store::row`.
by_position!(
    PageRow,
    pages,
    [
        id,
        session_id,
        url,
        title,
        status,
        depth,
        parent_page_id,
        analysis_result,
        crawled_at,
        created_at,
        updated_at
    ]
);

/// The analysis JSON, which most list queries never select.
impl crate::store::row::Slim for PageRow {
    const OPTIONAL: &'static [&'static str] = &[
        "session_id",
        "url",
        "title",
        "status",
        "depth",
        "parent_page_id",
        "analysis_result",
        "crawled_at",
        "updated_at",
    ];
}

impl Keyed for PageRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Page lifecycle (API.md).
pub const PAGE_LIFECYCLE: Lifecycle<PageStatus> = Lifecycle {
    entity: "page",
    table: "pages",
    session_col: "t.session_id",
    moves: &[
        (PageStatus::Discovered, PageStatus::Crawling),
        (PageStatus::Crawling, PageStatus::Analyzed),
        (PageStatus::Crawling, PageStatus::Failed),
        (PageStatus::Discovered, PageStatus::Skipped),
    ],
};

impl PageStatus {
    /// Whether a page in this status counts towards `pages_crawled`.
    pub fn is_crawled(self) -> bool {
        matches!(self, PageStatus::Analyzed | PageStatus::Failed)
    }
}
