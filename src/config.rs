//! Configuration read from the environment (see the README's configuration table).

use std::path::PathBuf;

/// Connection pool settings. `url` is either a URL (`postgres://…`) or a libpq key/value string.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    pub pool_size: usize,
    /// Wait, create and recycle timeout of the pool.
    pub pool_timeout_ms: u64,
    /// `statement_timeout` of every pooled connection; 0 disables it.
    pub statement_timeout_ms: u64,
}

pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl DbConfig {
    /// Pool settings from `DB_POOL_SIZE`, `DB_POOL_TIMEOUT_MS` and `DB_STATEMENT_TIMEOUT_MS`.
    pub fn from_env(url: String) -> anyhow::Result<Self> {
        let pool_size = env_num("DB_POOL_SIZE", 10usize)?;
        if pool_size == 0 {
            anyhow::bail!("DB_POOL_SIZE must be at least 1");
        }
        Ok(DbConfig {
            url,
            pool_size,
            pool_timeout_ms: env_num("DB_POOL_TIMEOUT_MS", 5_000u64)?,
            statement_timeout_ms: env_num("DB_STATEMENT_TIMEOUT_MS", 30_000u64)?,
        })
    }
}

/// `DATABASE_URL`, when set and not empty.
pub fn database_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Where the embedded cluster keeps its data: `BUGHIVE_DATA_DIR`, default `./.bughive/pg`.
pub fn embedded_data_dir() -> PathBuf {
    std::env::var_os("BUGHIVE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".bughive/pg"))
}

/// A duration written as a number and a unit: `90s`, `30m`, `12h`, `7d` (no unit: seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{t:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{t:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{t:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// How long the event log keeps events (`EVENT_RETENTION`, default 7 days).
pub fn event_retention() -> anyhow::Result<std::time::Duration> {
    match std::env::var("EVENT_RETENTION") {
        Ok(v) if !v.trim().is_empty() => {
            parse_duration(&v).map_err(|e| anyhow::anyhow!("EVENT_RETENTION={e}"))
        }
        _ => Ok(std::time::Duration::from_secs(7 * 86_400)),
    }
}

/// Read replicas: `DATABASE_READ_URL` (comma-separated), `DB_READ_MAX_LAG_MS` (default 2000),
/// `DB_READ_CHECK_MS` (default 500).
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub urls: Vec<String>,
    pub max_lag_ms: u64,
    pub check_ms: u64,
}

impl ReadConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let urls = std::env::var("DATABASE_READ_URL")
            .map(|v| split_urls(&v))
            .unwrap_or_default();
        let check_ms = env_num("DB_READ_CHECK_MS", 500u64)?;
        if check_ms == 0 {
            anyhow::bail!("DB_READ_CHECK_MS must be at least 1");
        }
        Ok(ReadConfig {
            urls,
            max_lag_ms: env_num("DB_READ_MAX_LAG_MS", 2_000u64)?,
            check_ms,
        })
    }
}

/// Splits `DATABASE_READ_URL` into connection strings. Commas separate replicas, but a URL may
/// itself list several hosts with commas (`postgres://h1,h2/db`): a piece starts a new replica
/// only when it starts like a connection string (a scheme or a `key=value`).
pub fn split_urls(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in list.split(',') {
        let t = piece.trim();
        if t.is_empty() {
            continue;
        }
        let starts_new = t.starts_with("postgres://")
            || t.starts_with("postgresql://")
            || t.split_once('=').is_some_and(|(k, _)| {
                !k.trim().is_empty()
                    && k.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        match out.last_mut() {
            Some(last) if !starts_new => {
                last.push(',');
                last.push_str(t);
            }
            _ => out.push(t.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_urls_split_on_commas_between_connection_strings_only() {
        assert_eq!(
            split_urls("postgres://a/db, postgres://h1,h2:5433/db ,host=c dbname=x,"),
            vec![
                "postgres://a/db".to_owned(),
                "postgres://h1,h2:5433/db".to_owned(),
                "host=c dbname=x".to_owned(),
            ]
        );
        assert!(split_urls(" ").is_empty());
    }
}
