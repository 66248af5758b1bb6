//! bughive-gateway: a GraphQL gateway over PostgreSQL for autonomous-QA data.
//!
//! One direction through the code: `http` (the axum edge) → `api` (GraphQL) → `live` (the
//! change hub) and `auth` (who is calling) → `store` (everything that speaks SQL) → `error` and
//! `config`. The README's architecture section draws it; `.ci/check-layers` enforces it.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod live;
pub mod memory;
pub mod seed;
pub mod store;
pub mod telemetry;
