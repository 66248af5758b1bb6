//! The one place an [`AppError`] becomes a GraphQL error: its message, `extensions.code`, and
//! the extensions some codes carry (`field`, `from`/`to`, `retryAfter`).

use async_graphql::ErrorExtensions;

use crate::error::AppError;

impl AppError {
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
                AppError::NotAllowedIn { status, action, .. } => {
                    ext.set("from", status.as_str());
                    ext.set("to", *action);
                }
                AppError::RateLimited { retry_after_secs } => {
                    ext.set("retryAfter", *retry_after_secs)
                }
                _ => {}
            }
        })
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
    fn every_variant_reaches_extensions_code() {
        for (err, code) in crate::error::tests::all_variants() {
            assert_eq!(code_of(&err), format!("\"{code}\""), "{err:?}");
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
        let v = ext(&AppError::NotAllowedIn {
            entity: "session",
            status: "COMPLETED".into(),
            action: "recordPages",
        })
        .to_string();
        assert!(v.contains("from: \"COMPLETED\""), "{v}");
        assert!(v.contains("to: \"recordPages\""), "{v}");
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
    fn internal_errors_leak_nothing() {
        let e = AppError::internal("relation \"secret_table\" does not exist");
        assert_eq!(e.to_graphql().message, "internal error");
    }
}
