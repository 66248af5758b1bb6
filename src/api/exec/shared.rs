//! Shared subscription executions: subscribers on this replica whose operation, variables and
//! caller are the same share one execution, and each message is serialized once; every socket
//! then gets the same bytes. With thousands of dashboards on one session, a change costs one
//! resolution and one serialization instead of one per subscriber.
//!
//! Only subscriptions whose root field opts in ([`Shared::new`]'s list) are shared: those that
//! send full states (`sessionProgress`, `jobUpdated`), where any message after joining is a
//! valid first message. Streams with per-subscriber state (event cursors) run on their own.
//!
//! A subscriber that joins a running execution asks its resolver (through
//! [`ShareSlot::joined`]) for the current state to be published again. That state reaches every
//! subscriber of the execution, marked as a repeat; only those still waiting for their first
//! message take it, so nobody sees a state twice or an older one after a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{ObjectType, Schema, SubscriptionType};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::api::context::ShareSlot;

/// Messages buffered per execution before a slow subscriber skips ahead (they are full states).
const BUFFER: usize = 16;

/// One response of a shared execution, serialized once.
#[derive(Debug)]
pub struct Frame {
    /// The response as JSON (`{"data":…}`).
    pub payload: Arc<str>,
    /// For a request that never executed (invalid, refused): its errors array as JSON, which
    /// graphql-transport-ws sends as an `error` message instead of `next`.
    pub request_errors: Option<Arc<str>>,
    /// Repeats the state before it: only a subscriber still waiting for its first message
    /// takes it.
    pub repeat: bool,
}

/// What makes two subscriptions the same execution.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Key {
    pub query: String,
    pub operation_name: Option<String>,
    /// The variables as JSON.
    pub variables: String,
    /// The caller's visibility scope (subject and role): what a resolver may show depends on
    /// nothing else.
    pub scope: String,
}

impl Key {
    /// The key of `request` (variables included) made by `caller`.
    pub fn of(request: &async_graphql::Request, caller: &crate::auth::Principal) -> Key {
        Key {
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
            scope: format!("{}\u{0}{:?}", caller.subject, caller.role),
        }
    }
}

struct Group {
    /// Weak, so that the channel closes (completing every subscriber) when the execution ends.
    tx: broadcast::WeakSender<Arc<Frame>>,
    slot: ShareSlot,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shared executions of one replica.
pub struct Shared {
    fields: &'static [&'static str],
    groups: Mutex<HashMap<Key, Weak<Group>>>,
    members: Arc<AtomicUsize>,
}

/// Counts a subscriber while its stream lives.
struct Member(Arc<AtomicUsize>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// `fields`: the subscription root fields whose executions may be shared.
    pub fn new(fields: &'static [&'static str]) -> Self {
        Shared {
            fields,
            groups: Mutex::default(),
            members: Arc::default(),
        }
    }

    /// Whether the operation `name` of `doc` is a subscription of a shareable root field.
    pub fn shareable(&self, doc: &ExecutableDocument, name: Option<&str>) -> bool {
        let Some(op) = super::operation(doc, name) else {
            return false;
        };
        let items = &op.selection_set.node.items;
        op.ty == OperationType::Subscription
            && items.len() == 1
            && items.iter().all(|s| match &s.node {
                Selection::Field(f) => self.fields.contains(&f.node.name.node.as_str()),
                _ => false,
            })
    }

    /// Subscribers of shared executions now.
    pub fn subscribers(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// Shared executions running now (a gauge for `/metrics`).
    pub fn executions(&self) -> usize {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|g| g.strong_count() > 0)
            .count()
    }

    /// The messages of the execution `key`: joins the running one, or starts `request` (whose
    /// data must hold the caller's context) as a new one. The stream ends when the execution
    /// does; the execution ends when its last subscriber's stream is dropped.
    pub fn join<Q, M, S>(
        &self,
        schema: &Schema<Q, M, S>,
        key: Key,
        request: async_graphql::Request,
    ) -> impl Stream<Item = Arc<Frame>> + Send + use<Q, M, S>
    where
        Q: ObjectType + 'static,
        M: ObjectType + 'static,
        S: SubscriptionType + 'static,
    {
        let (group, rx, joined) = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            let running = groups
                .get(&key)
                .and_then(Weak::upgrade)
                .and_then(|g| g.tx.upgrade().map(|tx| (tx.subscribe(), g)));
            match running {
                Some((rx, group)) => (group, rx, true),
                None => {
                    groups.retain(|_, g| g.strong_count() > 0);
                    let (tx, rx) = broadcast::channel(BUFFER);
                    let slot = ShareSlot::default();
                    let request = request.data(slot.clone());
                    let weak = tx.downgrade();
                    let task = tokio::spawn(run(schema.clone(), request, slot.clone(), tx));
                    let group = Arc::new(Group {
                        tx: weak,
                        slot,
                        task,
                    });
                    groups.insert(key, Arc::downgrade(&group));
                    (group, rx, false)
                }
            }
        };
        if joined {
            group.slot.joined();
        }
        self.members.fetch_add(1, Ordering::Relaxed);
        member(group, rx, Member(self.members.clone()))
    }
}

/// Runs the execution and broadcasts each response, serialized once. Dropping the sender when
/// the stream ends completes every subscriber.
async fn run<Q, M, S>(
    schema: Schema<Q, M, S>,
    request: async_graphql::Request,
    slot: ShareSlot,
    tx: broadcast::Sender<Arc<Frame>>,
) where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let mut responses = schema.execute_stream(request);
    while let Some(response) = responses.next().await {
        let repeat = slot.take_repeat();
        let request_errors = super::is_request_error(&response)
            .then(|| serde_json::to_string(&response.errors).ok())
            .flatten()
            .map(Arc::from);
        let payload = match serde_json::to_string(&response) {
            Ok(p) => Arc::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a subscription response");
                return;
            }
        };
        metrics::counter!("bughive_subscription_frames_total").increment(1);
        if tx
            .send(Arc::new(Frame {
                payload,
                request_errors,
                repeat,
            }))
            .is_err()
        {
            // Every subscriber has gone.
            return;
        }
    }
}

/// One subscriber's view: its first message is the first frame after it joined, repeat or
/// not; after that only frames that are not repeats. A subscriber that falls behind skips the
/// frames it missed (each is a full state).
fn member(
    group: Arc<Group>,
    rx: broadcast::Receiver<Arc<Frame>>,
    count: Member,
) -> impl Stream<Item = Arc<Frame>> + Send {
    futures_util::stream::unfold(
        (group, rx, false, count),
        |(group, mut rx, mut started, count)| async move {
            loop {
                match rx.recv().await {
                    Ok(frame) if frame.repeat && started => continue,
                    Ok(frame) => {
                        started = true;
                        return Some((frame, (group, rx, started, count)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
}
