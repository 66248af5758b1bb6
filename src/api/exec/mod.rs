//! The entity-agnostic engine: request execution shared by HTTP, WebSocket and tests, the
//! guard that bounds what a document may cost, the fast path for long lists, and the JSON
//! writer. It names no entity: `api::schema` hands it the root types.

pub mod fast;
pub mod input;
pub mod json;
pub mod limits;
mod order;
pub mod shared;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use async_graphql::{ObjectType, Schema, SubscriptionType};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use crate::api::context::RequestCtx;
use crate::auth::Actor;
use crate::store::{Db, QueryStats};
pub use limits::Limits;

/// A schema twice: without extensions for HTTP, where `execute` applies the guard itself, and
/// with the guard extension for WebSocket operations. An async-graphql extension adds a hook to
/// the resolution of every field, which cost the read path about 5% of its CPU.
pub struct Engine<Q, M, S> {
    pub http: Schema<Q, M, S>,
    pub ws: Schema<Q, M, S>,
    pub guard: limits::Guard,
    /// Subscription executions shared by identical subscribers (WebSocket).
    pub shared: Arc<shared::Shared>,
}

// Derived `Clone` would require the root types to be `Clone`; the schemas are shared handles.
impl<Q, M, S> Clone for Engine<Q, M, S> {
    fn clone(&self) -> Self {
        Engine {
            http: self.http.clone(),
            ws: self.ws.clone(),
            guard: self.guard.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<Q, M, S> Engine<Q, M, S>
where
    Q: ObjectType + Default + 'static,
    M: ObjectType + Default + 'static,
    S: SubscriptionType + Default + 'static,
{
    /// Builds both schemas with a deployment's limits; `shared` names the subscription root
    /// fields whose executions identical subscribers may share (see [`shared`]).
    pub fn build(limits: &Limits, shared: &'static [&'static str]) -> Self {
        let guard = limits::Guard::new(limits);
        let build = |guarded: bool| {
            let mut builder = Schema::build(Q::default(), M::default(), S::default())
                // Depth is the guard's (`Guard::check`), which leaves introspection to its own
                // limits; async-graphql's would refuse the standard introspection query.
                .limit_complexity(limits.max_complexity);
            if guarded {
                builder = builder.extension(guard.clone());
            }
            if !limits.introspection {
                builder = builder.disable_introspection();
            }
            builder.finish()
        };
        Engine {
            http: build(false),
            ws: build(true),
            guard,
            shared: Arc::new(shared::Shared::new(shared)),
        }
    }

    pub fn sdl(&self) -> String {
        self.http.sdl()
    }
}

/// Executes one request with a fresh request context and reports how many SQL statements it
/// issued. The response may hold pre-rendered JSON fragments: write it with
/// [`json::Response::to_json`].
///
/// The request's batch fetches run inside this future, polled right after the query itself, so
/// a whole level of sibling resolvers always lands in one batch (see [`RequestCtx::new`]).
pub async fn execute<Q, M, S>(
    schema: &Engine<Q, M, S>,
    db: &Db,
    actor: Actor,
    request: async_graphql::Request,
) -> (json::Response, Arc<QueryStats>)
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let mut request = request;
    let refuse = |e: async_graphql::ServerError| {
        (
            json::Response(async_graphql::Response::from_errors(vec![e])),
            Arc::default(),
        )
    };
    // Nothing recursive may touch the text before it is scanned.
    if let Err(refused) = schema.guard.scan(&request.query) {
        return refuse(refused);
    }
    // Parsed here (execute reuses it) and kept to restore the selection order afterwards.
    let doc = request.parsed_query().ok().cloned();
    if let Some(doc) = &doc
        && let Err(refused) = schema.guard.check(doc, &request.variables)
    {
        return refuse(refused);
    }
    let operation_name = request.operation_name.clone();
    let db = db.scoped();
    let stats = db.stats().clone();
    let (ctx, queue) = RequestCtx::new(db, actor);
    let mut response = Batched {
        exec: Box::pin(schema.http.execute(request.data(ctx))),
        fetches: Box::pin(queue.for_each_concurrent(None, |fetch| fetch)),
        fetches_done: false,
    }
    .await;
    if let Some(doc) = &doc
        && response.data != async_graphql::Value::Null
    {
        order::restore(doc, operation_name.as_deref(), &mut response.data);
    }
    (json::Response(limits::with_codes(response)), stats)
}

/// The operation a request runs: the one named, or the document's only one.
pub fn operation<'a>(
    doc: &'a async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a async_graphql::parser::types::OperationDefinition> {
    use async_graphql::parser::types::DocumentOperations;
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Whether a response is that of a request that never executed (unparsable, invalid, refused by
/// a limit): no data, and errors without a path. A field error that nulls the whole result has
/// a path, and keeps `data: null`.
pub fn is_request_error(r: &async_graphql::Response) -> bool {
    r.data == async_graphql::Value::Null
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| e.path.is_empty())
}

/// Drives a query and its batch fetches in one task, fetching only when the query is idle.
///
/// async-graphql resolves large lists through `FuturesUnordered`, which polls at most 32 futures
/// and then yields by waking itself. A fetch that ran at that point would see only part of a
/// level's keys. So after each poll of the query we check whether it woke itself: if it did, it
/// still has resolvers to run and we poll it again before any fetch; only once every resolver
/// waits on a loader do the fetches run, each with all the keys of its level.
struct Batched<'a, T> {
    exec: BoxFuture<'a, T>,
    fetches: BoxFuture<'static, ()>,
    fetches_done: bool,
}

struct FlagWaker {
    woken: AtomicBool,
    outer: Waker,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake_by_ref();
    }
}

impl<T> Future for Batched<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let flag = Arc::new(FlagWaker {
            woken: AtomicBool::new(false),
            outer: cx.waker().clone(),
        });
        let waker = Waker::from(flag.clone());
        if let Poll::Ready(out) = self.exec.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Poll::Ready(out);
        }
        // Woken during its own poll: runnable work remains (the outer waker was already woken).
        if flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // The queue only ends once the request context is dropped, i.e. after execution.
        if !self.fetches_done && self.fetches.as_mut().poll(cx).is_ready() {
            self.fetches_done = true;
        }
        Poll::Pending
    }
}
