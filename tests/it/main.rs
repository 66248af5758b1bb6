//! Integration tests against a real PostgreSQL (see `harness`). One binary, so one cluster per run.

mod harness;

mod access;
mod agents;
mod atomicity;
mod audit;
mod bench;
mod cli;
mod clients;
mod comments;
mod credentials;
mod embedded;
mod errors;
mod events;
mod evidence;
mod hardening;
mod http;
mod jobs;
mod limits;
mod live;
mod metrics;
mod migrations;
mod mutations;
mod persisted;
mod races;
mod reads;
mod replicas;
mod schema_files;
mod search;
mod shared_rate;
mod tls;
mod traces;
mod trends;
