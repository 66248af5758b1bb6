//! Evidence writes (each one transaction with its audit entry) and grouped reads.

use std::collections::HashMap;

use diesel::QueryableByName;
use diesel::prelude::OptionalExtension;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::{EvidenceLinkKind, EvidenceRow, EvidenceSource};
use crate::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::audit::repo::{self as audit, Entry};
use crate::store::batch::SlimTable;
use crate::store::scope::{Author, Scope};
use crate::store::sessions::repo::hold_row_of_session;
use crate::store::sql::{Bind, Sql};

/// Evidence is visible with its session.
impl SlimTable for EvidenceRow {
    const TABLE: &'static str = "evidence";
    const SESSION: &'static str = "session_id";
}

pub struct NewEvidence {
    pub bug_id: Uuid,
    pub execution_id: Option<Uuid>,
    pub source_type: EvidenceSource,
    pub summary: String,
    pub data: serde_json::Value,
    pub credibility: f64,
    pub links: Vec<(EvidenceLinkKind, Uuid)>,
}

/// Links `id` and `other` both ways. The other evidence must be of the same session.
async fn link(
    c: &mut Conn,
    session: Uuid,
    id: Uuid,
    kind: EvidenceLinkKind,
    other: Uuid,
) -> AppResult<()> {
    if id == other {
        return Err(AppError::bad_field(
            "otherId",
            "evidence cannot be linked to itself",
        ));
    }
    // The session is held already: another of its rows may be held directly.
    let mut q = Sql::new("SELECT count(*) AS n FROM evidence WHERE id = ");
    q.bind(Bind::Uuid(other))
        .push(" AND session_id = ")
        .bind(Bind::Uuid(session));
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    if q.get_result::<N>(c).await?.n == 0 {
        return Err(AppError::NotFound {
            entity: "evidence",
            id: other.to_string(),
        });
    }
    let mut q = Sql::new(
        "INSERT INTO evidence_links (evidence_id, other_id, kind) \
         SELECT a, b, k FROM (VALUES (",
    );
    q.bind(Bind::Uuid(id))
        .push("::uuid, ")
        .bind(Bind::Uuid(other))
        .push("::uuid), (")
        .bind(Bind::Uuid(other))
        .push("::uuid, ")
        .bind(Bind::Uuid(id))
        .push("::uuid)) AS v(a, b), (VALUES (")
        .bind(Bind::Text(kind.as_db().into()))
        .push(")) AS kk(k) ON CONFLICT DO NOTHING");
    q.execute(c).await?;
    Ok(())
}

/// Adds evidence to a bug the caller may see, with its links, in one transaction.
pub async fn add(conn: &mut Conn, actor: Author, e: NewEvidence) -> AppResult<EvidenceRow> {
    conn.transaction::<EvidenceRow, AppError, _>(async move |c| {
        let session = hold_row_of_session(c, &actor.scope, "bug", "bugs", e.bug_id).await?;
        if let Some(exec) = e.execution_id
            && hold_row_of_session(c, &actor.scope, "execution", "agent_executions", exec).await?
                != session
        {
            return Err(AppError::NotFound {
                entity: "execution",
                id: exec.to_string(),
            });
        }
        let id = Uuid::now_v7();
        let mut q = Sql::new(
            "INSERT INTO evidence (id, bug_id, session_id, execution_id, source_type, summary, \
             data, credibility) VALUES (",
        );
        q.bind(Bind::Uuid(id))
            .push(", ")
            .bind(Bind::Uuid(e.bug_id))
            .push(", ")
            .bind(Bind::Uuid(session))
            .push(", ")
            .bind(Bind::NullableUuid(e.execution_id))
            .push(", ")
            .bind(Bind::Text(e.source_type.as_db().into()))
            .push(", ")
            .bind(Bind::Text(e.summary))
            .push(", ")
            .bind(Bind::Json(e.data))
            .push(", ")
            .bind(Bind::Float(e.credibility))
            .push(") RETURNING *");
        let row: EvidenceRow = q.get_result(c).await?;
        for (kind, other) in e.links {
            link(c, session, id, kind, other).await?;
        }
        audit::record(
            c,
            &actor,
            Entry::row("addEvidence", "evidence", id, None, "evidence"),
        )
        .await?;
        Ok(row)
    })
    .await
}

#[derive(QueryableByName)]
struct Old {
    #[diesel(sql_type = diesel::sql_types::Text)]
    old: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    is_verified: bool,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
}

async fn lock(c: &mut Conn, scope: &Scope, id: Uuid) -> AppResult<Old> {
    let mut q = Sql::new(
        "SELECT to_jsonb(t)::text AS old, t.is_verified, t.session_id FROM evidence t WHERE t.id = ",
    );
    q.bind(Bind::Uuid(id));
    if let Some(v) = scope.visible(diesel::dsl::sql::<diesel::sql_types::Uuid>("t.session_id")) {
        q.push(" AND ").push_fragment(v);
    }
    q.push(" FOR NO KEY UPDATE");
    q.get_result::<Old>(c)
        .await
        .optional()?
        .ok_or_else(|| AppError::NotFound {
            entity: "evidence",
            id: id.to_string(),
        })
}

/// UNVERIFIED → VERIFIED, by the caller, now. Verifying twice is a refused move: of two racing
/// verifiers one wins and is recorded.
pub async fn verify(conn: &mut Conn, actor: Author, id: Uuid) -> AppResult<EvidenceRow> {
    conn.transaction::<EvidenceRow, AppError, _>(async move |c| {
        let old = lock(c, &actor.scope, id).await?;
        let mut q =
            Sql::new("UPDATE evidence SET is_verified = true, verified_at = now(), verified_by = ");
        q.bind(Bind::NullableUuid(
            Some(actor.user_id).filter(|u| !u.is_nil()),
        ))
        .push(" WHERE id = ")
        .bind(Bind::Uuid(id))
        .push(" AND NOT is_verified RETURNING *");
        let row: EvidenceRow =
            q.get_result(c)
                .await
                .optional()?
                .ok_or_else(|| AppError::InvalidTransition {
                    entity: "evidence",
                    from: if old.is_verified {
                        "VERIFIED"
                    } else {
                        "UNVERIFIED"
                    }
                    .into(),
                    to: "VERIFIED".into(),
                })?;
        audit::record(
            c,
            &actor,
            Entry::row("verifyEvidence", "evidence", id, Some(old.old), "evidence"),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// Links two pieces of evidence of one session (both ways).
pub async fn add_link(
    conn: &mut Conn,
    actor: Author,
    id: Uuid,
    kind: EvidenceLinkKind,
    other: Uuid,
) -> AppResult<EvidenceRow> {
    conn.transaction::<EvidenceRow, AppError, _>(async move |c| {
        // The session first, as in `add`: a link's insert holds the other evidence too.
        hold_row_of_session(c, &actor.scope, "evidence", "evidence", id).await?;
        let old = lock(c, &actor.scope, id).await?;
        link(c, old.session_id, id, kind, other).await?;
        let mut q = Sql::new("SELECT * FROM evidence WHERE id = ");
        q.bind(Bind::Uuid(id));
        let row: EvidenceRow = q.get_result(c).await?;
        audit::record(
            c,
            &actor,
            Entry {
                action: "linkEvidence",
                resource_type: "evidence",
                resource_id: Some(id),
                old: None,
                new: audit::New::Json(
                    serde_json::json!({ "kind": kind.as_db(), "otherId": other }),
                ),
            },
        )
        .await?;
        Ok(row)
    })
    .await
}

#[derive(QueryableByName)]
struct Credibility {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    bug_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Double)]
    credibility: f64,
}

/// Each bug's credibility: the mean credibility of its evidence, verified evidence counting
/// twice; bugs without evidence are absent. One grouped statement.
pub async fn credibility(conn: &mut Conn, bugs: &[Uuid]) -> AppResult<HashMap<Uuid, f64>> {
    let mut q = Sql::new(
        "SELECT bug_id, (sum(credibility * CASE WHEN is_verified THEN 2 ELSE 1 END) \
         / sum(CASE WHEN is_verified THEN 2 ELSE 1 END))::float8 AS credibility \
         FROM evidence WHERE bug_id = ANY(",
    );
    q.bind(Bind::Uuids(bugs.to_vec())).push(") GROUP BY bug_id");
    let rows: Vec<Credibility> = q.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.bug_id, r.credibility))
        .collect())
}

#[derive(QueryableByName)]
struct Linked {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    evidence_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    other_id: Uuid,
}

/// The ids each piece of evidence links to, by kind, oldest link first. One statement.
pub async fn links(
    conn: &mut Conn,
    ids: &[Uuid],
) -> AppResult<HashMap<(Uuid, EvidenceLinkKind), Vec<Uuid>>> {
    let mut q =
        Sql::new("SELECT evidence_id, kind, other_id FROM evidence_links WHERE evidence_id = ANY(");
    q.bind(Bind::Uuids(ids.to_vec()))
        .push(") ORDER BY evidence_id, kind, created_at, other_id");
    let rows: Vec<Linked> = q.load(conn).await?;
    let mut out: HashMap<(Uuid, EvidenceLinkKind), Vec<Uuid>> = HashMap::new();
    for r in rows {
        if let Some(kind) = EvidenceLinkKind::from_db(&r.kind) {
            out.entry((r.evidence_id, kind))
                .or_default()
                .push(r.other_id);
        }
    }
    Ok(out)
}

/// Demo evidence for `seed`: each bug an execution worked on (a session's first page's bugs)
/// gets that execution's analysis, credible as the bug's confidence, verified in sessions that
/// completed. Ids derive from the bug's, so seeding again adds nothing.
pub async fn seed(c: &mut Conn) -> AppResult<usize> {
    Ok(Sql::new(
        "INSERT INTO evidence (id, bug_id, session_id, execution_id, source_type, summary, data, \
         credibility, is_verified, verified_at, created_at, updated_at) \
         SELECT DISTINCT ON (b.id) md5(b.id::text || ':evidence')::uuid, b.id, b.session_id, e.id, \
         'ai_analysis', 'Reproduced by ' || a.name || ' on ' || b.title, \
         jsonb_build_object('model', a.model_name), b.confidence, s.status = 'completed', \
         CASE WHEN s.status = 'completed' THEN b.created_at + interval '1 hour' END, \
         b.created_at + interval '1 second', b.created_at + interval '1 second' \
         FROM bugs b JOIN agent_executions e ON e.page_id = b.page_id \
         JOIN agents a ON a.id = e.agent_id JOIN crawl_sessions s ON s.id = b.session_id \
         ORDER BY b.id, e.created_at, e.id ON CONFLICT DO NOTHING",
    )
    .execute(c)
    .await?)
}
