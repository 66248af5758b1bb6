//! bughive-gateway: a GraphQL gateway over PostgreSQL for autonomous-QA data.
//!
//! Layout: one module per domain (`sessions`, `pages`, `bugs`, `jobs`, `users`, `audit`), each
//! with its diesel `model`, its queries (`repo`), its batch `loaders` and its GraphQL types
//! (`graphql`); shared plumbing lives in `db`, `graphql` and `http`; `live` fans committed
//! changes out to subscriptions; `auth` turns tokens into callers and scopes what they see.

pub mod app;
pub mod audit;
pub mod auth;
pub mod bugs;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod http;
pub mod jobs;
pub mod live;
pub mod memory;
pub mod pages;
pub mod seed;
pub mod sessions;
pub mod users;
