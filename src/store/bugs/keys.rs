//! The keys of batched bug reads: a parent's list (through the one child-list loader,
//! `store::batch`) with its filter, and a session's statistics.

use std::collections::HashMap;

use diesel::Column;
use uuid::Uuid;

use super::model::{BugCategory, BugPriority, BugRow, BugStats, BugStatus};
use super::repo;
use crate::error::{AppError, AppResult};
use crate::store::batch::{Fetch, Filter, Reader, parents};
use crate::store::enums::DbEnum;
use crate::store::schema::bugs;
use crate::store::sql::{Bind, Sql};

parents!(
    /// Whose bugs a list holds: a whole session's or one page's.
    BugParent of bugs as BugRow, filtered by BugFilterKey {
        Session => session_id,
        Page => page_id,
    }
);

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

impl Filter for BugFilterKey {
    fn push(&self, q: &mut Sql) {
        fn any<T: DbEnum>(q: &mut Sql, col: &str, mask: Mask, all: &[T]) {
            if mask.is_empty() {
                return;
            }
            let values = mask
                .values(all)
                .iter()
                .map(|v| v.db_name().into())
                .collect();
            q.push(" AND ")
                .push(col)
                .push(" = ANY(")
                .bind(Bind::Texts(values))
                .push(")");
        }
        any(q, bugs::status::NAME, self.status, BugStatus::ALL);
        any(q, bugs::priority::NAME, self.priority, BugPriority::ALL);
        any(q, bugs::category::NAME, self.category, BugCategory::ALL);
        if let Some(bits) = self.min_confidence {
            q.push(" AND confidence >= ")
                .bind(Bind::Float(f64::from_bits(bits)));
        }
    }
}

/// Key of a session's bug statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BugStatsKey(pub Uuid);

impl Fetch<BugStatsKey> for Reader {
    type Value = BugStats;

    async fn fetch(&self, keys: &[BugStatsKey]) -> AppResult<HashMap<BugStatsKey, BugStats>> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let mut conn = self.db.conn().await?;
        let mut stats = repo::stats_for_sessions(&mut conn, &ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (BugStatsKey(id), stats.remove(&id).unwrap_or_default()))
            .collect())
    }
}
