use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::store::json::JsonText;
use crate::store::page::{Cursor, Keyed};
use crate::store::row::by_position;
use crate::store::schema::bug_comments;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = bug_comments, check_for_backend(diesel::pg::Pg))]
pub struct CommentRow {
    pub id: Uuid,
    pub bug_id: Uuid,
    pub session_id: Uuid,
    pub author_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub body: String,
    pub is_ai_generated: bool,
    pub ai_metadata: JsonText,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

by_position!(
    CommentRow,
    bug_comments,
    [
        id,
        bug_id,
        session_id,
        author_id,
        agent_id,
        body,
        is_ai_generated,
        ai_metadata,
        created_at,
        updated_at,
        edited_at,
        deleted_at,
    ]
);

impl Keyed for CommentRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Comment lists are short: every column is always read.
impl crate::store::row::Slim for CommentRow {
    const OPTIONAL: &'static [&'static str] = &[];
}

pub const MAX_BODY_LEN: usize = 10_000;
