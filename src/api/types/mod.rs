//! The GraphQL types of each entity, one file each. Entities refer to one another (a page's
//! session, a session's pages), as in any GraphQL schema; nothing below `api` refers to them.

pub mod agent;
pub mod audit;
pub mod bug;
pub mod comment;
pub mod event;
pub mod evidence;
pub mod job;
pub mod page;
pub mod search;
pub mod session;
pub mod trends;
pub mod user;
