//! The immutable audit log: one row per mutation, written in the mutation's own transaction.

pub mod model;
pub mod repo;
