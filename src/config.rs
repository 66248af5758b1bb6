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
