//! Per-request state: the caller, the request's database handle and its one batching
//! DataLoader, which adapts every batched read of the store (`store::batch::Fetch`) in one
//! generic impl.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Context;
use async_graphql::dataloader::{DataLoader, Loader};
use futures_util::future::BoxFuture;

use crate::auth::{Actor, Perm, Principal};
use crate::error::{AppError, AppResult};
use crate::live::Live;
use crate::store::batch::{Fetch, Reader};
use crate::store::scope::Author;
use crate::store::{Conn, Db};

/// The request's DataLoader source. DataLoader keeps a separate batch per key type, so one
/// instance serves every relation of a request; errors are shared (`Arc`) by every resolver
/// waiting on the same batch.
pub struct BatchLoader(Reader);

impl<K> Loader<K> for BatchLoader
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    Reader: Fetch<K>,
{
    type Value = <Reader as Fetch<K>>::Value;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[K]) -> Result<HashMap<K, Self::Value>, Self::Error> {
        self.0.fetch(keys).await.map_err(Arc::new)
    }
}

/// Fetch tasks of a request's loader, run by the request's own future (see [`RequestCtx::new`]).
pub type FetchQueue = futures_util::stream::BoxStream<'static, BoxFuture<'static, ()>>;

pub struct RequestCtx {
    pub db: Db,
    pub loader: DataLoader<BatchLoader>,
    pub actor: Actor,
    /// Whether resolvers may hand up pre-rendered JSON (`Value::Binary`, see `exec::fast`):
    /// only when the response is written by `exec::json`, as `exec::execute`'s is.
    pub raw_json: bool,
}

impl RequestCtx {
    /// A fresh context for one request, plus the queue of its batch fetches.
    ///
    /// Fetches are not spawned on the runtime: the caller polls them after each poll of the
    /// executing query (see `exec::execute`). All sibling resolvers of a level register their
    /// keys within one poll of the query, so a level always becomes exactly one batch, however
    /// slow the machine, instead of racing a timer.
    pub fn new(db: Db, actor: Actor) -> (Self, FetchQueue) {
        let (tx, rx) = futures::channel::mpsc::unbounded::<BoxFuture<'static, ()>>();
        let batch = BatchLoader(Reader {
            db: db.clone(),
            scope: actor.scope(),
        });
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

    /// A context for a long-lived connection (WebSocket), whose operations are not driven by
    /// `exec::execute`: batch fetches run as tasks after a short delay, the DataLoader's usual
    /// mode.
    pub fn spawning(db: Db, actor: Actor) -> Self {
        let batch = BatchLoader(Reader {
            db: db.clone(),
            scope: actor.scope(),
        });
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

/// The caller of the current request.
pub fn principal<'a>(ctx: &Context<'a>) -> AppResult<&'a Principal> {
    Ok(&req(ctx)?.actor.principal)
}

/// The caller, checked for `perm`, as the store records the change it makes.
pub fn actor(ctx: &Context<'_>, perm: Perm) -> AppResult<Author> {
    let actor = &req(ctx)?.actor;
    actor.principal.require(perm)?;
    Ok(actor.author())
}

/// The `Live` hub of a subscription resolver.
pub fn live<'a>(ctx: &Context<'a>) -> AppResult<&'a Live> {
    ctx.data::<Live>()
        .map_err(|_| AppError::internal("live updates are not configured"))
}

/// Runs a write path on its own task with a connection of the request's database handle, so a
/// client that disconnects cannot cancel it halfway (see [`crate::store::run_detached`]).
pub async fn detached<T, F, Fut>(ctx: &Context<'_>, f: F) -> AppResult<T>
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = AppResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let db = req(ctx)?.db.clone();
    crate::store::run_detached(async move { f(db.conn().await?).await }).await
}

/// Where a transport resumes a stream from, when it knows better than the operation's `after`
/// argument: Server-Sent Events' `Last-Event-ID` on a browser's reconnect.
#[derive(Debug, Clone)]
pub struct ResumeFrom(pub String);

/// Present in the data of a subscription whose execution is shared by several subscribers
/// (`exec::shared`). A resolver that supports sharing registers how to get the current state
/// published again (for each subscriber that joins later) and marks each item that repeats the
/// state before it, which only subscribers still waiting for their first message receive.
#[derive(Clone, Default)]
pub struct ShareSlot(Arc<ShareState>);

#[derive(Default)]
struct ShareState {
    refresh: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    repeat: std::sync::atomic::AtomicBool,
}

impl ShareSlot {
    /// The slot of a shared execution, with `refresh` registered as what a joiner triggers;
    /// `None` when the subscription runs for one subscriber.
    pub fn of(ctx: &Context<'_>, refresh: impl Fn() + Send + Sync + 'static) -> Option<ShareSlot> {
        let slot = ctx.data_opt::<ShareSlot>()?.clone();
        slot.on_join(refresh);
        Some(slot)
    }

    /// Called by the resolver before it starts watching, so no joiner can miss both the first
    /// state and the refresh.
    fn on_join(&self, refresh: impl Fn() + Send + Sync + 'static) {
        *self.0.refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(refresh));
    }

    /// A subscriber joined: publish the current state again, if the resolver is watching yet.
    pub fn joined(&self) {
        let refresh = self
            .0
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(refresh) = refresh {
            refresh();
        }
    }

    pub fn set_repeat(&self, repeat: bool) {
        self.0
            .repeat
            .store(repeat, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the item just resolved repeats the state before it.
    pub fn take_repeat(&self) -> bool {
        self.0
            .repeat
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Where the cursor of each message goes for the transport to use (SSE's `id:` field).
#[derive(Debug, Clone, Default)]
pub struct CursorSlot(pub Arc<Mutex<Option<String>>>);

impl CursorSlot {
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn set(&self, cursor: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(cursor);
    }
}
