//! Comments on bugs by users and agents: newest first, edited by their author only, deleted
//! softly.

pub mod keys;
pub mod model;
pub mod repo;
