//! Schema assembly and request execution shared by HTTP, WebSocket and tests.

pub mod connection;
pub mod context;
pub mod scalars;

use std::sync::Arc;

use async_graphql::{EmptyMutation, EmptySubscription, MergedObject, Schema};
use futures_util::StreamExt;
use futures_util::future::{Either, select};

use crate::bugs::graphql::BugsQuery;
use crate::db::{Db, QueryStats};
use crate::pages::graphql::PagesQuery;
use crate::sessions::graphql::SessionsQuery;
use context::RequestCtx;

#[derive(MergedObject, Default)]
pub struct Query(SessionsQuery, PagesQuery, BugsQuery);

pub type AppSchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub fn build_schema() -> AppSchema {
    Schema::build(Query::default(), EmptyMutation, EmptySubscription).finish()
}

/// The SDL that `schema.graphql` must equal.
pub fn sdl() -> String {
    build_schema().sdl()
}

/// Executes one request with a fresh request context and reports how many SQL statements it
/// issued.
///
/// The request's batch fetches run inside this future, polled right after the query itself, so
/// a whole level of sibling resolvers always lands in one batch (see [`RequestCtx::new`]).
pub async fn execute(
    schema: &AppSchema,
    db: &Db,
    request: async_graphql::Request,
) -> (async_graphql::Response, Arc<QueryStats>) {
    let db = db.scoped();
    let stats = db.stats().clone();
    let (ctx, queue) = RequestCtx::new(db);
    let exec = std::pin::pin!(schema.execute(request.data(ctx)));
    let driver = std::pin::pin!(queue.for_each_concurrent(None, |fetch| fetch));
    let mut response = match select(exec, driver).await {
        Either::Left((response, _)) => response,
        // The queue only ends once the context is dropped, i.e. after execution finished.
        Either::Right(((), exec)) => exec.await,
    };
    add_missing_codes(&mut response);
    (response, stats)
}

/// Errors raised by async-graphql itself (syntax, validation, argument coercion) carry no code;
/// they are all the client's fault, so they get `BAD_USER_INPUT`.
fn add_missing_codes(response: &mut async_graphql::Response) {
    for err in &mut response.errors {
        let ext = err.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", "BAD_USER_INPUT");
        }
    }
}
