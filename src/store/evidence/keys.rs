//! Evidence lists through the one child-list loader; credibility and links as one statement
//! per level.

use std::collections::HashMap;

use uuid::Uuid;

use super::model::{EvidenceLinkKind, EvidenceRow};
use super::repo;
use crate::error::AppResult;
use crate::store::batch::{Fetch, Filter, Reader, parents};
use crate::store::sql::{Bind, Sql};

parents!(
    /// Whose evidence a list holds: a bug's, or an agent execution's.
    EvidenceParent of evidence as EvidenceRow, filtered by EvidenceFilter {
        Bug => bug_id,
        Execution => execution_id,
    }
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EvidenceFilter {
    pub verified: Option<bool>,
}

impl Filter for EvidenceFilter {
    fn push(&self, q: &mut Sql) {
        if let Some(v) = self.verified {
            q.push(" AND is_verified = ").bind(Bind::Bool(v));
        }
    }
}

/// A bug's credibility (`None` without evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredibilityKey(pub Uuid);

impl Fetch<CredibilityKey> for Reader {
    type Value = Option<f64>;

    async fn fetch(
        &self,
        keys: &[CredibilityKey],
    ) -> AppResult<HashMap<CredibilityKey, Option<f64>>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let found = repo::credibility(&mut conn, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (CredibilityKey(id), found.get(&id).copied()))
            .collect())
    }
}

/// The evidence ids one piece of evidence links to, of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinksKey(pub Uuid, pub EvidenceLinkKind);

impl Fetch<LinksKey> for Reader {
    type Value = std::sync::Arc<[Uuid]>;

    async fn fetch(&self, keys: &[LinksKey]) -> AppResult<HashMap<LinksKey, Self::Value>> {
        let mut ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = self.db.conn().await?;
        let mut found = repo::links(&mut conn, &ids).await?;
        Ok(keys
            .iter()
            .map(|k| {
                let list = found.remove(&(k.0, k.1)).unwrap_or_default();
                (*k, std::sync::Arc::from(list))
            })
            .collect())
    }
}
