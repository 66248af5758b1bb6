//! Comment writes: each one transaction with its audit entry.

use diesel::QueryableByName;
use diesel::prelude::OptionalExtension;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::CommentRow;
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry};
use crate::store::scope::Author;
use crate::store::sessions::repo::hold_row_of_session;
use crate::store::sql::{Bind, Sql};

pub struct NewComment {
    pub bug_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub body: String,
    pub is_ai_generated: bool,
    pub ai_metadata: serde_json::Value,
}

fn entry(action: &'static str, id: Uuid, old: Option<String>) -> Entry {
    Entry::row(action, "comment", id, old, "bug_comments")
}

/// Comments a bug the caller may see, as the caller (and, with `agent_id`, as that agent).
pub async fn add(conn: &mut Conn, actor: Author, c: NewComment) -> AppResult<CommentRow> {
    conn.transaction::<CommentRow, AppError, _>(async move |tx| {
        let session = hold_row_of_session(tx, &actor.scope, "bug", "bugs", c.bug_id).await?;
        if let Some(agent) = c.agent_id {
            let mut q = Sql::new("SELECT count(*) AS n FROM agents WHERE id = ");
            q.bind(Bind::Uuid(agent));
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            if q.get_result::<N>(tx).await?.n == 0 {
                return Err(AppError::NotFound {
                    entity: "agent",
                    id: agent.to_string(),
                });
            }
        }
        let id = Uuid::now_v7();
        let mut q = Sql::new(
            "INSERT INTO bug_comments (id, bug_id, session_id, author_id, agent_id, body, \
             is_ai_generated, ai_metadata) VALUES (",
        );
        q.bind(Bind::Uuid(id))
            .push(", ")
            .bind(Bind::Uuid(c.bug_id))
            .push(", ")
            .bind(Bind::Uuid(session))
            .push(", ")
            .bind(Bind::NullableUuid(
                Some(actor.user_id).filter(|u| !u.is_nil()),
            ))
            .push(", ")
            .bind(Bind::NullableUuid(c.agent_id))
            .push(", ")
            .bind(Bind::Text(c.body))
            .push(", ")
            .bind(Bind::Bool(c.is_ai_generated))
            .push(", ")
            .bind(Bind::Json(c.ai_metadata))
            .push(") RETURNING *");
        let row: CommentRow = q.get_result(tx).await?;
        audit::record(tx, &actor, entry("addComment", id, None)).await?;
        Ok(row)
    })
    .await
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Text)]
    old: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    author_id: Option<Uuid>,
}

/// Locks a live comment the scope may see and checks that the actor wrote it: someone else's
/// visible comment is `FORBIDDEN`, an invisible or deleted one `NOT_FOUND`.
async fn lock_own(c: &mut Conn, actor: &Author, id: Uuid, action: &str) -> AppResult<String> {
    let mut q =
        Sql::new("SELECT to_jsonb(t)::text AS old, t.author_id FROM bug_comments t WHERE t.id = ");
    q.bind(Bind::Uuid(id)).push(" AND t.deleted_at IS NULL");
    if let Some(v) = actor
        .scope
        .visible(diesel::dsl::sql::<diesel::sql_types::Uuid>("t.session_id"))
    {
        q.push(" AND ").push_fragment(v);
    }
    q.push(" FOR NO KEY UPDATE");
    let locked = q
        .get_result::<Locked>(c)
        .await
        .optional()?
        .ok_or_else(|| AppError::NotFound {
            entity: "comment",
            id: id.to_string(),
        })?;
    if locked.author_id != Some(actor.user_id) {
        return Err(AppError::Forbidden(format!(
            "only the author of a comment may {action} it"
        )));
    }
    Ok(locked.old)
}

/// Replaces the body of the actor's own comment.
pub async fn edit(conn: &mut Conn, actor: Author, id: Uuid, body: String) -> AppResult<CommentRow> {
    conn.transaction::<CommentRow, AppError, _>(async move |c| {
        let old = lock_own(c, &actor, id, "edit").await?;
        let mut q = Sql::new("UPDATE bug_comments SET body = ");
        q.bind(Bind::Text(body))
            .push(", edited_at = now() WHERE id = ")
            .bind(Bind::Uuid(id))
            .push(" RETURNING *");
        let row: CommentRow = q.get_result(c).await?;
        audit::record(c, &actor, entry("editComment", id, Some(old))).await?;
        Ok(row)
    })
    .await
}

/// Marks the actor's own comment deleted: lists and reads leave it out from then on.
pub async fn delete(conn: &mut Conn, actor: Author, id: Uuid) -> AppResult<Uuid> {
    conn.transaction::<Uuid, AppError, _>(async move |c| {
        let old = lock_own(c, &actor, id, "delete").await?;
        let mut q = Sql::new("UPDATE bug_comments SET deleted_at = now() WHERE id = ");
        q.bind(Bind::Uuid(id));
        q.execute(c).await?;
        audit::record(c, &actor, entry("deleteComment", id, Some(old))).await?;
        Ok(id)
    })
    .await
}

/// Demo comments for `seed`: the agent behind each piece of seeded evidence comments its bug.
/// Ids derive from the evidence's, so seeding again adds nothing.
pub async fn seed(c: &mut Conn) -> AppResult<usize> {
    Ok(Sql::new(
        "INSERT INTO bug_comments (id, bug_id, session_id, agent_id, body, is_ai_generated, \
         ai_metadata, created_at, updated_at) \
         SELECT md5(ev.id::text || ':comment')::uuid, ev.bug_id, ev.session_id, e.agent_id, \
         'Confirmed: ' || ev.summary || '.', true, jsonb_build_object('model', a.model_name), \
         ev.created_at + interval '1 second', ev.created_at + interval '1 second' \
         FROM evidence ev JOIN agent_executions e ON e.id = ev.execution_id \
         JOIN agents a ON a.id = e.agent_id ON CONFLICT DO NOTHING",
    )
    .execute(c)
    .await?)
}
