use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::model::{ProjectRow, UserRow};
use super::repo;
use crate::store::batch::{Fetch, Reader};

/// Key of a user looked up by id (session and project owners, audit actors, `me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

/// Key of a project looked up by id (`CrawlSession.project`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectId(pub Uuid);

impl Fetch<UserId> for Reader {
    type Value = Arc<UserRow>;

    async fn fetch(
        &self,
        keys: &[UserId],
    ) -> crate::error::AppResult<HashMap<UserId, Arc<UserRow>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::by_ids(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (UserId(r.id), Arc::new(r)))
            .collect())
    }
}

impl Fetch<ProjectId> for Reader {
    type Value = Arc<ProjectRow>;

    async fn fetch(
        &self,
        keys: &[ProjectId],
    ) -> crate::error::AppResult<HashMap<ProjectId, Arc<ProjectRow>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::projects_by_ids(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (ProjectId(r.id), Arc::new(r)))
            .collect())
    }
}
