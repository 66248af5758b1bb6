//! The evidence registry: evidence rows of bugs with credibility, verification and links.

pub mod keys;
pub mod model;
pub mod repo;
