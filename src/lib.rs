//! bughive-gateway: a GraphQL gateway over PostgreSQL for autonomous-QA data.
//!
//! Layout: one module per domain (`sessions`, `pages`, `bugs`), each with its diesel `model`,
//! its queries (`repo`), its batch `loaders` and its GraphQL types (`graphql`); shared plumbing
//! lives in `db`, `graphql` and `http`.

pub mod app;
pub mod bugs;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod http;
pub mod pages;
pub mod seed;
pub mod sessions;
