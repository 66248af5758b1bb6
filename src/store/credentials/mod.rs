//! A crawl session's credentials for the crawled site: sealed at rest under the gateway's key,
//! never read back except for the worker that claims the session's crawl job.

pub mod cipher;
pub mod keys;
pub mod repo;
