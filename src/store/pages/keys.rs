//! The keys of a parent's page list, read through the one child-list loader (`store::batch`).

use super::model::{PageRow, PageStatus};
use crate::error::{AppError, AppResult};
use crate::store::batch::{Filter, parents};
use crate::store::sql::{Bind, Sql};

parents!(
    /// Whose pages a list holds: a session's, or a page's children.
    PageParent of pages as PageRow, filtered by PageFilter {
        Session => session_id,
        Page => parent_page_id,
    }
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PageFilter {
    pub status: Option<PageStatus>,
    pub max_depth: Option<i32>,
}

impl PageFilter {
    pub fn new(status: Option<PageStatus>, max_depth: Option<i32>) -> AppResult<Self> {
        if max_depth.is_some_and(|d| d < 0) {
            return Err(AppError::bad_field(
                "maxDepth",
                "maxDepth must not be negative",
            ));
        }
        Ok(PageFilter { status, max_depth })
    }
}

impl Filter for PageFilter {
    fn push(&self, q: &mut Sql) {
        if let Some(st) = self.status {
            q.push(" AND status = ").bind(Bind::Text(st.as_db().into()));
        }
        if let Some(d) = self.max_depth {
            q.push(" AND depth <= ").bind(Bind::Int(d));
        }
    }
}
