//! Resumable event streams over the event log (`store::events`).
//!
//! One tail task per replica reads the log in order up to the horizon (see the migration
//! `event_log`) and broadcasts every event; it is woken by the change listener's
//! notifications, polls once a second in case one was missed, and soon again while committed
//! events wait behind a running transaction. A subscriber takes the tail's position `T` and a
//! receiver under one lock, replays `(after, T]` from the database, then follows the broadcast,
//! where every event is past `T`: no gap and no duplicate at the seam. A subscriber too slow for
//! the broadcast buffer re-reads what it missed from the database instead of losing it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::error::{AppError, AppResult};
use crate::store::Db;
use crate::store::events::model::{EventFilter, EventRow, Position};
use crate::store::events::repo;

/// Events buffered per replica before a slow subscriber has to re-read from the database.
const BUFFER: usize = 4096;
/// Events per statement, when the tail or a replay reads the log.
const PAGE: i64 = 500;
/// Messages queued per subscriber before the subscriber's reader waits for its client.
const QUEUE: usize = 64;
const IDLE_POLL: Duration = Duration::from_secs(1);
const HELD_BACK_POLL: Duration = Duration::from_millis(20);

pub(super) struct EventHub {
    tx: broadcast::Sender<Arc<EventRow>>,
    /// Everything up to here has been broadcast; `None` until the tail's first read.
    pos: Mutex<Option<Position>>,
    pub(super) wake: Notify,
}

impl EventHub {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(EventHub {
            tx: broadcast::channel(BUFFER).0,
            pos: Mutex::new(None),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Position>> {
        self.pos.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver and the position it starts after, taken together.
    async fn subscribe(&self) -> AppResult<(broadcast::Receiver<Arc<EventRow>>, Position)> {
        for _ in 0..500 {
            {
                let pos = self.lock();
                if let Some(p) = *pos {
                    return Ok((self.tx.subscribe(), p));
                }
            }
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(AppError::Unavailable("the event log cannot be read".into()))
    }

    pub(super) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The tail: reads the log up to the horizon and broadcasts it, until the hub is dropped.
pub(super) async fn run_tail(hub: std::sync::Weak<EventHub>, db: Db) {
    let mut next_poll = IDLE_POLL;
    let mut backoff = Duration::from_millis(50);
    loop {
        {
            let Some(h) = hub.upgrade() else { return };
            tokio::select! {
                () = h.wake.notified() => {},
                () = tokio::time::sleep(next_poll) => {},
            }
        }
        let Some(h) = hub.upgrade() else { return };
        match advance(&h, &db).await {
            Ok(held_back) => {
                backoff = Duration::from_millis(50);
                next_poll = if held_back { HELD_BACK_POLL } else { IDLE_POLL };
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot read the event log; retrying");
                next_poll = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Broadcasts everything below the horizon; true when committed events wait behind it.
async fn advance(hub: &EventHub, db: &Db) -> AppResult<bool> {
    let mut conn = db.conn().await?;
    let horizon = repo::horizon(&mut conn).await?;
    let upto = horizon.position();
    let start = *hub.lock();
    let Some(mut at) = start else {
        // First read: the stream starts at the present.
        *hub.lock() = Some(upto);
        return Ok(horizon.held_back);
    };
    if hub.subscribers() == 0 {
        // Nobody follows: move on without reading what nobody would receive.
        let mut pos = hub.lock();
        *pos = Some(pos.map_or(upto, |p| p.max(upto)));
        return Ok(horizon.held_back);
    }
    loop {
        let rows = repo::read(&mut conn, at, upto, &EventFilter::default(), PAGE).await?;
        let full = rows.len() as i64 == PAGE;
        let mut pos = hub.lock();
        for row in rows {
            at = row.position();
            let _ = hub.tx.send(Arc::new(row));
        }
        if !full {
            at = at.max(upto);
        }
        *pos = Some(at);
        if !full {
            return Ok(horizon.held_back);
        }
    }
}

/// The events matching `filter` after `after` (or from the present), then each new one.
pub(super) fn follow(
    hub: Arc<EventHub>,
    db: Db,
    filter: EventFilter,
    after: Option<Position>,
) -> impl Stream<Item = AppResult<Arc<EventRow>>> {
    let (out, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        if let Err(e) = pump(&hub, &db, &filter, after, &out).await {
            let _ = out.send(Err(e)).await;
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

type Out = mpsc::Sender<AppResult<Arc<EventRow>>>;

/// Feeds one subscriber; returns `Ok` when the subscriber has gone.
async fn pump(
    hub: &EventHub,
    db: &Db,
    filter: &EventFilter,
    after: Option<Position>,
    out: &Out,
) -> AppResult<()> {
    let (mut rx, start) = hub.subscribe().await?;
    let mut last = match after {
        None => start,
        Some(cursor) => {
            let mut conn = db.conn().await?;
            if cursor < repo::pruned(&mut conn).await? {
                return Err(AppError::CursorExpired);
            }
            let horizon = repo::horizon(&mut conn).await?;
            if cursor > horizon.position() {
                return Err(AppError::bad_field(
                    "after",
                    "the cursor is not one this gateway handed out",
                ));
            }
            cursor
        }
    };
    if last < start && !replay(db, filter, &mut last, start, out).await? {
        return Ok(());
    }
    loop {
        match rx.recv().await {
            Ok(event) => {
                let p = event.position();
                if p <= last {
                    continue;
                }
                last = p;
                if filter.matches(&event) && out.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let (again, upto) = hub.subscribe().await?;
                rx = again;
                if last < upto && !replay(db, filter, &mut last, upto, out).await? {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                return Err(AppError::Unavailable("the server is shutting down".into()));
            }
        }
    }
}

/// Sends the matching events in `(last, upto]` from the database; false when the subscriber
/// has gone.
async fn replay(
    db: &Db,
    filter: &EventFilter,
    last: &mut Position,
    upto: Position,
    out: &Out,
) -> AppResult<bool> {
    loop {
        let rows = {
            let mut conn = db.conn().await?;
            repo::read(&mut conn, *last, upto, filter, PAGE).await?
        };
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            *last = row.position();
            if out.send(Ok(Arc::new(row))).await.is_err() {
                return Ok(false);
            }
        }
        if !full {
            *last = upto;
            return Ok(true);
        }
    }
}
