//! The async job queue: workers claim jobs under a lease, report progress, and finish them; a
//! `crawl` job drives the lifecycle of its session. Expired leases are reaped on every replica.

pub mod model;
pub mod reaper;
pub mod repo;
