//! The keys of batched page reads: by id, and a parent's list (through the one child-list
//! loader, `store::batch`).

use std::collections::HashMap;
use std::sync::Arc;

use diesel::Column;
use uuid::Uuid;

use super::model::{PageRow, PageStatus};
use super::repo;
use crate::error::{AppError, AppResult};
use crate::store::batch::{Fetch, Filter, Parent, Reader};
use crate::store::schema::pages;
use crate::store::sql::{Bind, Sql};

/// Key of a page looked up by id (`page(id)`, `Page.parent`, `Bug.page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageId(pub Uuid);

/// Whose pages a list holds: a session's, or a page's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageParent {
    Session(Uuid),
    Page(Uuid),
}

impl Parent for PageParent {
    type Row = PageRow;
    type Filter = PageFilter;
    const TABLE: &'static str = "pages";

    fn id(&self) -> Uuid {
        match self {
            PageParent::Session(id) | PageParent::Page(id) => *id,
        }
    }

    fn column(&self) -> &'static str {
        match self {
            PageParent::Session(_) => pages::session_id::NAME,
            PageParent::Page(_) => pages::parent_page_id::NAME,
        }
    }

    fn with_id(self, id: Uuid) -> Self {
        match self {
            PageParent::Session(_) => PageParent::Session(id),
            PageParent::Page(_) => PageParent::Page(id),
        }
    }
}

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

impl Fetch<PageId> for Reader {
    type Value = Arc<PageRow>;

    async fn fetch(&self, keys: &[PageId]) -> AppResult<HashMap<PageId, Arc<PageRow>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (PageId(r.id), Arc::new(r)))
            .collect())
    }
}
