//! Pages found by a crawl session, linked into a navigation tree by `parent_page_id`.

pub mod loaders;
pub mod model;
pub mod repo;
pub mod url;
