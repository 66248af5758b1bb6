//! A bug's comments through the one child-list loader, newest first, deleted ones left out.

use super::model::CommentRow;
use crate::store::batch::{Filter, parents};
use crate::store::sql::Sql;

parents!(
    /// Whose comments a list holds: a bug's.
    CommentParent of bug_comments as CommentRow, filtered by CommentFilter, order Descending {
        Bug => bug_id,
    }
);

/// Comments lists have no arguments but always leave deleted comments out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CommentFilter;

impl Filter for CommentFilter {
    fn push(&self, q: &mut Sql) {
        q.push(" AND deleted_at IS NULL");
    }
}
