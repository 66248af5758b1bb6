//! `Bug.similar` and `Bug.duplicateCandidates` for every bug of a level in one statement.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::repo::{self, SimilarArgs};
use crate::error::AppResult;
use crate::store::batch::{Fetch, Reader, group_by};
use crate::store::bugs::model::BugRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimilarKey {
    pub bug: Uuid,
    pub args: SimilarArgs,
}

/// A similar bug and its score.
#[derive(Debug, Clone)]
pub struct SimilarHit {
    pub score: f64,
    pub bug: Arc<BugRow>,
}

impl Fetch<SimilarKey> for Reader {
    type Value = Arc<[SimilarHit]>;

    async fn fetch(&self, keys: &[SimilarKey]) -> AppResult<HashMap<SimilarKey, Self::Value>> {
        let mut lists: HashMap<SimilarKey, Vec<SimilarHit>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        let mut conn = self.db.conn().await?;
        for (args, group) in group_by(keys, |k| k.args) {
            let ids: Vec<Uuid> = group.iter().map(|k| k.bug).collect();
            for s in repo::similar(&mut conn, &self.scope, &ids, args).await? {
                if let Some(list) = lists.get_mut(&SimilarKey { bug: s.of, args }) {
                    list.push(SimilarHit {
                        score: s.score,
                        bug: Arc::new(s.bug),
                    });
                }
            }
        }
        Ok(lists.into_iter().map(|(k, v)| (k, Arc::from(v))).collect())
    }
}
