//! Trends across sessions: daily rollups (materialized views) refreshed concurrently on a
//! schedule, read per day or week.

pub mod refresher;
pub mod repo;
