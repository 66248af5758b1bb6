//! The replica's one LISTEN connection: outside the pool, reconnecting with backoff.
//!
//! Change notifications are sent by triggers (see the jobs migration) on the `bughive_events`
//! channel, so PostgreSQL delivers them only once their transaction commits, in commit order.
//! Each replica keeps one dedicated connection listening to them and hands every notification
//! to the in-process fan-out (the live hub).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

/// The channel every change notification is sent on.
pub const CHANNEL: &str = "bughive_events";

/// One change notification: which row changed and why. The payload is small on purpose; the
/// current row is loaded by the listener's replica.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Note {
    /// `job`, `session`, `user` or `events`.
    #[serde(rename = "e")]
    pub entity: String,
    /// Absent for `events` (rows were appended to the event log).
    #[serde(default)]
    pub id: Uuid,
    /// For a job: the session it belongs to.
    #[serde(rename = "s", default)]
    pub session: Option<Uuid>,
    #[serde(rename = "k")]
    pub kind: String,
}

/// What the listener reports.
#[derive(Debug)]
pub enum Heard {
    Note(Note),
    /// The connection was (re)established and is listening: anything may have changed while it
    /// was down, so every watched row must be loaded again.
    Listening,
    /// The connection was lost; changes are not heard until `Listening` comes again.
    Lost,
}

/// How often an idle listener checks that its connection still answers.
const HEALTH_CHECK: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens until `out` is closed, reconnecting with exponential backoff (100 ms to 5 s).
pub async fn run(url: String, out: UnboundedSender<Heard>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = listen_once(&url, &out).await;
        if out.send(Heard::Lost).is_err() {
            return;
        }
        match result {
            Ok(()) => return,
            Err(ListenError::Connect(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "change listener cannot connect");
            }
            Err(ListenError::Lost(e)) => {
                tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                backoff = Duration::from_millis(100);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum ListenError {
    Connect(String),
    Lost(String),
}

/// One connection's life. `Ok` only when `out` was closed (the replica is shutting down).
async fn listen_once(url: &str, out: &UnboundedSender<Heard>) -> Result<(), ListenError> {
    let (cfg, tls) = super::pg_config(url, 0, "bughive-gateway listener")
        .map_err(|e| ListenError::Connect(e.to_string()))?;
    let (client, mut connection) = tokio::time::timeout(Duration::from_secs(10), cfg.connect(tls))
        .await
        .map_err(|_| ListenError::Connect("connect timed out".into()))?
        .map_err(|e| ListenError::Connect(super::with_causes(&e)))?;

    // The connection object yields the notifications; it runs on its own task.
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel::<Note>();
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    match serde_json::from_str::<Note>(n.payload()) {
                        Ok(note) => {
                            if tx.send(note).is_err() {
                                return Ok(());
                            }
                        }
                        Err(e) => tracing::warn!(payload = n.payload(), error = %e,
                        "ignoring a malformed change notification"),
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("connection closed".to_owned())
    });
    let mut pump = AbortOnDrop(pump);

    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| ListenError::Connect(e.to_string()))?;
    tracing::debug!("change listener is listening");
    if out.send(Heard::Listening).is_err() {
        return Ok(());
    }

    let mut health =
        tokio::time::interval_at(tokio::time::Instant::now() + HEALTH_CHECK, HEALTH_CHECK);
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(note) => {
                    if out.send(Heard::Note(note)).is_err() {
                        return Ok(());
                    }
                }
                None => break,
            },
            _ = health.tick() => {
                let check = tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1")).await;
                match check {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(ListenError::Lost(e.to_string())),
                    Err(_) => return Err(ListenError::Lost("health check timed out".into())),
                }
            }
            () = out.closed() => return Ok(()),
        }
    }
    drop(client);
    let reason = match (&mut pump.0).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => return Ok(()),
        Err(e) => e.to_string(),
    };
    Err(ListenError::Lost(reason))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
