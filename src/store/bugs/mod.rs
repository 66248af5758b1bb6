//! Bugs found on pages: evidence, confidence, lifecycle, and per-session statistics.

pub mod evidence;
pub mod keys;
pub mod model;
pub mod repo;
