use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::enums::db_enum;
use crate::store::json::JsonText;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::evidence;

db_enum!(
    /// Where a piece of evidence comes from.
    EvidenceSource {
        Screenshot => "screenshot",
        DomSnapshot => "dom_snapshot",
        ConsoleLog => "console_log",
        NetworkTrace => "network_trace",
        TestResult => "test_result",
        AiAnalysis => "ai_analysis",
        HumanReport => "human_report",
        Other => "other",
    }
);

db_enum!(
    /// How two pieces of evidence relate.
    EvidenceLinkKind {
        Related => "related",
        Contradicts => "contradicts",
    }
);

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = evidence, check_for_backend(diesel::pg::Pg))]
pub struct EvidenceRow {
    pub id: Uuid,
    pub bug_id: Uuid,
    pub session_id: Uuid,
    pub execution_id: Option<Uuid>,
    pub source_type: EvidenceSource,
    pub summary: String,
    pub data: JsonText,
    pub credibility: f64,
    pub is_verified: bool,
    pub verified_by: Option<Uuid>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

by_position!(
    EvidenceRow,
    evidence,
    [
        id,
        bug_id,
        session_id,
        execution_id,
        source_type,
        summary,
        data,
        credibility,
        is_verified,
        verified_by,
        verified_at,
        created_at,
        updated_at,
    ]
);

impl Keyed for EvidenceRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Evidence lists are short: every column is always read.
impl crate::store::row::Slim for EvidenceRow {
    const OPTIONAL: &'static [&'static str] = &[];
}

pub const MAX_SUMMARY_LEN: usize = 2_000;
/// Most links one `addEvidence` makes.
pub const MAX_LINKS: usize = 50;
