//! Finding bugs: ranked full-text search over the generated `bugs.search` vector, and
//! near-duplicates by trigram similarity of titles (and page URLs) within a site or project.

pub mod keys;
pub mod repo;
