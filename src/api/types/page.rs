use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, ScalarType, SimpleObject, Value};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use async_graphql::parser::types::Field;
use async_graphql::{ContextSelectionSet, Positioned, ServerResult};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::api::connection::{Connection, arg, children, children_of_list, wanted_here};
use crate::api::context::{actor, detached, req};
use crate::api::exec::fast::{self, Leaf};
use crate::api::types::bug::{Bug, BugFilter, bug_list, bugs_connection};
use crate::api::types::session::{CrawlSession, load_session_here};
use crate::auth::Perm;
use crate::error::{AppError, AppResult};
use crate::store::batch::Id;
use crate::store::bugs::keys::BugParent;
use crate::store::page::Window;
use crate::store::pages::keys::{PageFilter, PageParent};
use crate::store::pages::model::{PageRow, PageStatus};
use crate::store::pages::repo::{self, NewPage};
use crate::store::pages::url::normalize_url;

#[derive(Clone)]
pub struct Page(pub Arc<PageRow>);

impl crate::api::connection::SlimNode for Page {
    const NEEDS: &'static [(&'static str, &'static str)] = &[
        ("session", "session_id"),
        ("url", "url"),
        ("title", "title"),
        ("status", "status"),
        ("depth", "depth"),
        ("parent", "parent_page_id"),
        ("analysisResult", "analysis_result"),
        ("crawledAt", "crawled_at"),
        ("updatedAt", "updated_at"),
    ];
}

impl From<PageRow> for Page {
    fn from(row: PageRow) -> Self {
        Page(Arc::new(row))
    }
}

/// The generated resolvers of `Page`; [`Page`]'s own `OutputType` answers plain columns without
/// them (see `api::exec::fast`).
pub struct PageFields(Arc<PageRow>);

/// A list of pages resolves its pages' `bugs` and `children` with one loader call each.
fn batch<'a>(
    items: &'a [&'a Page],
    field: &'a Positioned<Field>,
    ctxs: &'a [ContextSelectionSet<'a>],
) -> Option<BoxFuture<'a, Vec<ServerResult<Value>>>> {
    let ids = items.iter().map(|p| p.0.id);
    match field.node.name.node.as_str() {
        "bugs" => Some(
            children_of_list(
                ctxs,
                field,
                ids.map(BugParent::Page).collect(),
                |ctx| {
                    let after: Option<String> = arg(ctx, "after")?;
                    Ok(bug_list(
                        arg(ctx, "first")?,
                        after.as_deref(),
                        arg(ctx, "filter")?,
                    )?)
                },
                Bug,
            )
            .boxed(),
        ),
        "children" => Some(
            children_of_list(
                ctxs,
                field,
                ids.map(PageParent::Page).collect(),
                |ctx| {
                    let after: Option<String> = arg(ctx, "after")?;
                    let window = Window::parse(arg(ctx, "first")?, 50, after.as_deref())?;
                    Ok((PageFilter::default(), window))
                },
                Page,
            )
            .boxed(),
        ),
        _ => None,
    }
}

fast::fast_output_type!(Page, PageFields, "Page", batch: batch, |row| {
    "id" => Leaf::Uuid(row.id),
    "url" => Leaf::Str(&row.url),
    "title" => Leaf::opt_str(&row.title),
    "status" => Leaf::enumeration(row.status),
    "depth" => Leaf::Other(ScalarType::to_value(&row.depth)),
    "crawledAt" => Leaf::Other(
        row.crawled_at
            .as_ref()
            .map_or(Value::Null, ScalarType::to_value),
    ),
    "createdAt" => Leaf::Other(ScalarType::to_value(&row.created_at)),
    "updatedAt" => Leaf::Other(ScalarType::to_value(&row.updated_at)),
});

/// One URL of a crawl, with its analysis and the bugs found on it.
#[Object(name = "Page")]
impl PageFields {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<CrawlSession> {
        Ok(load_session_here(ctx, self.0.session_id)
            .await?
            .ok_or(AppError::NotFound {
                entity: "session",
                id: self.0.session_id.to_string(),
            })?)
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    async fn status(&self) -> PageStatus {
        self.0.status
    }
    async fn depth(&self) -> i32 {
        self.0.depth
    }
    /// The page this one was discovered from; null for entry pages.
    async fn parent(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Page>> {
        match self.0.parent_page_id {
            Some(id) => Ok(load_page_here(ctx, id).await?),
            None => Ok(None),
        }
    }
    /// Pages discovered from this one.
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn children(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<Page>> {
        Ok(pages_connection(
            ctx,
            PageParent::Page(self.0.id),
            PageFilter::default(),
            Window::parse(first, 50, after.as_deref())?,
        )
        .await?)
    }
    async fn analysis_result(&self) -> Option<Json<serde_json::Value>> {
        self.0.analysis_result.as_ref().map(|j| Json(j.value()))
    }
    async fn crawled_at(&self) -> Option<DateTime<Utc>> {
        self.0.crawled_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    #[graphql(complexity = "crate::api::connection::cost(first, 50, child_complexity)")]
    async fn bugs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        filter: Option<BugFilter>,
    ) -> async_graphql::Result<Connection<Bug>> {
        let (filter, window) = bug_list(first, after.as_deref(), filter)?;
        Ok(bugs_connection(ctx, BugParent::Page(self.0.id), filter, window).await?)
    }
}

/// Loads the page a field returns (`page(id)`, `Bug.page`, `Page.parent`), with only the
/// columns the field's selection reads.
pub async fn load_page_here(ctx: &Context<'_>, id: Uuid) -> AppResult<Option<Page>> {
    let cols = wanted_here::<PageRow, Page>(ctx);
    Ok(req(ctx)?
        .loader
        .load_one(Id::<PageRow>::with_cols(id, cols))
        .await?
        .map(Page))
}

/// A parent's page list, through the one child-list loader.
pub async fn pages_connection(
    ctx: &Context<'_>,
    parent: PageParent,
    filter: PageFilter,
    window: Window,
) -> AppResult<Connection<Page>> {
    children(ctx, parent, filter, window, Page).await
}

#[derive(Default)]
pub struct PagesQuery;

#[Object]
impl PagesQuery {
    /// One page by id; null when it does not exist.
    async fn page(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Page>> {
        Ok(load_page_here(ctx, id).await?)
    }
}

/// Most pages one `recordPages` call accepts.
pub const MAX_PAGES_PER_CALL: usize = 5_000;
const MAX_TITLE_LEN: usize = 1_000;

#[derive(InputObject)]
pub struct PageInput {
    pub url: String,
    pub title: Option<String>,
    pub depth: i32,
    /// URL of the page this one was found on: in the same batch or already recorded.
    pub parent_url: Option<String>,
}

#[derive(SimpleObject)]
pub struct RecordPagesPayload {
    /// Pages newly stored by this call.
    pub inserted: i32,
    /// Inputs that named a URL already stored or repeated in the batch.
    pub duplicates: i32,
    /// One page per distinct input URL, in input order, new or not.
    pub pages: Vec<Page>,
}

fn validate_pages(pages: Vec<PageInput>) -> AppResult<Vec<NewPage>> {
    if pages.len() > MAX_PAGES_PER_CALL {
        return Err(AppError::bad_field(
            "pages",
            format!(
                "at most {MAX_PAGES_PER_CALL} pages per call, got {}",
                pages.len()
            ),
        ));
    }
    pages
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let url = normalize_url(&p.url)
                .map_err(|m| AppError::bad_field(format!("pages[{i}].url"), m))?;
            let parent_url = p
                .parent_url
                .as_deref()
                .map(normalize_url)
                .transpose()
                .map_err(|m| AppError::bad_field(format!("pages[{i}].parentUrl"), m))?;
            if p.depth < 0 {
                return Err(AppError::bad_field(
                    format!("pages[{i}].depth"),
                    "depth must not be negative",
                ));
            }
            if p.title
                .as_ref()
                .is_some_and(|t| t.chars().count() > MAX_TITLE_LEN)
            {
                return Err(AppError::bad_field(
                    format!("pages[{i}].title"),
                    format!("title is longer than {MAX_TITLE_LEN} characters"),
                ));
            }
            Ok(NewPage {
                url,
                title: p.title,
                depth: p.depth,
                parent_url,
            })
        })
        .collect()
}

#[derive(Default)]
pub struct PagesMutation;

#[Object]
impl PagesMutation {
    /// Records up to 5,000 discovered pages atomically; idempotent on (session, normalized URL).
    /// Only while the session is PENDING or RUNNING.
    async fn record_pages(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
        pages: Vec<PageInput>,
    ) -> async_graphql::Result<RecordPagesPayload> {
        let actor = actor(ctx, Perm::Ingest)?;
        let items = validate_pages(pages)?;
        let rec = detached(ctx, move |mut conn| async move {
            repo::record(&mut conn, actor, session_id, items).await
        })
        .await?;
        Ok(RecordPagesPayload {
            inserted: rec.inserted as i32,
            duplicates: rec.duplicates as i32,
            pages: rec.pages.into_iter().map(Page::from).collect(),
        })
    }

    /// Moves a page along its lifecycle; ANALYZED and FAILED stamp `crawledAt`.
    async fn set_page_status(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        status: PageStatus,
        analysis_result: Option<Json<serde_json::Value>>,
    ) -> async_graphql::Result<Page> {
        let actor = actor(ctx, Perm::Ingest)?;
        let ar = analysis_result.map(|j| j.0).filter(|v| !v.is_null());
        let row = detached(ctx, move |mut conn| async move {
            repo::set_status(&mut conn, actor, id, status, ar).await
        })
        .await?;
        Ok(Page::from(row))
    }
}

crate::api::scalars::graphql_enum!(crate::store::pages::model::PageStatus,);
