//! Who is calling, and what they may do.
//!
//! Authentication (`jwt`, `Authenticator`) turns a bearer token into a [`Principal`], provisioning
//! its user on first sight. Authorization has two halves: [`Principal::require`] refuses an
//! operation the caller's role does not allow (`FORBIDDEN`), and [`Principal::scope`] picks the
//! [`Scope`] that filters every query of the store to what the caller may see, so someone
//! else's resource behaves as if it did not exist.
//!
//! Plain data and policy: no GraphQL, no SQL of its own.

pub mod authenticator;
pub mod jwt;

use uuid::Uuid;

use crate::error::{AppError, AppResult};
pub use crate::store::scope::{Author, Scope};
pub use crate::store::users::model::Role;
pub use authenticator::Authenticator;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub subject: String,
    pub role: Role,
}

/// Who makes a change, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
}

impl Actor {
    pub fn scope(&self) -> Scope {
        self.principal.scope()
    }

    /// The caller as the store records the changes it makes.
    pub fn author(&self) -> Author {
        let p = &self.principal;
        Author {
            user_id: p.user_id,
            subject: p.subject.clone(),
            role: p.role,
            request_id: self.request_id.clone(),
            scope: p.scope(),
        }
    }
}

/// Operations that not every role may perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Create, start, complete, fail, cancel and delete sessions.
    ManageSessions,
    /// recordPages, reportBugs, setPageStatus, addSessionCost.
    Ingest,
    /// validateBug, markBugReported, dismissBug, reopenBug.
    ReviewBugs,
    /// enqueueJob and cancelJob.
    QueueJobs,
    /// claimJob, heartbeatJob, completeJob, failJob: what workers do.
    RunJobs,
    /// registerAgent and updateAgent: the agent registry.
    ManageAgents,
    CreateProjects,
    /// List users.
    SeeUsers,
    /// Change users' roles and deactivate them.
    AdministerUsers,
    ReadAuditLog,
}

impl Principal {
    /// May this caller's role perform `perm` at all? Which rows it may touch is the scope's job.
    pub fn allows(&self, perm: Perm) -> bool {
        use Perm as P;
        use Role as R;
        match self.role {
            R::Admin => true,
            R::Manager => !matches!(perm, P::AdministerUsers | P::ReadAuditLog),
            R::User => matches!(
                perm,
                P::ManageSessions | P::Ingest | P::ReviewBugs | P::QueueJobs | P::CreateProjects
            ),
            R::Service => matches!(
                perm,
                P::Ingest | P::QueueJobs | P::RunJobs | P::ManageAgents
            ),
        }
    }

    pub fn require(&self, perm: Perm) -> AppResult<()> {
        if self.allows(perm) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "the {} role may not do this",
                self.role.as_db()
            )))
        }
    }

    /// The rows this caller may see and change.
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin | Role::Manager | Role::Service => Scope::All,
            Role::User => Scope::Owner(self.user_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_role(role: Role) -> Principal {
        Principal {
            user_id: Uuid::nil(),
            subject: "t".into(),
            role,
        }
    }

    /// The access table of the README, written out again.
    #[test]
    fn roles_allow_what_the_access_table_says() {
        use Perm as P;
        let all = [
            P::ManageSessions,
            P::Ingest,
            P::ReviewBugs,
            P::QueueJobs,
            P::RunJobs,
            P::ManageAgents,
            P::CreateProjects,
            P::SeeUsers,
            P::AdministerUsers,
            P::ReadAuditLog,
        ];
        let allowed = |role: Role| -> Vec<P> {
            all.iter()
                .copied()
                .filter(|p| as_role(role).allows(*p))
                .collect()
        };
        assert_eq!(allowed(Role::Admin), all.to_vec());
        assert_eq!(
            allowed(Role::Manager),
            vec![
                P::ManageSessions,
                P::Ingest,
                P::ReviewBugs,
                P::QueueJobs,
                P::RunJobs,
                P::ManageAgents,
                P::CreateProjects,
                P::SeeUsers
            ]
        );
        assert_eq!(
            allowed(Role::User),
            vec![
                P::ManageSessions,
                P::Ingest,
                P::ReviewBugs,
                P::QueueJobs,
                P::CreateProjects
            ]
        );
        assert_eq!(
            allowed(Role::Service),
            vec![P::Ingest, P::QueueJobs, P::RunJobs, P::ManageAgents]
        );
        assert_eq!(
            as_role(Role::Service)
                .require(P::AdministerUsers)
                .map_err(|e| e.code()),
            Err("FORBIDDEN")
        );
    }

    #[test]
    fn only_users_are_scoped() {
        assert_eq!(as_role(Role::Admin).scope(), Scope::All);
        assert_eq!(as_role(Role::Service).scope(), Scope::All);
        assert_eq!(as_role(Role::User).scope(), Scope::Owner(Uuid::nil()));
    }
}
