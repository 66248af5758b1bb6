use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::model::SessionRow;
use super::repo;
use crate::error::AppError;
use crate::graphql::context::BatchLoader;

/// Key of a session looked up by id (`Page.session`, `Bug.session`, `session(id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub Uuid);

impl Loader<SessionId> for BatchLoader {
    type Value = Arc<SessionRow>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[SessionId],
    ) -> Result<HashMap<SessionId, Arc<SessionRow>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::visible_by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (SessionId(r.id), Arc::new(r)))
            .collect())
    }
}
