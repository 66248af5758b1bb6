use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::connection::{Connection, children, wanted_here};
use crate::api::context::{actor, detached, req};
use crate::api::scalars::json_object;
use crate::api::types::agent::AgentExecution;
use crate::api::types::bug::Bug;
use crate::api::types::user::{User, load_user};
use crate::auth::Perm;
use crate::error::{AppError, AppResult};
use crate::store::agents::model::ExecutionRow;
use crate::store::batch::Id;
use crate::store::bugs::model::BugRow;
use crate::store::evidence::keys::{CredibilityKey, EvidenceFilter, EvidenceParent, LinksKey};
use crate::store::evidence::model::{
    EvidenceLinkKind, EvidenceRow, EvidenceSource, MAX_LINKS, MAX_SUMMARY_LEN,
};
use crate::store::evidence::repo::{self, NewEvidence};
use crate::store::page::Window;

/// One piece of evidence for a bug: where it comes from, how credible it is, who verified it,
/// and which other evidence it supports or contradicts.
#[derive(Clone)]
pub struct Evidence(pub Arc<EvidenceRow>);

impl From<EvidenceRow> for Evidence {
    fn from(row: EvidenceRow) -> Self {
        Evidence(Arc::new(row))
    }
}

impl crate::api::connection::ListItem for Evidence {}

impl crate::api::connection::SlimNode for Evidence {
    const NEEDS: &'static [(&'static str, &'static str)] = &[];
}

async fn load_evidence(ctx: &Context<'_>, ids: &[Uuid]) -> AppResult<Vec<Evidence>> {
    let keys: Vec<Id<EvidenceRow>> = ids.iter().map(|id| Id::new(*id)).collect();
    let found = req(ctx)?.loader.load_many(keys.iter().copied()).await?;
    Ok(keys
        .iter()
        .filter_map(|k| found.get(k).cloned().map(Evidence))
        .collect())
}

async fn linked(ctx: &Context<'_>, id: Uuid, kind: EvidenceLinkKind) -> AppResult<Vec<Evidence>> {
    let ids = req(ctx)?.loader.load_one(LinksKey(id, kind)).await?;
    load_evidence(ctx, ids.as_deref().unwrap_or_default()).await
}

#[Object]
impl Evidence {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn bug(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Bug>> {
        let cols = wanted_here::<BugRow, Bug>(ctx);
        Ok(req(ctx)?
            .loader
            .load_one(Id::<BugRow>::with_cols(self.0.bug_id, cols))
            .await
            .map_err(AppError::from)?
            .map(Bug))
    }
    /// The agent execution that produced it, if any.
    async fn execution(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<AgentExecution>> {
        let Some(id) = self.0.execution_id else {
            return Ok(None);
        };
        Ok(req(ctx)?
            .loader
            .load_one(Id::<ExecutionRow>::new(id))
            .await
            .map_err(AppError::from)?
            .map(AgentExecution))
    }
    async fn source_type(&self) -> EvidenceSource {
        self.0.source_type
    }
    async fn summary(&self) -> &str {
        &self.0.summary
    }
    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.data.value())
    }
    /// 0–1.
    async fn credibility(&self) -> f64 {
        self.0.credibility
    }
    async fn is_verified(&self) -> bool {
        self.0.is_verified
    }
    async fn verified_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        match self.0.verified_by {
            Some(id) => Ok(load_user(ctx, id).await?),
            None => Ok(None),
        }
    }
    async fn verified_at(&self) -> Option<DateTime<Utc>> {
        self.0.verified_at
    }
    /// Evidence that supports the same finding.
    async fn related(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Evidence>> {
        Ok(linked(ctx, self.0.id, EvidenceLinkKind::Related).await?)
    }
    /// Evidence that contradicts this one.
    async fn contradicts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Evidence>> {
        Ok(linked(ctx, self.0.id, EvidenceLinkKind::Contradicts).await?)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A parent's evidence, oldest first, through the one child-list loader.
pub async fn evidence_connection(
    ctx: &Context<'_>,
    parent: EvidenceParent,
    first: Option<i32>,
    after: Option<String>,
    verified: Option<bool>,
) -> AppResult<Connection<Evidence>> {
    let window = Window::parse(first, 50, after.as_deref())?;
    children(ctx, parent, EvidenceFilter { verified }, window, Evidence).await
}

/// A bug's credibility: one grouped statement for every bug of a level.
pub async fn bug_credibility(ctx: &Context<'_>, bug: Uuid) -> AppResult<Option<f64>> {
    Ok(req(ctx)?
        .loader
        .load_one(CredibilityKey(bug))
        .await?
        .flatten())
}

#[derive(Default)]
pub struct EvidenceQuery;

#[Object]
impl EvidenceQuery {
    /// One piece of evidence by id; null when it does not exist or is not the caller's to see.
    async fn evidence(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<Evidence>> {
        Ok(load_evidence(ctx, &[id]).await?.pop())
    }
}

#[derive(InputObject)]
pub struct EvidenceInput {
    pub bug_id: Uuid,
    /// The agent execution that produced it (of the bug's session).
    pub execution_id: Option<Uuid>,
    pub source_type: EvidenceSource,
    /// 1–2000 characters.
    pub summary: String,
    /// Any JSON object; defaults to `{}`.
    pub data: Option<Json<serde_json::Value>>,
    /// 0–1.
    pub credibility: f64,
    /// Evidence of the same session this supports.
    #[graphql(default)]
    pub related_to: Vec<Uuid>,
    /// Evidence of the same session this contradicts.
    #[graphql(default)]
    pub contradicts: Vec<Uuid>,
}

#[derive(Default)]
pub struct EvidenceMutation;

#[Object]
impl EvidenceMutation {
    /// Adds evidence to a bug the caller may see, linked to other evidence of its session.
    async fn add_evidence(
        &self,
        ctx: &Context<'_>,
        input: EvidenceInput,
    ) -> async_graphql::Result<Evidence> {
        let actor = actor(ctx, Perm::Ingest)?;
        if input.summary.trim().is_empty() || input.summary.chars().count() > MAX_SUMMARY_LEN {
            return Err(AppError::bad_field(
                "input.summary",
                format!("summary must have 1 to {MAX_SUMMARY_LEN} characters"),
            )
            .into());
        }
        if !(0.0..=1.0).contains(&input.credibility) {
            return Err(AppError::bad_field(
                "input.credibility",
                "credibility must be between 0 and 1",
            )
            .into());
        }
        let data = json_object("input.data", input.data)?.unwrap_or_else(|| serde_json::json!({}));
        let links: Vec<(EvidenceLinkKind, Uuid)> = input
            .related_to
            .iter()
            .map(|id| (EvidenceLinkKind::Related, *id))
            .chain(
                input
                    .contradicts
                    .iter()
                    .map(|id| (EvidenceLinkKind::Contradicts, *id)),
            )
            .collect();
        if links.len() > MAX_LINKS {
            return Err(AppError::bad_field(
                "input.relatedTo",
                format!("at most {MAX_LINKS} links"),
            )
            .into());
        }
        let e = NewEvidence {
            bug_id: input.bug_id,
            execution_id: input.execution_id,
            source_type: input.source_type,
            summary: input.summary,
            data,
            credibility: input.credibility,
            links,
        };
        let row = detached(ctx, move |mut conn| async move {
            repo::add(&mut conn, actor, e).await
        })
        .await?;
        Ok(Evidence::from(row))
    }

    /// Marks evidence verified by the caller, now. Verifying it again is INVALID_TRANSITION.
    async fn verify_evidence(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Evidence> {
        let actor = actor(ctx, Perm::ReviewBugs)?;
        let row = detached(ctx, move |mut conn| async move {
            repo::verify(&mut conn, actor, id).await
        })
        .await?;
        Ok(Evidence::from(row))
    }

    /// Links two pieces of evidence of one session, both ways.
    async fn link_evidence(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        other_id: Uuid,
        kind: EvidenceLinkKind,
    ) -> async_graphql::Result<Evidence> {
        let actor = actor(ctx, Perm::Ingest)?;
        let row = detached(ctx, move |mut conn| async move {
            repo::add_link(&mut conn, actor, id, kind, other_id).await
        })
        .await?;
        Ok(Evidence::from(row))
    }
}

crate::api::scalars::graphql_enum!(
    crate::store::evidence::model::EvidenceSource,
    crate::store::evidence::model::EvidenceLinkKind,
);
