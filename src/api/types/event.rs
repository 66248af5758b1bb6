//! Resumable event subscriptions: `sessionEvents` and `bugReported`, read from the event log
//! (see `live::events`). Each message carries its `cursor`; subscribing again with `after` set to
//! the last cursor received replays what was missed, then continues live.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Json, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use crate::api::context::{CursorSlot, ResumeFrom, live, req};
use crate::api::types::bug::Bug;
use crate::api::types::job::Job;
use crate::api::types::session::load_session;
use crate::api::types::user::load_project;
use crate::error::{AppError, AppResult};
use crate::store::batch::{Fetch, Id, Reader};
use crate::store::bugs::model::BugRow;
use crate::store::events::model::{EventFilter, EventKind, EventRow, Position};
use crate::store::jobs::model::JobRow;
use crate::store::sessions::model::SessionRow;

/// One change to a session, its pages, bugs or jobs, as logged when it committed.
pub struct SessionEvent(Arc<EventRow>);

#[Object]
impl SessionEvent {
    /// Pass it as `after` to resume right after this event.
    async fn cursor(&self) -> String {
        self.0.position().to_string()
    }

    async fn kind(&self) -> EventKind {
        self.0.kind
    }

    async fn session_id(&self) -> Option<Uuid> {
        self.0.session_id
    }

    /// The session, page, bug or job the event is about (none for `PAGES_RECORDED`).
    async fn entity_id(&self) -> Option<Uuid> {
        self.0.entity_id
    }

    /// When the change was made (its transaction's start).
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// What changed: `{from, to}` for status changes, `{count}` for recorded pages, `{added,
    /// total}` (decimal strings) for cost, `{title, priority, category, pageId}` for a reported
    /// bug, `{progress, message}` for job progress.
    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.payload.value())
    }

    /// The bug, for bug events, as it is now; null once deleted.
    async fn bug(&self, ctx: &Context<'_>) -> AppResult<Option<Bug>> {
        match (self.0.entity.as_str(), self.0.entity_id) {
            ("bug", Some(id)) => Ok(req(ctx)?
                .loader
                .load_one(Id::<BugRow>::new(id))
                .await?
                .map(Bug)),
            _ => Ok(None),
        }
    }

    /// The job, for job events, as it is now.
    async fn job(&self, ctx: &Context<'_>) -> AppResult<Option<Job>> {
        match (self.0.entity.as_str(), self.0.entity_id) {
            ("job", Some(id)) => Ok(req(ctx)?
                .loader
                .load_one(Id::<JobRow>::new(id))
                .await?
                .map(|row| Job(row, None))),
            _ => Ok(None),
        }
    }
}

/// A bug as it was reported.
pub struct BugReportedEvent(Arc<EventRow>);

#[Object]
impl BugReportedEvent {
    /// Pass it as `after` to resume right after this event.
    async fn cursor(&self) -> String {
        self.0.position().to_string()
    }

    async fn session_id(&self) -> Option<Uuid> {
        self.0.session_id
    }

    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The bug as it is now; null once deleted.
    async fn bug(&self, ctx: &Context<'_>) -> AppResult<Option<Bug>> {
        let Some(id) = self.0.entity_id else {
            return Ok(None);
        };
        Ok(req(ctx)?
            .loader
            .load_one(Id::<BugRow>::new(id))
            .await?
            .map(Bug))
    }
}

#[derive(Default)]
pub struct EventsSubscription;

#[Subscription]
impl EventsSubscription {
    /// Every change to the session, its pages, bugs and jobs, in commit-safe order. Without
    /// `after` it starts now; with the `cursor` of a message received earlier (on any replica)
    /// it first replays every event after it, then continues live, with nothing missed and
    /// nothing twice. `CURSOR_EXPIRED` when the cursor is older than the log's retention.
    async fn session_events(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SessionEvent>> + use<>>
    {
        // The request's loader is scoped to the caller: someone else's session is not found.
        if load_session(ctx, session_id).await?.is_none() {
            return Err(AppError::NotFound {
                entity: "session",
                id: session_id.to_string(),
            }
            .into());
        }
        let filter = EventFilter {
            session: Some(session_id),
            ..EventFilter::default()
        };
        let events = stream(ctx, filter, after)?;
        Ok(events.map(|e| e.map(SessionEvent)))
    }

    /// Bugs as they are reported, of one session, of one project's sessions, or of every
    /// session the caller may see. `after` resumes as for `sessionEvents`.
    async fn bug_reported(
        &self,
        ctx: &Context<'_>,
        session_id: Option<Uuid>,
        project_id: Option<Uuid>,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<BugReportedEvent>> + use<>>
    {
        if let Some(id) = session_id
            && load_session(ctx, id).await?.is_none()
        {
            return Err(AppError::NotFound {
                entity: "session",
                id: id.to_string(),
            }
            .into());
        }
        if let Some(id) = project_id
            && load_project(ctx, id).await?.is_none()
        {
            return Err(AppError::NotFound {
                entity: "project",
                id: id.to_string(),
            }
            .into());
        }
        let filter = EventFilter {
            session: session_id,
            project: project_id,
            kinds: vec![EventKind::BugReported],
        };
        let events = stream(ctx, filter, after)?;
        Ok(events.map(|e| e.map(BugReportedEvent)))
    }
}

/// The caller's events: those of sessions it may see, each session checked once per
/// subscription, with the cursor of each handed to the transport.
fn stream(
    ctx: &Context<'_>,
    filter: EventFilter,
    after: Option<String>,
) -> AppResult<impl Stream<Item = async_graphql::Result<Arc<EventRow>>> + use<>> {
    let after = ctx
        .data_opt::<ResumeFrom>()
        .map(|r| r.0.clone())
        .or(after)
        .map(|a| {
            a.parse::<Position>()
                .map_err(|e| AppError::bad_field("after", e))
        })
        .transpose()?;
    let slot = ctx.data_opt::<CursorSlot>().cloned();
    let r = req(ctx)?;
    let reader = Arc::new(Reader {
        db: r.db.clone(),
        scope: r.actor.scope(),
    });
    // The session of `sessionEvents` was checked before subscribing; its deletion event must
    // still get through.
    let known = filter.session.map(|s| (s, true));
    let seen = Arc::new(tokio::sync::Mutex::new(
        known.into_iter().collect::<HashMap<_, _>>(),
    ));
    let events = live(ctx)?.events(filter, after);
    Ok(events.filter_map(move |e| {
        let reader = reader.clone();
        let seen = seen.clone();
        let slot = slot.clone();
        async move {
            let e = match e {
                Ok(e) => e,
                Err(err) => return Some(Err(err.into())),
            };
            let visible = match e.session_id {
                None => false,
                Some(sid) => match visible(&reader, &seen, sid).await {
                    Ok(v) => v,
                    Err(err) => return Some(Err(err.into())),
                },
            };
            if !visible {
                return None;
            }
            if let Some(slot) = &slot {
                slot.set(e.position().to_string());
            }
            Some(Ok(e))
        }
    }))
}

/// Whether the caller may see the session, remembered for the subscription's life.
async fn visible(
    reader: &Reader,
    seen: &tokio::sync::Mutex<HashMap<Uuid, bool>>,
    session: Uuid,
) -> AppResult<bool> {
    let mut seen = seen.lock().await;
    if let Some(v) = seen.get(&session) {
        return Ok(*v);
    }
    let key = Id::<SessionRow>::new(session);
    let found = Fetch::fetch(reader, std::slice::from_ref(&key)).await?;
    let v = found.contains_key(&key);
    seen.insert(session, v);
    Ok(v)
}

crate::api::scalars::graphql_enum!(EventKind,);
