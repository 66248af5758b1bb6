//! The only file that names every GraphQL type: the root objects, merged from each entity's
//! part, and the schema built from them. Adding an entity adds a line here.

use async_graphql::{MergedObject, MergedSubscription};

use crate::api::exec::{Engine, Limits};
use crate::api::types::agent::{AgentsMutation, AgentsQuery};
use crate::api::types::audit::AuditQuery;
use crate::api::types::bug::{BugsMutation, BugsQuery};
use crate::api::types::comment::CommentsMutation;
use crate::api::types::event::EventsSubscription;
use crate::api::types::evidence::{EvidenceMutation, EvidenceQuery};
use crate::api::types::job::{JobsMutation, JobsQuery, JobsSubscription};
use crate::api::types::page::{PagesMutation, PagesQuery};
use crate::api::types::search::SearchQuery;
use crate::api::types::session::{SessionsMutation, SessionsQuery, SessionsSubscription};
use crate::api::types::trends::TrendsQuery;
use crate::api::types::user::{UsersMutation, UsersQuery};

#[derive(MergedObject, Default)]
pub struct Query(
    SessionsQuery,
    PagesQuery,
    BugsQuery,
    JobsQuery,
    UsersQuery,
    AuditQuery,
    AgentsQuery,
    SearchQuery,
    TrendsQuery,
    EvidenceQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    SessionsMutation,
    PagesMutation,
    BugsMutation,
    JobsMutation,
    UsersMutation,
    AgentsMutation,
    EvidenceMutation,
    CommentsMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(SessionsSubscription, JobsSubscription, EventsSubscription);

/// Subscriptions that send full states, so subscribers with the same operation, variables and
/// caller can share one execution: any message after joining is a valid first one.
const SHARED_SUBSCRIPTIONS: &[&str] = &["sessionProgress", "jobUpdated"];

/// The gateway's schema, as the engine runs it.
pub type AppSchema = Engine<Query, Mutation, Subscription>;

/// The schema with the default limits (tests, SDL export).
pub fn build_schema() -> AppSchema {
    build_schema_with(&Limits::default())
}

/// The schema with a deployment's limits.
pub fn build_schema_with(limits: &Limits) -> AppSchema {
    Engine::build(limits, SHARED_SUBSCRIPTIONS)
}

/// The SDL that `schema.graphql` must equal.
pub fn sdl() -> String {
    build_schema().sdl()
}
