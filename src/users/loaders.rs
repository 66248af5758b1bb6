use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::model::{ProjectRow, UserRow};
use super::repo;
use crate::error::AppError;
use crate::graphql::context::BatchLoader;

/// Key of a user looked up by id (session and project owners, audit actors, `me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

/// Key of a project looked up by id (`CrawlSession.project`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectId(pub Uuid);

impl Loader<UserId> for BatchLoader {
    type Value = Arc<UserRow>;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[UserId]) -> Result<HashMap<UserId, Arc<UserRow>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::by_ids(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (UserId(r.id), Arc::new(r)))
            .collect())
    }
}

impl Loader<ProjectId> for BatchLoader {
    type Value = Arc<ProjectRow>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[ProjectId],
    ) -> Result<HashMap<ProjectId, Arc<ProjectRow>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::projects_by_ids(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (ProjectId(r.id), Arc::new(r)))
            .collect())
    }
}
