//! Which documents a request runs: automatic persisted queries (Apollo's APQ protocol,
//! `extensions.persistedQuery { version: 1, sha256Hash }`) and, when configured, the trusted
//! documents of a manifest, outside of which nothing runs.
//!
//! APQ documents live in a table every replica shares (`store::persisted`), with a bounded
//! in-process cache in front that also keeps each document parsed, so a registered document is
//! parsed once per replica, not per request.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_graphql::parser::types::ExecutableDocument;
use sha2::{Digest, Sha256};

use crate::api::exec::limits::Guard;
use crate::auth::{Principal, Role};
use crate::error::{AppError, AppResult};
use crate::store::{Db, persisted, run_detached};

/// APQ and trusted-documents settings (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct DocumentsConfig {
    /// Parsed documents kept per replica (`APQ_CACHE_SIZE`).
    pub cache_size: usize,
    /// Documents kept in the shared table (`APQ_MAX_DOCUMENTS`).
    pub max_documents: i64,
    /// The trusted documents manifest (`TRUSTED_DOCUMENTS`): only its operations run.
    pub trusted: Option<PathBuf>,
    /// Whether admins may still run any operation in trusted mode
    /// (`TRUSTED_DOCUMENTS_ALLOW_ADMINS`), so the playground keeps working for them.
    pub trusted_allow_admins: bool,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            cache_size: 1_000,
            max_documents: 10_000,
            trusted: None,
            trusted_allow_admins: false,
        }
    }
}

/// A manifest of trusted documents: `{ "<sha256>": "<document>" }`, as graphql-codegen's client
/// preset (`persisted-documents.json`) and Relay's persisted-queries output write it.
struct Manifest {
    by_hash: HashMap<String, String>,
    texts: HashSet<String>,
    modified: Option<SystemTime>,
}

fn load_manifest(path: &PathBuf) -> anyhow::Result<Manifest> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("TRUSTED_DOCUMENTS {}: {e}", path.display()))?;
    let by_hash: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "TRUSTED_DOCUMENTS {}: not a JSON object of hash to document: {e}",
            path.display()
        )
    })?;
    let texts = by_hash.values().cloned().collect();
    Ok(Manifest {
        by_hash,
        texts,
        modified,
    })
}

struct Cached {
    text: String,
    doc: Option<ExecutableDocument>,
    used: u64,
}

pub struct Documents {
    config: DocumentsConfig,
    cache: Mutex<(HashMap<String, Cached>, u64)>,
    trusted: RwLock<Option<Arc<Manifest>>>,
}

impl Documents {
    /// Checks that the configured manifest loads: start-up refuses to run without it.
    pub fn check(config: &DocumentsConfig) -> anyhow::Result<()> {
        match &config.trusted {
            Some(path) => load_manifest(path).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Reads the manifest, if one is configured. One that fails to load (start-up checks it
    /// first) leaves trusted mode on with no document: closed, never open.
    pub fn new(config: DocumentsConfig) -> Arc<Self> {
        let trusted = config.trusted.as_ref().map(|path| {
            Arc::new(load_manifest(path).unwrap_or_else(|e| {
                tracing::error!(error = %e, "trusted documents not loaded: refusing every operation");
                Manifest {
                    by_hash: HashMap::new(),
                    texts: HashSet::new(),
                    modified: None,
                }
            }))
        });
        let docs = Arc::new(Documents {
            config,
            cache: Mutex::default(),
            trusted: RwLock::new(trusted),
        });
        if docs.config.trusted.is_some() {
            docs.clone().watch();
        }
        docs
    }

    /// Reloads the manifest on SIGHUP and whenever the file changes; a manifest that fails to
    /// load leaves the previous one in force.
    fn watch(self: Arc<Self>) {
        let Some(path) = self.config.trusted.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let signalled = async {
                    match hangup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let forced = tokio::select! {
                    () = signalled => true,
                    () = tokio::time::sleep(Duration::from_secs(2)) => false,
                };
                let Some(docs) = weak.upgrade() else { return };
                let current = docs.manifest().and_then(|m| m.modified);
                let now = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if !forced && now == current {
                    continue;
                }
                match load_manifest(&path) {
                    Ok(m) => {
                        tracing::info!(documents = m.by_hash.len(), "trusted documents reloaded");
                        *docs.trusted.write().unwrap_or_else(|e| e.into_inner()) =
                            Some(Arc::new(m));
                    }
                    Err(e) => tracing::error!(error = %e, "trusted documents not reloaded"),
                }
            }
        });
    }

    fn manifest(&self) -> Option<Arc<Manifest>> {
        self.trusted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fills in the document of a request that names it by hash, registers one sent with its
    /// hash, and, in trusted mode, refuses any other. Runs after authentication, before the
    /// document is parsed.
    pub async fn resolve(
        &self,
        db: &Db,
        guard: &Guard,
        principal: &Principal,
        request: &mut async_graphql::Request,
    ) -> AppResult<()> {
        let hash = persisted_hash(&request.extensions)?;
        let manifest = self.manifest();
        let bypass = self.config.trusted_allow_admins && principal.role == Role::Admin;
        let untrusted = || {
            AppError::Forbidden(
                "this gateway runs trusted documents only, and this operation is not among them"
                    .into(),
            )
        };
        let Some(hash) = hash else {
            if let Some(m) = &manifest
                && !bypass
                && !m.texts.contains(&request.query)
            {
                return Err(untrusted());
            }
            return Ok(());
        };
        if let Some(m) = &manifest
            && let Some(text) = m.by_hash.get(&hash)
        {
            if !request.query.is_empty() && request.query != *text {
                return Err(mismatch());
            }
            request.query = text.clone();
            return Ok(());
        }
        if manifest.is_some() && !bypass {
            return Err(untrusted());
        }
        if request.query.is_empty() {
            if let Some((text, doc)) = self.cached(&hash) {
                request.query = text;
                if let Some(doc) = doc {
                    request.set_parsed_query(doc);
                }
                return Ok(());
            }
            let mut conn = db.conn().await?;
            let text = persisted::get(&mut conn, &hash)
                .await?
                .ok_or(AppError::PersistedQueryNotFound)?;
            self.remember(guard, &hash, &text);
            request.query = text;
            return Ok(());
        }
        if sha256_hex(&request.query) != hash {
            return Err(mismatch());
        }
        // Registered whatever the caller may run: running it is authorized as any operation.
        let (db, keep, text) = (db.clone(), self.config.max_documents, request.query.clone());
        let h = hash.clone();
        run_detached(async move {
            let mut conn = db.conn().await?;
            persisted::put(&mut conn, &h, &text, keep).await
        })
        .await?;
        self.remember(guard, &hash, &request.query);
        Ok(())
    }

    fn cached(&self, hash: &str) -> Option<(String, Option<ExecutableDocument>)> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (map, tick) = &mut *cache;
        *tick += 1;
        let entry = map.get_mut(hash)?;
        entry.used = *tick;
        Some((entry.text.clone(), entry.doc.clone()))
    }

    /// Keeps a document, parsed if the guard's scan lets it be parsed; the least recently used
    /// goes when the cache is full.
    fn remember(&self, guard: &Guard, hash: &str, text: &str) {
        if self.config.cache_size == 0 {
            return;
        }
        let doc = guard
            .scan(text)
            .ok()
            .and_then(|()| async_graphql::parser::parse_query(text).ok());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (map, tick) = &mut *cache;
        *tick += 1;
        if map.len() >= self.config.cache_size
            && !map.contains_key(hash)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash.to_owned(),
            Cached {
                text: text.to_owned(),
                doc,
                used: *tick,
            },
        );
    }
}

fn mismatch() -> AppError {
    AppError::bad_field(
        "extensions.persistedQuery.sha256Hash",
        "provided sha does not match query",
    )
}

pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of `extensions.persistedQuery`, checked: version 1 and 64 lower-case hex digits.
fn persisted_hash(extensions: &HashMap<String, async_graphql::Value>) -> AppResult<Option<String>> {
    use async_graphql::Value;
    let Some(pq) = extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let bad = |m: &str| AppError::bad_field("extensions.persistedQuery", m);
    let Value::Object(pq) = pq else {
        return Err(bad("persistedQuery must be an object"));
    };
    match pq.get("version") {
        Some(Value::Number(n)) if n.as_i64() == Some(1) => {}
        _ => return Err(bad("only version 1 of persisted queries is supported")),
    }
    match pq.get("sha256Hash") {
        Some(Value::String(h))
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(Some(h.clone()))
        }
        _ => Err(bad("sha256Hash must be 64 lower-case hex digits")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_those_apollo_computes() {
        // sha256("{ __typename }"), as Apollo's PersistedQueryLink sends it.
        assert_eq!(
            sha256_hex("{ __typename }"),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }
}
