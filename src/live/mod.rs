//! Live updates: fans committed changes out to the subscriptions of this replica.
//!
//! One listener connection per replica hears every change notification (`db::listen`). A single
//! hub task turns them into row loads: notifications that arrive together are coalesced, only
//! rows that somebody watches are loaded, and one statement per entity type loads them all, so a
//! thousand subscribers of one session cost one load per change. Each watched row has a bounded
//! broadcast channel; a subscriber that falls behind skips to the newest state instead of
//! holding the others back.
//!
//! A new subscriber asks the hub for the current row, which the hub loads and publishes in the
//! same sequence as change events, so no subscriber ever sees an older state after a newer one.
//! After the listener reconnects, every watched row is loaded and sent again (kind `resync`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_graphql::Context;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use uuid::Uuid;

use crate::db::Db;
use crate::db::listen::{self, Heard};
use crate::error::{AppError, AppResult};
use crate::jobs::model::JobRow;
use crate::sessions::model::SessionRow;

/// Updates kept per watched row before a slow subscriber starts skipping.
const BUFFER: usize = 16;
/// How long a new subscriber waits for the current state before giving up.
const FIRST_STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// One published state of a watched row.
#[derive(Debug)]
pub struct Update<R> {
    /// The current row; `None` when it does not exist.
    pub row: Option<Arc<R>>,
    /// Why it was sent: `snapshot` (first message), `resync` (after the listener reconnected),
    /// or the change: `status`, `pages`, `bugs`, `cost`, `updated` for sessions, `job` for a
    /// session whose job changed, `created`, `status`, `progress` for jobs.
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    /// For session updates of kind `job`: the job that changed.
    pub job: Option<Arc<JobRow>>,
    /// Sent even when the row looks unchanged (`resync`).
    forced: bool,
}

// Derived `Clone` would require `R: Clone`; the row is shared, never copied.
impl<R> Clone for Update<R> {
    fn clone(&self) -> Self {
        Update {
            row: self.row.clone(),
            kind: self.kind,
            at: self.at,
            job: self.job.clone(),
            forced: self.forced,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Topic {
    Job(Uuid),
    Session(Uuid),
}

enum Signal {
    Heard(Heard),
    /// A subscriber joined and needs the current state.
    Refresh(Topic),
}

type Channels<R> = Mutex<HashMap<Uuid, broadcast::Sender<Update<R>>>>;

struct Inner {
    jobs: Channels<JobRow>,
    sessions: Channels<SessionRow>,
    signals: UnboundedSender<Signal>,
    /// Row loads the hub has run; tests read it to prove one load serves many subscribers.
    loads: std::sync::atomic::AtomicU64,
    /// Whether the listener connection is up and listening.
    listening: std::sync::atomic::AtomicBool,
}

/// The replica's live-update hub. Cheap to clone; the tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Live {
    /// Starts the listener (on its own connection to `url`) and the hub (loading rows through
    /// `db`'s pool).
    pub fn start(url: String, db: Db) -> Live {
        let (signals, rx) = unbounded_channel();
        let inner = Arc::new(Inner {
            jobs: Mutex::default(),
            sessions: Mutex::default(),
            signals: signals.clone(),
            loads: Default::default(),
            listening: Default::default(),
        });
        let (heard_tx, mut heard_rx) = unbounded_channel::<Heard>();
        let forward = tokio::spawn(async move {
            while let Some(h) = heard_rx.recv().await {
                if signals.send(Signal::Heard(h)).is_err() {
                    return;
                }
            }
        });
        let listener = tokio::spawn(listen::run(url, heard_tx));
        let hub = tokio::spawn(run_hub(Arc::downgrade(&inner), rx, db));
        Live {
            inner,
            _tasks: Arc::new(Tasks(vec![listener, forward, hub])),
        }
    }

    /// Stops the listener and the hub now (at shutdown, before the database goes away), even if
    /// clones are still held by connections that are closing.
    pub fn stop(&self) {
        for t in &self._tasks.0 {
            t.abort();
        }
    }

    /// True while the listener connection is up; `/ready` reports it.
    pub fn is_listening(&self) -> bool {
        self.inner
            .listening
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Row loads run so far.
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The job's current state, then its committed changes. `NOT_FOUND` if it does not exist.
    pub async fn watch_job(
        &self,
        id: Uuid,
    ) -> AppResult<impl Stream<Item = Update<JobRow>> + use<>> {
        let rx = subscribe(&self.inner.jobs, id);
        self.watch(Topic::Job(id), "job", rx).await
    }

    /// The session's current state, then its committed changes and those of its jobs.
    pub async fn watch_session(
        &self,
        id: Uuid,
    ) -> AppResult<impl Stream<Item = Update<SessionRow>> + use<>> {
        let rx = subscribe(&self.inner.sessions, id);
        self.watch(Topic::Session(id), "session", rx).await
    }

    async fn watch<R: PartialEq + Send + Sync + 'static>(
        &self,
        topic: Topic,
        entity: &'static str,
        mut rx: broadcast::Receiver<Update<R>>,
    ) -> AppResult<impl Stream<Item = Update<R>> + use<R>> {
        let not_found = || AppError::NotFound {
            entity,
            id: match topic {
                Topic::Job(id) | Topic::Session(id) => id.to_string(),
            },
        };
        self.inner
            .signals
            .send(Signal::Refresh(topic))
            .map_err(|_| AppError::Unavailable("live updates are not running".into()))?;
        let first = tokio::time::timeout(FIRST_STATE_TIMEOUT, async {
            loop {
                match rx.recv().await {
                    Ok(u) => return Ok(u),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(AppError::Unavailable("live updates stopped".into()));
                    }
                }
            }
        })
        .await
        .map_err(|_| AppError::Unavailable("could not load the current state in time".into()))??;
        if first.row.is_none() {
            return Err(not_found());
        }
        Ok(follow(first, rx))
    }
}

/// The `Live` hub of a subscription resolver.
pub fn live<'a>(ctx: &Context<'a>) -> AppResult<&'a Live> {
    ctx.data::<Live>()
        .map_err(|_| AppError::internal("live updates are not configured"))
}

fn subscribe<R>(channels: &Channels<R>, id: Uuid) -> broadcast::Receiver<Update<R>> {
    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(id)
        .or_insert_with(|| broadcast::channel(BUFFER).0)
        .subscribe()
}

/// The first state, then every update that differs from the last one delivered. Lagging skips to
/// the newest buffered update. Ends after a `None` row (deleted) is delivered.
fn follow<R: PartialEq + Send + Sync + 'static>(
    first: Update<R>,
    rx: broadcast::Receiver<Update<R>>,
) -> impl Stream<Item = Update<R>> {
    struct State<R> {
        first: Option<Update<R>>,
        rx: broadcast::Receiver<Update<R>>,
        last: Option<Arc<R>>,
        done: bool,
    }
    let last = first.row.clone();
    let state = State {
        first: Some(first),
        rx,
        last,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(u) = st.first.take() {
            return Some((u, st));
        }
        loop {
            let u = match st.rx.recv().await {
                Ok(u) => u,
                Err(broadcast::error::RecvError::Lagged(_)) => match newest(&mut st.rx) {
                    Some(u) => u,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let unchanged = match (&st.last, &u.row) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
                _ => false,
            };
            if unchanged && !u.forced && u.job.is_none() {
                continue;
            }
            st.done = u.row.is_none();
            st.last = u.row.clone();
            return Some((u, st));
        }
    })
}

/// Drains the receiver and returns the newest update in it.
fn newest<R>(rx: &mut broadcast::Receiver<Update<R>>) -> Option<Update<R>> {
    let mut newest = None;
    loop {
        match rx.try_recv() {
            Ok(u) => newest = Some(u),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return newest,
        }
    }
}

/// Why a watched row must be loaded and sent.
#[derive(Clone, Copy)]
struct Reason {
    kind: &'static str,
    job: Option<Uuid>,
    forced: bool,
}

fn kind_of(entity: &str, kind: &str) -> &'static str {
    match (entity, kind) {
        (_, "status") => "status",
        ("session", "pages") => "pages",
        ("session", "bugs") => "bugs",
        ("session", "cost") => "cost",
        ("session", "deleted") => "deleted",
        ("job", "created") => "created",
        ("job", "progress") => "progress",
        _ => "updated",
    }
}

fn watched<R>(channels: &Channels<R>, id: &Uuid) -> bool {
    channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .is_some_and(|tx| tx.receiver_count() > 0)
}

/// Rows that must be loaded and published, with the reason of each.
#[derive(Default)]
struct Dirty {
    jobs: HashMap<Uuid, Reason>,
    sessions: HashMap<Uuid, Reason>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.sessions.is_empty()
    }

    fn absorb(&mut self, inner: &Inner, signal: Signal) {
        let snapshot = Reason {
            kind: "snapshot",
            job: None,
            forced: false,
        };
        match signal {
            Signal::Refresh(Topic::Job(id)) => {
                self.jobs.entry(id).or_insert(snapshot);
            }
            Signal::Refresh(Topic::Session(id)) => {
                self.sessions.entry(id).or_insert(snapshot);
            }
            Signal::Heard(Heard::Lost) => {
                inner
                    .listening
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            Signal::Heard(Heard::Listening) => {
                inner
                    .listening
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let resync = Reason {
                    kind: "resync",
                    job: None,
                    forced: true,
                };
                // A subscriber still waiting for its first state gets it as a snapshot.
                let mark = |r: &mut Reason| {
                    r.forced = true;
                    if r.kind != "snapshot" {
                        r.kind = "resync";
                    }
                };
                for id in lock(&inner.jobs).keys() {
                    self.jobs.entry(*id).and_modify(mark).or_insert(resync);
                }
                for id in lock(&inner.sessions).keys() {
                    self.sessions.entry(*id).and_modify(mark).or_insert(resync);
                }
            }
            Signal::Heard(Heard::Note(note)) => {
                let kind = kind_of(&note.entity, &note.kind);
                match note.entity.as_str() {
                    "job" => {
                        if watched(&inner.jobs, &note.id) {
                            self.jobs.insert(
                                note.id,
                                Reason {
                                    kind,
                                    job: None,
                                    forced: false,
                                },
                            );
                        }
                        if let Some(sid) = note.session
                            && watched(&inner.sessions, &sid)
                        {
                            self.sessions.insert(
                                sid,
                                Reason {
                                    kind: "job",
                                    job: Some(note.id),
                                    forced: false,
                                },
                            );
                        }
                    }
                    "session" => {
                        if watched(&inner.sessions, &note.id) {
                            self.sessions.insert(
                                note.id,
                                Reason {
                                    kind,
                                    job: None,
                                    forced: false,
                                },
                            );
                        }
                    }
                    other => tracing::debug!(entity = other, "ignoring a notification"),
                }
            }
        }
    }
}

fn lock<R>(
    channels: &Channels<R>,
) -> std::sync::MutexGuard<'_, HashMap<Uuid, broadcast::Sender<Update<R>>>> {
    channels.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_hub(inner: Weak<Inner>, mut signals: UnboundedReceiver<Signal>, db: Db) {
    let mut dirty = Dirty::default();
    let mut backoff = Duration::from_millis(50);
    loop {
        if dirty.is_empty() {
            match signals.recv().await {
                Some(s) => {
                    let Some(i) = inner.upgrade() else { return };
                    dirty.absorb(&i, s);
                }
                None => return,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        while let Ok(s) = signals.try_recv() {
            dirty.absorb(&inner, s);
        }
        match publish(&inner, &db, &dirty).await {
            Ok(()) => {
                dirty = Dirty::default();
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot load rows for live updates; retrying");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Loads every dirty row in one statement per entity type and publishes it.
async fn publish(inner: &Inner, db: &Db, dirty: &Dirty) -> AppResult<()> {
    // Forget rows nobody watches any more.
    lock(&inner.jobs).retain(|_, tx| tx.receiver_count() > 0);
    lock(&inner.sessions).retain(|_, tx| tx.receiver_count() > 0);

    let mut job_ids: Vec<Uuid> = dirty
        .jobs
        .keys()
        .copied()
        .chain(dirty.sessions.values().filter_map(|r| r.job))
        .collect();
    job_ids.sort_unstable();
    job_ids.dedup();
    let session_ids: Vec<Uuid> = dirty.sessions.keys().copied().collect();
    if job_ids.is_empty() && session_ids.is_empty() {
        return Ok(());
    }
    let mut conn = db.conn().await?;
    let jobs: HashMap<Uuid, Arc<JobRow>> = if job_ids.is_empty() {
        HashMap::new()
    } else {
        inner
            .loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::jobs::repo::by_ids(&mut conn, &job_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, Arc::new(r)))
            .collect()
    };
    let sessions: HashMap<Uuid, Arc<SessionRow>> = if session_ids.is_empty() {
        HashMap::new()
    } else {
        inner
            .loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sessions::repo::by_ids(&mut conn, &session_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, Arc::new(r)))
            .collect()
    };
    drop(conn);
    let now = Utc::now();
    {
        let map = lock(&inner.jobs);
        for (id, reason) in &dirty.jobs {
            if let Some(tx) = map.get(id) {
                let row = jobs.get(id).cloned();
                let at = stamp(reason, now, row.as_ref().map(|r| r.updated_at));
                let _ = tx.send(Update {
                    row,
                    kind: reason.kind,
                    at,
                    job: None,
                    forced: reason.forced,
                });
            }
        }
    }
    let map = lock(&inner.sessions);
    for (id, reason) in &dirty.sessions {
        if let Some(tx) = map.get(id) {
            let row = sessions.get(id).cloned();
            let job = reason.job.and_then(|j| jobs.get(&j).cloned());
            let changed_at = match &job {
                Some(j) => Some(j.updated_at),
                None => row.as_ref().map(|r| r.updated_at),
            };
            let _ = tx.send(Update {
                at: stamp(reason, now, changed_at),
                row,
                kind: reason.kind,
                job,
                forced: reason.forced,
            });
        }
    }
    Ok(())
}

/// A change's time is when its row was written; a snapshot's is now.
fn stamp(reason: &Reason, now: DateTime<Utc>, changed_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match reason.kind {
        "snapshot" | "resync" => now,
        _ => changed_at.unwrap_or(now),
    }
}
