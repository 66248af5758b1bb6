//! The one error type of the gateway and its single mapping to GraphQL `extensions.code`.

use std::sync::Arc;

use async_graphql::ErrorExtensions;

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
    InvalidTransition {
        entity: &'static str,
        from: String,
        to: String,
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
            AppError::InvalidTransition { .. } => "INVALID_TRANSITION",
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::Conflict(_) => "CONFLICT",
            AppError::QueryTooComplex(_) => "QUERY_TOO_COMPLEX",
            AppError::RateLimited { .. } | AppError::TooMany(_) => "RATE_LIMITED",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    /// The human-readable message sent to clients.
    pub fn message(&self) -> String {
        match self {
            AppError::NotFound { entity, id } => format!("{entity} {id} not found"),
            AppError::BadUserInput { message, .. } => message.clone(),
            // `to` is a status (`COMPLETED`) or, for ingestion, the refused action (`recordPages`).
            AppError::InvalidTransition { entity, from, to }
                if to.chars().any(char::is_lowercase) =>
            {
                format!("{to} is not allowed while the {entity} is {from}")
            }
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
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The GraphQL error clients see. This is the only place codes and extensions are attached.
    pub fn to_graphql(&self) -> async_graphql::Error {
        if let AppError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                AppError::BadUserInput {
                    field: Some(field), ..
                } => ext.set("field", field.as_str()),
                AppError::InvalidTransition { from, to, .. } => {
                    ext.set("from", from.as_str());
                    ext.set("to", to.as_str());
                }
                AppError::RateLimited { retry_after_secs } => {
                    ext.set("retryAfter", *retry_after_secs)
                }
                _ => {}
            }
        })
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

    /// The same error outside of any field: no locations, no path (refusals before execution).
    pub fn to_server_error(&self) -> async_graphql::ServerError {
        let mut err = async_graphql::ServerError::new(self.message(), None);
        err.extensions = self.to_graphql().extensions;
        err
    }

    /// Gives an error raised by async-graphql itself (syntax, validation, coercion, limits) a
    /// code: they carry none. Depth and complexity limits are `QUERY_TOO_COMPLEX`; everything
    /// else of theirs is the client's fault, `BAD_USER_INPUT`.
    pub fn classify_library_error(err: &mut async_graphql::ServerError) {
        let ext = err.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_some() {
            return;
        }
        let limit = matches!(
            err.message.as_str(),
            "Query is too complex." | "Query is nested too deep."
        );
        let code = if limit {
            AppError::QueryTooComplex(String::new()).code()
        } else {
            AppError::bad_input("").code()
        };
        ext.set("code", code);
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        e.to_graphql()
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

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::DatabaseError(K::UniqueViolation, info) => AppError::Conflict(info.message().into()),
            E::DatabaseError(K::CheckViolation | K::NotNullViolation, info) => {
                AppError::bad_input(info.message())
            }
            // No SQLSTATE: the connection broke mid-request (server restart, network).
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, info) => {
                AppError::Unavailable(format!("database connection lost: {}", info.message()))
            }
            // Class 57 (operator intervention): an administrator or crash ended the backend, or
            // the server is shutting down, starting up or in recovery.
            E::DatabaseError(_, ref info)
                if ["terminating connection", "the database system is"]
                    .iter()
                    .any(|m| info.message().starts_with(m)) =>
            {
                AppError::Unavailable(info.message().into())
            }
            // 57014 query_canceled: statement_timeout fired.
            E::DatabaseError(_, ref info) if info.message().contains("statement timeout") => {
                AppError::Unavailable("database statement timed out".into())
            }
            E::NotFound => AppError::NotFound {
                entity: "row",
                id: String::new(),
            },
            other => AppError::internal(other),
        }
    }
}

impl From<crate::db::PoolError> for AppError {
    fn from(e: crate::db::PoolError) -> Self {
        use deadpool::managed::PoolError as P;
        match e {
            P::Timeout(_) => AppError::Unavailable("database pool exhausted".into()),
            P::Backend(e) => AppError::Unavailable(format!("database unreachable: {e}")),
            P::Closed => AppError::Unavailable("database pool closed".into()),
            other => AppError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(e: &AppError) -> async_graphql::Value {
        let err = e.to_graphql();
        let ext = err.extensions.expect("extensions are always set");
        serde_json::to_value(&ext)
            .ok()
            .and_then(|v| async_graphql::Value::from_json(v).ok())
            .expect("extensions serialize")
    }

    fn code_of(e: &AppError) -> String {
        match ext(e) {
            async_graphql::Value::Object(m) => {
                m.get("code").map(|c| c.to_string()).unwrap_or_default()
            }
            _ => String::new(),
        }
    }

    #[test]
    fn every_variant_maps_to_its_code() {
        let cases = [
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
            (AppError::internal("boom"), "INTERNAL"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(code_of(&err), format!("\"{code}\""));
        }
    }

    #[test]
    fn transitions_carry_from_and_to() {
        let e = AppError::InvalidTransition {
            entity: "bug",
            from: "DETECTED".into(),
            to: "REPORTED".into(),
        };
        let v = ext(&e).to_string();
        assert!(v.contains("from: \"DETECTED\""), "{v}");
        assert!(v.contains("to: \"REPORTED\""), "{v}");
        let v = ext(&AppError::bad_field("first", "too big")).to_string();
        assert!(v.contains("field: \"first\""), "{v}");
        let v = ext(&AppError::RateLimited {
            retry_after_secs: 7,
        })
        .to_string();
        assert!(v.contains("retryAfter: 7"), "{v}");
    }

    #[test]
    fn library_errors_get_codes() {
        let code = |msg: &str| {
            let mut e = async_graphql::ServerError::new(msg, None);
            AppError::classify_library_error(&mut e);
            let ext = e.extensions.expect("set");
            ext.get("code").map(|v| v.to_string())
        };
        assert_eq!(
            code("Query is too complex.").as_deref(),
            Some("\"QUERY_TOO_COMPLEX\"")
        );
        assert_eq!(
            code("Query is nested too deep.").as_deref(),
            Some("\"QUERY_TOO_COMPLEX\"")
        );
        assert_eq!(
            code("Unknown field \"x\"").as_deref(),
            Some("\"BAD_USER_INPUT\"")
        );
        // A code already set is kept.
        let mut e = AppError::Forbidden("no".into()).to_server_error();
        AppError::classify_library_error(&mut e);
        assert_eq!(
            e.extensions
                .and_then(|x| x.get("code").map(|v| v.to_string())),
            Some("\"FORBIDDEN\"".into())
        );
        assert!(
            AppError::bad_input("x")
                .to_server_error()
                .locations
                .is_empty()
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

    #[test]
    fn internal_errors_leak_nothing() {
        let e = AppError::internal("relation \"secret_table\" does not exist");
        assert_eq!(e.to_graphql().message, "internal error");
    }

    #[test]
    fn database_errors_map_to_client_codes() {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        let db = |kind, msg: &str| E::DatabaseError(kind, Box::new(msg.to_owned()));
        assert_eq!(
            AppError::from(db(K::UniqueViolation, "dup")).code(),
            "CONFLICT"
        );
        assert_eq!(
            AppError::from(db(K::CheckViolation, "check")).code(),
            "BAD_USER_INPUT"
        );
        assert_eq!(
            AppError::from(db(K::ClosedConnection, "gone")).code(),
            "UNAVAILABLE"
        );
        assert_eq!(
            AppError::from(db(
                K::Unknown,
                "canceling statement due to statement timeout"
            ))
            .code(),
            "UNAVAILABLE"
        );
        for cut_off in [
            "terminating connection due to administrator command",
            "terminating connection because of crash of another server process",
            "the database system is shutting down",
        ] {
            assert_eq!(
                AppError::from(db(K::Unknown, cut_off)).code(),
                "UNAVAILABLE",
                "{cut_off}"
            );
        }
        assert_eq!(
            AppError::from(db(K::UnableToSendCommand, "connection closed")).code(),
            "UNAVAILABLE"
        );
        assert_eq!(AppError::from(E::NotFound).code(), "NOT_FOUND");
        assert_eq!(
            AppError::from(db(K::Unknown, "syntax error")).code(),
            "INTERNAL"
        );
    }

    #[test]
    fn pool_errors_are_unavailable() {
        use deadpool::managed::TimeoutType;
        assert_eq!(
            AppError::from(crate::db::PoolError::Timeout(TimeoutType::Wait)).code(),
            "UNAVAILABLE"
        );
        assert_eq!(
            AppError::from(crate::db::PoolError::Closed).code(),
            "UNAVAILABLE"
        );
    }
}
