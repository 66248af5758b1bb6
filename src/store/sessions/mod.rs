//! Crawl sessions: the root of the crawl → pages → bugs graph.

pub mod model;
pub mod repo;
