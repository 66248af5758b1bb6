//! `CrawlSession.hasCredentials` for every session of a level in one statement.

use std::collections::HashMap;

use uuid::Uuid;

use super::repo;
use crate::error::AppResult;
use crate::store::batch::{Fetch, Reader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HasCredentialsKey(pub Uuid);

impl Fetch<HasCredentialsKey> for Reader {
    type Value = bool;

    async fn fetch(
        &self,
        keys: &[HasCredentialsKey],
    ) -> AppResult<HashMap<HasCredentialsKey, bool>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let present = repo::present(&mut conn, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (HasCredentialsKey(id), present.contains(&id)))
            .collect())
    }
}
