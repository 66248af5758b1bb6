//! Users provisioned from the identity provider, their roles, and projects (whose sessions their
//! owners may see and change).

pub mod model;
pub mod repo;
