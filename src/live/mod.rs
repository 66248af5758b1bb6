//! Live updates: fans committed changes out to the subscriptions of this replica.
//!
//! One listener connection per replica hears every change notification (`store::listen`). A single
//! hub task turns them into row loads: notifications that arrive together are coalesced, only
//! rows that somebody watches are loaded, and one statement per entity type loads them all, so a
//! thousand subscribers of one session cost one load per change. Each watched row has a bounded
//! broadcast channel; a subscriber that falls behind skips to the newest state instead of
//! holding the others back.
//!
//! A new subscriber asks the hub for the current row, which the hub loads and publishes in the
//! same sequence as change events, so no subscriber ever sees an older state after a newer one.
//! After the listener reconnects, every watched row is loaded and sent again (kind `resync`).

mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::store::Db;
use crate::store::events::model::{EventFilter, EventRow, Position};
use crate::store::jobs::model::JobRow;
use crate::store::listen::{self, Heard};
use crate::store::sessions::model::SessionRow;

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
    /// The same state as the update before it, delivered only to a stream that asked for
    /// every update (a shared execution, whose newest subscriber may still wait for its first).
    pub repeat: bool,
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
            repeat: self.repeat,
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
    /// Users whose role or active flag changed, on any replica.
    users: broadcast::Sender<Uuid>,
    /// The event log's tail, for resumable event streams.
    events: Arc<events::EventHub>,
    db: Db,
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
    /// the store's pool).
    pub fn start(url: String, db: Db) -> Live {
        let (signals, rx) = unbounded_channel();
        let inner = Arc::new(Inner {
            jobs: Mutex::default(),
            sessions: Mutex::default(),
            signals: signals.clone(),
            loads: Default::default(),
            listening: Default::default(),
            users: broadcast::channel(256).0,
            events: events::EventHub::new(),
            db: db.clone(),
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
        let tail = tokio::spawn(events::run_tail(Arc::downgrade(&inner.events), db.clone()));
        let hub = tokio::spawn(run_hub(Arc::downgrade(&inner), rx, db));
        Live {
            inner,
            _tasks: Arc::new(Tasks(vec![listener, forward, hub, tail])),
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
    /// Ids of users whose role or active flag changed, as committed on any replica. A receiver
    /// that lags has missed some and should assume everyone changed.
    pub fn user_changes(&self) -> broadcast::Receiver<Uuid> {
        self.inner.users.subscribe()
    }

    /// Subscribers of this replica: one per subscription following a job or a session.
    pub fn subscribers(&self) -> usize {
        fn count<R>(channels: &Channels<R>) -> usize {
            channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|tx| tx.receiver_count())
                .sum()
        }
        count(&self.inner.jobs) + count(&self.inner.sessions) + self.inner.events.subscribers()
    }

    /// The logged events matching `filter` after the cursor `after` (or from the present),
    /// in log order, then each new one as it commits: nothing missed, nothing twice.
    /// `CURSOR_EXPIRED` when retention has deleted events after the cursor.
    pub fn events(
        &self,
        filter: EventFilter,
        after: Option<Position>,
    ) -> impl Stream<Item = AppResult<Arc<EventRow>>> + use<> {
        events::follow(
            self.inner.events.clone(),
            self.inner.db.clone(),
            filter,
            after,
        )
    }

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
    /// With `every`, states equal to the one before are delivered too, marked `repeat`.
    pub async fn watch_job(
        &self,
        id: Uuid,
        every: bool,
    ) -> AppResult<impl Stream<Item = Update<JobRow>> + use<>> {
        let rx = subscribe(&self.inner.jobs, id);
        self.watch(Topic::Job(id), "job", rx, every).await
    }

    /// The session's current state, then its committed changes and those of its jobs.
    /// With `every`, states equal to the one before are delivered too, marked `repeat`.
    pub async fn watch_session(
        &self,
        id: Uuid,
        every: bool,
    ) -> AppResult<impl Stream<Item = Update<SessionRow>> + use<>> {
        let rx = subscribe(&self.inner.sessions, id);
        self.watch(Topic::Session(id), "session", rx, every).await
    }

    /// Asks for the current state of a watched job to be published to its watchers (a new
    /// subscriber of a shared execution needs it as its first message).
    pub fn refresh_job(&self, id: Uuid) {
        let _ = self.inner.signals.send(Signal::Refresh(Topic::Job(id)));
    }

    /// As [`Live::refresh_job`], for a session.
    pub fn refresh_session(&self, id: Uuid) {
        let _ = self.inner.signals.send(Signal::Refresh(Topic::Session(id)));
    }

    async fn watch<R: PartialEq + Send + Sync + 'static>(
        &self,
        topic: Topic,
        entity: &'static str,
        mut rx: broadcast::Receiver<Update<R>>,
        every: bool,
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
        Ok(follow(first, rx, every))
    }
}

fn subscribe<R>(channels: &Channels<R>, id: Uuid) -> broadcast::Receiver<Update<R>> {
    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(id)
        .or_insert_with(|| broadcast::channel(BUFFER).0)
        .subscribe()
}

/// The first state, then every update that differs from the last one delivered (with `every`,
/// the others too, marked `repeat`). Lagging skips to the newest buffered update. Ends after a
/// `None` row (deleted) is delivered.
fn follow<R: PartialEq + Send + Sync + 'static>(
    first: Update<R>,
    rx: broadcast::Receiver<Update<R>>,
    every: bool,
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
    futures_util::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(u) = st.first.take() {
            return Some((u, st));
        }
        loop {
            let mut u = match st.rx.recv().await {
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
                if !every {
                    continue;
                }
                u.repeat = true;
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
    sessions: HashMap<Uuid, SessionDirty>,
}

/// Why a watched session must be sent: its own change (if any), then each job that changed.
#[derive(Default)]
struct SessionDirty {
    own: Option<Reason>,
    jobs: Vec<Uuid>,
}

/// Job changes kept per session and round; beyond this the session's state is still sent.
const MAX_JOBS_PER_ROUND: usize = 256;

/// Merges a new reason into a pending one: the newest kind wins, except that a pending
/// `snapshot` stays one, and `forced` (a resync) is never lost.
fn merge(pending: &mut Option<Reason>, new: Reason) {
    match pending {
        None => *pending = Some(new),
        Some(p) => {
            p.forced |= new.forced;
            if p.kind != "snapshot" {
                p.kind = new.kind;
            }
        }
    }
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.sessions.is_empty()
    }

    fn absorb(&mut self, inner: &Inner, signal: Signal) {
        let snapshot = Reason {
            kind: "snapshot",
            forced: false,
        };
        match signal {
            Signal::Refresh(Topic::Job(id)) => {
                self.jobs.entry(id).or_insert(snapshot);
            }
            Signal::Refresh(Topic::Session(id)) => {
                let d = self.sessions.entry(id).or_default();
                if d.own.is_none() {
                    d.own = Some(snapshot);
                }
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
                // Events logged while the listener was away are read now.
                inner.events.wake.notify_one();
                let resync = Reason {
                    kind: "resync",
                    forced: true,
                };
                // A subscriber still waiting for its first state gets it as a snapshot.
                for id in lock(&inner.jobs).keys() {
                    let mut r = self.jobs.remove(id);
                    merge(&mut r, resync);
                    self.jobs.extend(r.map(|r| (*id, r)));
                }
                for id in lock(&inner.sessions).keys() {
                    merge(&mut self.sessions.entry(*id).or_default().own, resync);
                }
            }
            Signal::Heard(Heard::Note(note)) => {
                let kind = kind_of(&note.entity, &note.kind);
                match note.entity.as_str() {
                    "job" => {
                        if watched(&inner.jobs, &note.id) {
                            let reason = Reason {
                                kind,
                                forced: false,
                            };
                            let mut r = self.jobs.remove(&note.id);
                            merge(&mut r, reason);
                            self.jobs.extend(r.map(|r| (note.id, r)));
                        }
                        if let Some(sid) = note.session
                            && watched(&inner.sessions, &sid)
                        {
                            let d = self.sessions.entry(sid).or_default();
                            if d.jobs.contains(&note.id) {
                                // One message per job and round carries its newest state.
                            } else if d.jobs.len() < MAX_JOBS_PER_ROUND {
                                d.jobs.push(note.id);
                            } else {
                                let updated = Reason {
                                    kind: "updated",
                                    forced: false,
                                };
                                merge(&mut d.own, updated);
                            }
                        }
                    }
                    "session" => {
                        if watched(&inner.sessions, &note.id) {
                            let reason = Reason {
                                kind,
                                forced: false,
                            };
                            merge(&mut self.sessions.entry(note.id).or_default().own, reason);
                        }
                    }
                    "events" => inner.events.wake.notify_one(),
                    "user" => {
                        // Nobody listening is fine: no caller is cached here.
                        let _ = inner.users.send(note.id);
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
        .chain(dirty.sessions.values().flat_map(|d| d.jobs.iter().copied()))
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
        crate::store::jobs::repo::by_ids(&mut conn, &job_ids)
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
        crate::store::sessions::repo::by_ids(&mut conn, &session_ids)
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
                    repeat: false,
                });
            }
        }
    }
    let map = lock(&inner.sessions);
    for (id, dirty) in &dirty.sessions {
        let Some(tx) = map.get(id) else { continue };
        let row = sessions.get(id).cloned();
        if let Some(reason) = &dirty.own {
            let _ = tx.send(Update {
                at: stamp(reason, now, row.as_ref().map(|r| r.updated_at)),
                row: row.clone(),
                kind: reason.kind,
                job: None,
                forced: reason.forced,
                repeat: false,
            });
        }
        for job_id in &dirty.jobs {
            let Some(job) = jobs.get(job_id).cloned() else {
                continue;
            };
            let reason = Reason {
                kind: "job",
                forced: false,
            };
            let _ = tx.send(Update {
                at: stamp(&reason, now, Some(job.updated_at)),
                row: row.clone(),
                kind: "job",
                job: Some(job),
                forced: false,
                repeat: false,
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
