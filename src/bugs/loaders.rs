use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::model::{BugCategory, BugPriority, BugRow, BugStats, BugStatus};
use super::repo;
use crate::error::{AppError, AppResult};
use crate::graphql::connection::Window;
use crate::graphql::context::{BatchLoader, Runs, group_by};

/// Whose bugs a list holds: a whole session's or one page's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BugParent {
    Session(Uuid),
    Page(Uuid),
}

impl BugParent {
    pub fn id(&self) -> Uuid {
        match self {
            BugParent::Session(id) | BugParent::Page(id) => *id,
        }
    }

    pub fn column(&self) -> &'static str {
        match self {
            BugParent::Session(_) => "session_id",
            BugParent::Page(_) => "page_id",
        }
    }

    pub fn with_id(self, id: Uuid) -> Self {
        match self {
            BugParent::Session(_) => BugParent::Session(id),
            BugParent::Page(_) => BugParent::Page(id),
        }
    }
}

/// A set of enum values as a bit mask, so filters are `Copy` and hashable loader keys.
/// An empty mask means "no filter".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Mask(pub u16);

impl Mask {
    pub fn of<T: Copy + PartialEq>(all: &[T], chosen: &[T]) -> Self {
        Mask(
            all.iter()
                .enumerate()
                .filter(|(_, v)| chosen.contains(v))
                .fold(0, |m, (i, _)| m | (1 << i)),
        )
    }

    pub fn values<T: Copy>(&self, all: &[T]) -> Vec<T> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, v)| *v)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// Validated `BugFilter` as a loader key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BugFilterKey {
    pub status: Mask,
    pub priority: Mask,
    pub category: Mask,
    /// `f64::to_bits` of `minConfidence`, since floats are not `Hash`.
    pub min_confidence: Option<u64>,
}

impl BugFilterKey {
    pub fn new(
        status: &[BugStatus],
        priority: &[BugPriority],
        category: &[BugCategory],
        min_confidence: Option<f64>,
    ) -> AppResult<Self> {
        if let Some(c) = min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(AppError::bad_field(
                "minConfidence",
                "minConfidence must be between 0 and 1",
            ));
        }
        Ok(BugFilterKey {
            status: Mask::of(BugStatus::ALL, status),
            priority: Mask::of(BugPriority::ALL, priority),
            category: Mask::of(BugCategory::ALL, category),
            min_confidence: min_confidence.map(f64::to_bits),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BugListKey {
    pub parent: BugParent,
    pub filter: BugFilterKey,
    pub window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BugCountKey {
    pub parent: BugParent,
    pub filter: BugFilterKey,
}

/// Key of a session's bug statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BugStatsKey(pub Uuid);

impl Loader<BugListKey> for BatchLoader {
    type Value = Vec<Arc<BugRow>>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[BugListKey],
    ) -> Result<HashMap<BugListKey, Vec<Arc<BugRow>>>, Self::Error> {
        let mut out: HashMap<BugListKey, Vec<Arc<BugRow>>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter, window), group) in group_by(keys, |k| {
            (std::mem::discriminant(&k.parent), k.filter, k.window)
        }) {
            let parent = group[0].parent;
            let ids: Vec<Uuid> = group.iter().map(|k| k.parent.id()).collect();
            let mut runs = Runs::new(&mut out, |id| BugListKey {
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

impl Loader<BugCountKey> for BatchLoader {
    type Value = i64;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[BugCountKey]) -> Result<HashMap<BugCountKey, i64>, Self::Error> {
        let mut out: HashMap<BugCountKey, i64> = keys.iter().map(|k| (*k, 0)).collect();
        let mut conn = self.db.conn().await?;
        for ((_, filter), group) in
            group_by(keys, |k| (std::mem::discriminant(&k.parent), k.filter))
        {
            let parent = group[0].parent;
            let ids: Vec<Uuid> = group.iter().map(|k| k.parent.id()).collect();
            for (parent_id, n) in repo::count_for_parents(&mut conn, parent, &ids, &filter).await? {
                out.insert(
                    BugCountKey {
                        parent: parent.with_id(parent_id),
                        filter,
                    },
                    n,
                );
            }
        }
        Ok(out)
    }
}

impl Loader<BugStatsKey> for BatchLoader {
    type Value = BugStats;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[BugStatsKey],
    ) -> Result<HashMap<BugStatsKey, BugStats>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let mut stats = repo::stats_for_sessions(&mut conn, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (BugStatsKey(id), stats.remove(&id).unwrap_or_default()))
            .collect())
    }
}
