use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::model::JobRow;
use super::repo;
use crate::error::AppError;
use crate::graphql::context::BatchLoader;

/// Key of a job looked up by id (`job(id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub Uuid);

impl Loader<JobId> for BatchLoader {
    type Value = Arc<JobRow>;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[JobId]) -> Result<HashMap<JobId, Arc<JobRow>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::visible_by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (JobId(r.id), Arc::new(r)))
            .collect())
    }
}
