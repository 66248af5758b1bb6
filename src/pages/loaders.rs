use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::model::{PageRow, PageStatus};
use super::repo;
use crate::error::{AppError, AppResult};
use crate::graphql::connection::Window;
use crate::graphql::context::{BatchLoader, Runs, group_by};

/// Key of a page looked up by id (`page(id)`, `Page.parent`, `Bug.page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageId(pub Uuid);

/// Whose pages a list holds: a session's, or a page's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageParent {
    Session(Uuid),
    Page(Uuid),
}

impl PageParent {
    pub fn id(&self) -> Uuid {
        match self {
            PageParent::Session(id) | PageParent::Page(id) => *id,
        }
    }

    /// The column that links a page to this kind of parent.
    pub fn column(&self) -> &'static str {
        match self {
            PageParent::Session(_) => "session_id",
            PageParent::Page(_) => "parent_page_id",
        }
    }

    /// The same kind of parent with another id.
    pub fn with_id(self, id: Uuid) -> Self {
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

/// One parent's page of a list. Keys that differ only in the parent id share one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageListKey {
    pub parent: PageParent,
    pub filter: PageFilter,
    pub window: Window,
}

/// One parent's `totalCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageCountKey {
    pub parent: PageParent,
    pub filter: PageFilter,
}

impl Loader<PageId> for BatchLoader {
    type Value = Arc<PageRow>;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[PageId]) -> Result<HashMap<PageId, Arc<PageRow>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (PageId(r.id), Arc::new(r)))
            .collect())
    }
}

impl Loader<PageListKey> for BatchLoader {
    type Value = Vec<Arc<PageRow>>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[PageListKey],
    ) -> Result<HashMap<PageListKey, Vec<Arc<PageRow>>>, Self::Error> {
        let mut out: HashMap<PageListKey, Vec<Arc<PageRow>>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter, window), group) in group_by(keys, |k| {
            (std::mem::discriminant(&k.parent), k.filter, k.window)
        }) {
            let parent = group[0].parent;
            let ids: Vec<Uuid> = group.iter().map(|k| k.parent.id()).collect();
            let mut runs = Runs::new(&mut out, |id| PageListKey {
                parent: parent.with_id(id),
                filter,
                window,
            });
            repo::list_for_parents(&mut conn, parent, &ids, &filter, &window, |id, row| {
                runs.push(id, row)
            })
            .await?;
            runs.finish();
        }
        Ok(out)
    }
}

impl Loader<PageCountKey> for BatchLoader {
    type Value = i64;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[PageCountKey]) -> Result<HashMap<PageCountKey, i64>, Self::Error> {
        let mut out: HashMap<PageCountKey, i64> = keys.iter().map(|k| (*k, 0)).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter), group) in
            group_by(keys, |k| (std::mem::discriminant(&k.parent), k.filter))
        {
            let parent = group[0].parent;
            let ids: Vec<Uuid> = group.iter().map(|k| k.parent.id()).collect();
            for (parent_id, n) in repo::count_for_parents(&mut conn, parent, &ids, &filter).await? {
                let key = PageCountKey {
                    parent: parent.with_id(parent_id),
                    filter,
                };
                out.insert(key, n);
            }
        }
        Ok(out)
    }
}
