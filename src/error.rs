//! The one error type of the gateway and its machine-readable codes.
//!
//! Plain data: it names no GraphQL or database type. The store turns database and pool failures
//! into it (`store`), and the API attaches it to GraphQL errors in one place (`api::errors`).

use std::sync::Arc;

/// Every failure a resolver, loader or repository can report. Clients branch on the `code`
/// extension, so each variant maps to exactly one code in [`AppError::code`].
///
/// Deliberately not `Display`: async-graphql converts any `Display` type into an error without
/// extensions, and that silent path must not exist for our errors.
#[derive(Debug, Clone)]
pub enum AppError {
    NotFound {
        entity: &'static str,
        id: String,
    },
    BadUserInput {
        message: String,
        field: Option<String>,
    },
    /// A lifecycle move the entity's current status does not allow.
    InvalidTransition {
        entity: &'static str,
        from: String,
        to: String,
    },
    /// An action (such as `recordPages`) that the entity's current status does not allow. Sent
    /// with the same code as a refused move, `from` naming the status and `to` the action.
    NotAllowedIn {
        entity: &'static str,
        status: String,
        action: &'static str,
    },
    Unauthenticated(String),
    Forbidden(String),
    Conflict(String),
    QueryTooComplex(String),
    RateLimited {
        retry_after_secs: u64,
    },
    /// A quota that waiting alone does not lift (operations per WebSocket, sockets per caller):
    /// `RATE_LIMITED`, without `retryAfter`.
    TooMany(String),
    Unavailable(String),
    /// An automatic persisted query whose hash this gateway does not know: the client sends the
    /// document with its hash next.
    PersistedQueryNotFound,
    /// A resumable subscription's cursor points before events that retention has deleted: the
    /// client must reload instead of resuming.
    CursorExpired,
    /// The detail is logged, never sent: clients only learn that something broke.
    Internal(String),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadUserInput {
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadUserInput {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        AppError::Internal(detail.to_string())
    }

    /// The machine-readable code sent as `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound { .. } => "NOT_FOUND",
            AppError::BadUserInput { .. } => "BAD_USER_INPUT",
            AppError::InvalidTransition { .. } | AppError::NotAllowedIn { .. } => {
                "INVALID_TRANSITION"
            }
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::Conflict(_) => "CONFLICT",
            AppError::QueryTooComplex(_) => "QUERY_TOO_COMPLEX",
            AppError::RateLimited { .. } | AppError::TooMany(_) => "RATE_LIMITED",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            AppError::CursorExpired => "CURSOR_EXPIRED",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    /// The human-readable message sent to clients.
    pub fn message(&self) -> String {
        match self {
            AppError::NotFound { entity, id } => format!("{entity} {id} not found"),
            AppError::BadUserInput { message, .. } => message.clone(),
            AppError::NotAllowedIn {
                entity,
                status,
                action,
            } => format!("{action} is not allowed while the {entity} is {status}"),
            AppError::InvalidTransition { entity, from, to } => {
                format!("cannot move {entity} from {from} to {to}")
            }
            AppError::Unauthenticated(m)
            | AppError::Forbidden(m)
            | AppError::Conflict(m)
            | AppError::QueryTooComplex(m)
            | AppError::TooMany(m) => m.clone(),
            AppError::RateLimited { retry_after_secs } => {
                format!("rate limit exceeded, retry in {retry_after_secs}s")
            }
            AppError::Unavailable(m) => format!("service unavailable: {m}"),
            // The exact message Apollo's PersistedQueryLink looks for.
            AppError::PersistedQueryNotFound => "PersistedQueryNotFound".into(),
            AppError::CursorExpired => {
                "the cursor is older than the event log's retention; reload and subscribe \
                 without it"
                    .into()
            }
            AppError::Internal(_) => "internal error".into(),
        }
    }
}

impl AppError {
    /// The HTTP status of a response that carries no data and an error with this code: the
    /// server's failures are 5xx (503 for the database, which is worth retrying), everything
    /// else is the caller's (4xx, decided by the HTTP layer).
    pub fn status_of_code(code: &str) -> u16 {
        match code {
            "UNAVAILABLE" => 503,
            "INTERNAL" => 500,
            _ => 400,
        }
    }
}

/// Loader errors are shared (`Arc`) between every resolver waiting on the same batch.
impl From<Arc<AppError>> for AppError {
    fn from(e: Arc<AppError>) -> Self {
        Arc::unwrap_or_clone(e)
    }
}

impl From<AppError> for anyhow::Error {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Internal(detail) => anyhow::anyhow!(detail),
            other => anyhow::anyhow!(other.message()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_code() {
        for (err, code) in all_variants() {
            assert_eq!(err.code(), code);
        }
    }

    /// One error of each variant with the code it must carry; `api::errors` checks that the
    /// same codes reach `extensions.code`.
    pub(crate) fn all_variants() -> Vec<(AppError, &'static str)> {
        vec![
            (
                AppError::NotFound {
                    entity: "bug",
                    id: "x".into(),
                },
                "NOT_FOUND",
            ),
            (AppError::bad_input("no"), "BAD_USER_INPUT"),
            (
                AppError::InvalidTransition {
                    entity: "bug",
                    from: "DETECTED".into(),
                    to: "REPORTED".into(),
                },
                "INVALID_TRANSITION",
            ),
            (
                AppError::NotAllowedIn {
                    entity: "session",
                    status: "COMPLETED".into(),
                    action: "recordPages",
                },
                "INVALID_TRANSITION",
            ),
            (AppError::Unauthenticated("who".into()), "UNAUTHENTICATED"),
            (AppError::Forbidden("no".into()), "FORBIDDEN"),
            (AppError::Conflict("dup".into()), "CONFLICT"),
            (
                AppError::QueryTooComplex("deep".into()),
                "QUERY_TOO_COMPLEX",
            ),
            (
                AppError::RateLimited {
                    retry_after_secs: 3,
                },
                "RATE_LIMITED",
            ),
            (AppError::TooMany("sockets".into()), "RATE_LIMITED"),
            (AppError::Unavailable("db".into()), "UNAVAILABLE"),
            (
                AppError::PersistedQueryNotFound,
                "PERSISTED_QUERY_NOT_FOUND",
            ),
            (AppError::CursorExpired, "CURSOR_EXPIRED"),
            (AppError::internal("boom"), "INTERNAL"),
        ]
    }

    #[test]
    fn refusals_name_the_move_or_the_action() {
        let moved = AppError::InvalidTransition {
            entity: "bug",
            from: "DETECTED".into(),
            to: "REPORTED".into(),
        };
        assert_eq!(moved.message(), "cannot move bug from DETECTED to REPORTED");
        let acted = AppError::NotAllowedIn {
            entity: "session",
            status: "COMPLETED".into(),
            action: "recordPages",
        };
        assert_eq!(
            acted.message(),
            "recordPages is not allowed while the session is COMPLETED"
        );
    }

    #[test]
    fn server_failures_get_5xx_and_the_rest_4xx() {
        let all = [
            AppError::NotFound {
                entity: "bug",
                id: "x".into(),
            },
            AppError::bad_input("x"),
            AppError::Unauthenticated("x".into()),
            AppError::Forbidden("x".into()),
            AppError::Conflict("x".into()),
            AppError::QueryTooComplex("x".into()),
            AppError::TooMany("x".into()),
            AppError::Unavailable("x".into()),
            AppError::internal("x"),
        ];
        let statuses: Vec<u16> = all
            .iter()
            .map(|e| AppError::status_of_code(e.code()))
            .collect();
        assert_eq!(statuses, [400, 400, 400, 400, 400, 400, 400, 503, 500]);
    }
}
