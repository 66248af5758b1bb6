//! GraphQL: the types clients see (`types`, rooted in `schema`), the entity-agnostic engine that
//! runs requests (`exec`), and what they share (`context`, `connection`, `scalars`, `errors`).
//! Reads go through the store's batched readers; writes through its repositories.

pub mod connection;
pub mod context;
pub mod errors;
pub mod exec;
pub mod scalars;
pub mod schema;
pub mod types;

pub use exec::{Limits, execute};
pub use schema::{AppSchema, build_schema, build_schema_with, sdl};
