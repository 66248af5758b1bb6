//! The documented shape of bug evidence, checked before anything is written.
//!
//! Evidence is a JSON array of typed items (at most 50); each item is an object whose `type`
//! selects its fields, and no other fields are allowed:
//!
//! | type | fields |
//! |---|---|
//! | `screenshot` | `url`: string (required) |
//! | `console` | `level`: one of `debug`, `log`, `info`, `warn`, `error`; `message`: string |
//! | `network` | `method`: string such as `GET`; `url`: string; `status`: integer 0–599 (0: no response) |
//! | `dom` | `selector`: non-empty string; `html`: string (optional) |

use serde_json::{Map, Value};

pub const MAX_EVIDENCE_ITEMS: usize = 50;
const MAX_TEXT: usize = 100_000;

fn string<'a>(item: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, String> {
    match item.get(key) {
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(s),
        Some(Value::String(_)) => Err(format!("{path}.{key} is too long")),
        Some(_) => Err(format!("{path}.{key} must be a string")),
        None => Err(format!("{path}.{key} is required")),
    }
}

fn check_item(v: &Value, path: &str) -> Result<(), String> {
    let Value::Object(item) = v else {
        return Err(format!("{path} must be an object"));
    };
    let kind = string(item, "type", path)?;
    let allowed: &[&str] = match kind {
        "screenshot" => &["type", "url"],
        "console" => &["type", "level", "message"],
        "network" => &["type", "method", "url", "status"],
        "dom" => &["type", "selector", "html"],
        other => {
            return Err(format!(
                "{path}.type {other:?} is not one of screenshot, console, network, dom"
            ));
        }
    };
    if let Some(extra) = item.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{path}.{extra} is not a field of {kind} evidence"));
    }
    match kind {
        "screenshot" => {
            if string(item, "url", path)?.trim().is_empty() {
                return Err(format!("{path}.url must not be empty"));
            }
        }
        "console" => {
            let level = string(item, "level", path)?;
            if !["debug", "log", "info", "warn", "error"].contains(&level) {
                return Err(format!(
                    "{path}.level {level:?} is not one of debug, log, info, warn, error"
                ));
            }
            string(item, "message", path)?;
        }
        "network" => {
            let method = string(item, "method", path)?;
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!("{path}.method {method:?} is not an HTTP method"));
            }
            string(item, "url", path)?;
            match item.get("status").and_then(Value::as_u64) {
                Some(s) if s <= 599 => {}
                _ => {
                    return Err(format!(
                        "{path}.status must be an integer between 0 and 599"
                    ));
                }
            }
        }
        _ => {
            if string(item, "selector", path)?.trim().is_empty() {
                return Err(format!("{path}.selector must not be empty"));
            }
            if item.contains_key("html") {
                string(item, "html", path)?;
            }
        }
    }
    Ok(())
}

/// A shape error: the offending path (e.g. `bugs[2].evidence[0].status`) and what is wrong.
#[derive(Debug, PartialEq)]
pub struct EvidenceError {
    pub path: String,
    pub message: String,
}

/// Checks evidence against the documented shape; `null` means no evidence.
pub fn validate(v: Value, path: &str) -> Result<Value, EvidenceError> {
    check(v, path).map_err(|message| EvidenceError {
        path: message.split(' ').next().unwrap_or(path).to_owned(),
        message,
    })
}

fn check(v: Value, path: &str) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Array(Vec::new())),
        Value::Array(items) => {
            if items.len() > MAX_EVIDENCE_ITEMS {
                return Err(format!("{path} has more than {MAX_EVIDENCE_ITEMS} items"));
            }
            for (i, item) in items.iter().enumerate() {
                check_item(item, &format!("{path}[{i}]"))?;
            }
            Ok(Value::Array(items))
        }
        _ => Err(format!("{path} must be an array of evidence items")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate;

    #[test]
    fn accepts_every_documented_item() {
        let ev = json!([
            { "type": "screenshot", "url": "https://cdn.test/a.png" },
            { "type": "console", "level": "error", "message": "TypeError: x is undefined" },
            { "type": "network", "method": "POST", "url": "https://api.test/login", "status": 500 },
            { "type": "network", "method": "GET", "url": "https://api.test/x", "status": 0 },
            { "type": "dom", "selector": "#checkout > button" },
            { "type": "dom", "selector": "nav", "html": "<nav></nav>" },
        ]);
        assert_eq!(validate(ev.clone(), "evidence"), Ok(ev));
        assert_eq!(validate(json!(null), "evidence"), Ok(json!([])));
    }

    #[test]
    fn rejects_malformed_items_naming_the_path() {
        for (ev, path) in [
            (json!({ "type": "screenshot" }), "evidence"),
            (json!(["screenshot"]), "evidence[0]"),
            (json!([{ "url": "x" }]), "evidence[0].type"),
            (json!([{ "type": "video", "url": "x" }]), "evidence[0].type"),
            (json!([{ "type": "screenshot" }]), "evidence[0].url"),
            (
                json!([{ "type": "screenshot", "url": "x", "extra": 1 }]),
                "evidence[0].extra",
            ),
            (
                json!([{ "type": "console", "level": "fatal", "message": "m" }]),
                "evidence[0].level",
            ),
            (
                json!([{ "type": "console", "level": "warn" }]),
                "evidence[0].message",
            ),
            (
                json!([{ "type": "network", "method": "GET", "url": "u", "status": 700 }]),
                "evidence[0].status",
            ),
            (
                json!([{ "type": "network", "method": "GET", "url": "u", "status": "200" }]),
                "evidence[0].status",
            ),
            (
                json!([{ "type": "network", "method": "G E T", "url": "u", "status": 200 }]),
                "evidence[0].method",
            ),
            (
                json!([{ "type": "dom", "selector": "" }]),
                "evidence[0].selector",
            ),
            (
                json!([{ "type": "dom", "selector": "a", "html": 3 }]),
                "evidence[0].html",
            ),
        ] {
            let err = validate(ev.clone(), "evidence").expect_err(&ev.to_string());
            assert_eq!(err.path, path, "{ev}: {}", err.message);
            assert!(err.message.starts_with(path), "{ev}: {}", err.message);
        }
        let many = serde_json::Value::Array(vec![json!({ "type": "dom", "selector": "a" }); 51]);
        assert!(validate(many, "evidence").is_err());
    }
}
