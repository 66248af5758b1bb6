//! Pages found by a crawl session, linked into a navigation tree by `parent_page_id`.

pub mod keys;
pub mod model;
pub mod repo;
pub mod url;
