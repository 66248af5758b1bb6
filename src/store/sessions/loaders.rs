use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::model::SessionRow;
use super::repo;
use crate::store::batch::{Fetch, Reader};

/// Key of a session looked up by id (`Page.session`, `Bug.session`, `session(id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub Uuid);

impl Fetch<SessionId> for Reader {
    type Value = Arc<SessionRow>;

    async fn fetch(
        &self,
        keys: &[SessionId],
    ) -> crate::error::AppResult<HashMap<SessionId, Arc<SessionRow>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let rows = repo::visible_by_ids(&mut conn, &self.scope, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (SessionId(r.id), Arc::new(r)))
            .collect())
    }
}
