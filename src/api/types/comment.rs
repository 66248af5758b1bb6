use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::connection::{Connection, children};
use crate::api::context::{actor, detached};
use crate::api::scalars::json_object;
use crate::api::types::agent::{Agent, load_agent};
use crate::api::types::user::{User, load_user};
use crate::auth::{Perm, Role};
use crate::error::{AppError, AppResult};
use crate::store::comments::keys::{CommentFilter, CommentParent};
use crate::store::comments::model::{CommentRow, MAX_BODY_LEN};
use crate::store::comments::repo::{self, NewComment};
use crate::store::page::Window;

/// A comment on a bug, by a user or by an agent.
#[derive(Clone)]
pub struct Comment(pub Arc<CommentRow>);

impl From<CommentRow> for Comment {
    fn from(row: CommentRow) -> Self {
        Comment(Arc::new(row))
    }
}

impl crate::api::connection::ListItem for Comment {}

impl crate::api::connection::SlimNode for Comment {
    const NEEDS: &'static [(&'static str, &'static str)] = &[];
}

#[Object]
impl Comment {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// Who posted it; the only one who may edit or delete it.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        match self.0.author_id {
            Some(id) => Ok(load_user(ctx, id).await?),
            None => Ok(None),
        }
    }
    /// The agent that wrote it, when an agent did.
    async fn agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Agent>> {
        match self.0.agent_id {
            Some(id) => Ok(load_agent(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn is_ai_generated(&self) -> bool {
        self.0.is_ai_generated
    }
    /// How an AI generated it (model, prompt version, …).
    async fn ai_metadata(&self) -> Json<serde_json::Value> {
        Json(self.0.ai_metadata.value())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the author last edited it.
    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.0.edited_at
    }
}

/// A bug's comments, newest first, through the one child-list loader.
pub async fn comments_connection(
    ctx: &Context<'_>,
    bug: Uuid,
    first: Option<i32>,
    after: Option<String>,
) -> AppResult<Connection<Comment>> {
    let window = Window::parse(first, 50, after.as_deref())?;
    children(ctx, CommentParent::Bug(bug), CommentFilter, window, Comment).await
}

#[derive(InputObject)]
pub struct CommentInput {
    pub bug_id: Uuid,
    /// 1–10000 characters.
    pub body: String,
    /// Post it as this agent's comment (it is then AI-generated); service accounts and staff
    /// only.
    pub agent_id: Option<Uuid>,
    /// Marks a comment an AI wrote; always true with `agentId`.
    #[graphql(default)]
    pub is_ai_generated: bool,
    /// A JSON object; defaults to `{}`.
    pub ai_metadata: Option<Json<serde_json::Value>>,
}

fn check_body(field: &str, body: &str) -> AppResult<()> {
    if body.trim().is_empty() || body.chars().count() > MAX_BODY_LEN {
        return Err(AppError::bad_field(
            field,
            format!("the body must have 1 to {MAX_BODY_LEN} characters"),
        ));
    }
    Ok(())
}

#[derive(Default)]
pub struct CommentsMutation;

#[Object]
impl CommentsMutation {
    /// Comments a bug the caller may see.
    async fn add_comment(
        &self,
        ctx: &Context<'_>,
        input: CommentInput,
    ) -> async_graphql::Result<Comment> {
        let actor = actor(ctx, Perm::Ingest)?;
        // Agents speak through the service accounts that run them (or staff), not through
        // any user who knows an agent's id.
        if input.agent_id.is_some() && actor.role == Role::User {
            return Err(AppError::Forbidden(
                "only service accounts and staff may post as an agent".into(),
            )
            .into());
        }
        check_body("input.body", &input.body)?;
        let ai_metadata = json_object("input.aiMetadata", input.ai_metadata)?
            .unwrap_or_else(|| serde_json::json!({}));
        let c = NewComment {
            bug_id: input.bug_id,
            is_ai_generated: input.is_ai_generated || input.agent_id.is_some(),
            agent_id: input.agent_id,
            body: input.body,
            ai_metadata,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::add(&mut conn, actor, c).await
        })
        .await?;
        Ok(Comment::from(row))
    }

    /// Replaces the body of the caller's own comment; someone else's is FORBIDDEN.
    async fn edit_comment(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        body: String,
    ) -> async_graphql::Result<Comment> {
        let actor = actor(ctx, Perm::Ingest)?;
        check_body("body", &body)?;
        let row = detached(ctx, move |mut conn| async move {
            repo::edit(&mut conn, actor, id, body).await
        })
        .await?;
        Ok(Comment::from(row))
    }

    /// Deletes the caller's own comment (it stays in the database and the audit log, hidden
    /// from every list). Returns the id.
    async fn delete_comment(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Uuid> {
        let actor = actor(ctx, Perm::Ingest)?;
        Ok(detached(ctx, move |mut conn| async move {
            repo::delete(&mut conn, actor, id).await
        })
        .await?)
    }
}
