use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::model::JobRow;
use super::repo;
use crate::store::batch::{Fetch, Reader};

/// Key of a job looked up by id (`job(id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub Uuid);

impl Fetch<JobId> for Reader {
    type Value = Arc<JobRow>;

    async fn fetch(&self, keys: &[JobId]) -> crate::error::AppResult<HashMap<JobId, Arc<JobRow>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::visible_by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (JobId(r.id), Arc::new(r)))
            .collect())
    }
}
