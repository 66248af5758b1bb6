//! AI agents and their executions (seed 003): the registry, the execution lifecycle with exact
//! token cost charged to the session, and per-agent and per-session usage.

pub mod keys;
pub mod model;
pub mod reaper;
pub mod repo;
