//! Who is asking, as the store needs to know it: which rows they may see ([`Scope`], enforced by
//! the one visibility predicate [`Visible`]) and who they are when they write ([`Author`], as the
//! audit log records them). Which role gets which scope is decided above, by `auth`.

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Uuid as SqlUuid};
use uuid::Uuid;

use crate::store::users::model::Role;

/// Which sessions (and so pages, bugs and jobs) a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    /// Sessions the user owns, and the sessions of projects the user owns.
    Owner(Uuid),
}

impl Scope {
    /// The predicate that keeps rows whose session id is `session` (a schema column such as
    /// `pages::session_id`, or an aliased one in raw SQL) to this scope; `None` when everything
    /// is visible. Rows without a session are visible to `All` only.
    pub fn visible<C>(&self, session: C) -> Option<Visible<C>>
    where
        C: Expression + QueryFragment<Pg>,
    {
        match *self {
            Scope::All => None,
            Scope::Owner(user) => Some(Visible { session, user }),
        }
    }
}

/// The one visibility predicate: the row's session is owned by the user, or belongs to a project
/// the user owns. A diesel expression, so DSL queries filter with it and raw statements embed it
/// (`Sql::push_fragment`).
#[derive(Debug, Clone, Copy)]
pub struct Visible<C> {
    session: C,
    user: Uuid,
}

impl<C: QueryFragment<Pg>> QueryFragment<Pg> for Visible<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("EXISTS (SELECT 1 FROM crawl_sessions vis WHERE vis.id = ");
        self.session.walk_ast(out.reborrow())?;
        out.push_sql(" AND (vis.owner_id = ");
        out.push_bind_param::<SqlUuid, _>(&self.user)?;
        out.push_sql(" OR vis.project_id IN (SELECT p.id FROM projects p WHERE p.owner_id = ");
        out.push_bind_param::<SqlUuid, _>(&self.user)?;
        out.push_sql(")))");
        Ok(())
    }
}

impl<C> QueryId for Visible<C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C> Expression for Visible<C> {
    type SqlType = Bool;
}

impl<QS, C: AppearsOnTable<QS>> AppearsOnTable<QS> for Visible<C> {}

impl<QS, C: AppearsOnTable<QS>> SelectableExpression<QS> for Visible<C> {}

impl<C> ValidGrouping<()> for Visible<C> {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

/// Who makes a change: what they may touch and what the audit log records of them.
#[derive(Debug, Clone)]
pub struct Author {
    /// Nil for system work (the lease reaper), which has no user row.
    pub user_id: Uuid,
    pub subject: String,
    pub role: Role,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    pub scope: Scope,
}

impl Author {
    /// Background work of the gateway itself, such as reaping expired job leases.
    pub fn system(subject: &str) -> Self {
        Author {
            user_id: Uuid::nil(),
            subject: subject.to_owned(),
            role: Role::Admin,
            request_id: None,
            scope: Scope::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_visible_to_all_and_owners_get_one_predicate() {
        let col = || diesel::dsl::sql::<SqlUuid>("t.session_id");
        assert!(Scope::All.visible(col()).is_none());
        let v = Scope::Owner(Uuid::nil())
            .visible(col())
            .expect("owners are filtered");
        let text = diesel::debug_query::<Pg, _>(&crate::store::sql::Sql::fragment(v)).to_string();
        assert!(
            text.starts_with(
                "EXISTS (SELECT 1 FROM crawl_sessions vis WHERE vis.id = t.session_id AND \
                 (vis.owner_id = $1 OR vis.project_id IN (SELECT p.id FROM projects p WHERE \
                 p.owner_id = $2)))"
            ),
            "{text}"
        );
    }
}
