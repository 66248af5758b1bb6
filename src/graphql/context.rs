//! Per-request state: the request's database handle and its one batching DataLoader.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Context;
use async_graphql::dataloader::DataLoader;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::auth::{Actor, Scope};
use crate::db::{Conn, Db};
use crate::error::{AppError, AppResult};

/// Implements `Loader<K>` once per key type, in each domain module. DataLoader keeps a separate
/// batch per key type, so one instance serves every relation of a request.
pub struct BatchLoader {
    pub db: Db,
    /// What the caller may see: every loader filters by it.
    pub scope: Scope,
}

/// Fetch tasks of a request's loader, run by the request's own future (see [`RequestCtx::new`]).
pub type FetchQueue = futures_util::stream::BoxStream<'static, BoxFuture<'static, ()>>;

pub struct RequestCtx {
    pub db: Db,
    pub loader: DataLoader<BatchLoader>,
    pub actor: Actor,
    /// Whether resolvers may hand up pre-rendered JSON (`Value::Binary`, see `graphql::fast`):
    /// only when the response is written by `graphql::json`, as `graphql::execute`'s is.
    pub raw_json: bool,
}

impl RequestCtx {
    /// A fresh context for one request, plus the queue of its batch fetches.
    ///
    /// Fetches are not spawned on the runtime: the caller polls them after each poll of the
    /// executing query (see `graphql::execute`). All sibling resolvers of a level register their
    /// keys within one poll of the query, so a level always becomes exactly one batch, however
    /// slow the machine, instead of racing a timer.
    pub fn new(db: Db, actor: Actor) -> (Self, FetchQueue) {
        let (tx, rx) = futures::channel::mpsc::unbounded::<BoxFuture<'static, ()>>();
        let batch = BatchLoader {
            db: db.clone(),
            scope: actor.scope(),
        };
        let loader = DataLoader::new(batch, move |fut| {
            // The receiver lives as long as the request; a send can only fail after it ended.
            let _ = tx.unbounded_send(fut);
        })
        .delay(Duration::ZERO)
        .max_batch_size(usize::MAX);
        (
            RequestCtx {
                db,
                loader,
                actor,
                raw_json: true,
            },
            Box::pin(rx),
        )
    }
}

impl RequestCtx {
    /// A context for a long-lived connection (WebSocket), whose operations are not driven by
    /// [`crate::graphql::execute`]: batch fetches run as tasks after a short delay, the
    /// DataLoader's usual mode.
    pub fn spawning(db: Db, actor: Actor) -> Self {
        let batch = BatchLoader {
            db: db.clone(),
            scope: actor.scope(),
        };
        let loader = DataLoader::new(batch, tokio::spawn)
            .delay(Duration::from_millis(1))
            .max_batch_size(usize::MAX);
        // async-graphql serializes WebSocket responses itself.
        RequestCtx {
            db,
            loader,
            actor,
            raw_json: false,
        }
    }
}

/// The request context of a resolver.
pub fn req<'a>(ctx: &Context<'a>) -> AppResult<&'a RequestCtx> {
    ctx.data::<RequestCtx>()
        .map_err(|_| AppError::internal("request context missing"))
}

/// Splits keys into groups that can share one statement: same parent kind and same arguments.
pub fn group_by<K: Copy, G: PartialEq>(keys: &[K], sig: impl Fn(&K) -> G) -> Vec<(G, Vec<K>)> {
    let mut groups: Vec<(G, Vec<K>)> = Vec::new();
    for k in keys {
        let s = sig(k);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, v)) => v.push(*k),
            None => groups.push((s, vec![*k])),
        }
    }
    groups
}

/// Sorts streamed `(parent id, row)` pairs into the lists of a loader's answer, which holds an
/// entry for every requested key; rows of keys that were not requested are dropped.
///
/// LATERAL lists return rows parent by parent, so a key is hashed once per run of rows rather
/// than once per row (hashing was 5% of the Q1 profile). Rows arrive from a stream, so no
/// statement-sized buffer of decoded rows is ever built.
pub struct Runs<'m, K, T, F> {
    out: &'m mut HashMap<K, Vec<Arc<T>>>,
    key: F,
    current: Option<(Uuid, Vec<Arc<T>>)>,
}

impl<'m, K: Eq + Hash, T, F: Fn(Uuid) -> K> Runs<'m, K, T, F> {
    pub fn new(out: &'m mut HashMap<K, Vec<Arc<T>>>, key: F) -> Self {
        Runs {
            out,
            key,
            current: None,
        }
    }

    pub fn push(&mut self, parent: Uuid, row: T) {
        match &mut self.current {
            Some((p, run)) if *p == parent => run.push(Arc::new(row)),
            _ => {
                if let Some((p, run)) = self.current.replace((parent, vec![Arc::new(row)])) {
                    self.flush(p, run);
                }
            }
        }
    }

    /// Stores the last run.
    pub fn finish(mut self) {
        if let Some((p, run)) = self.current.take() {
            self.flush(p, run);
        }
    }

    fn flush(&mut self, parent: Uuid, run: Vec<Arc<T>>) {
        if let Some(list) = self.out.get_mut(&(self.key)(parent)) {
            if list.is_empty() {
                *list = run;
            } else {
                list.extend(run);
            }
        }
    }
}

/// Runs a write path on its own task with a connection of the request's database handle, so a
/// client that disconnects cannot cancel it halfway (see [`crate::db::run_detached`]).
pub async fn detached<T, F, Fut>(ctx: &Context<'_>, f: F) -> AppResult<T>
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = AppResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let db = req(ctx)?.db.clone();
    crate::db::run_detached(async move { f(db.conn().await?).await }).await
}
