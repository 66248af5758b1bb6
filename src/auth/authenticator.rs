//! Turns a request's `Authorization` header into a [`Principal`], provisioning the user on first
//! sight. Principals are cached for a short while so a request costs no extra statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jwt::JwtConfig;
use super::{Principal, Role};
use crate::error::{AppError, AppResult};
use crate::store::Db;
use crate::store::users::model::UserRow;
use crate::store::users::repo::{self, NewUser};

/// The built-in identity of development mode (no verification key configured).
pub const DEV_SUBJECT: &str = "dev:admin";
/// How long a provisioned principal is trusted before its user row is read again (role and
/// `is_active` changes take effect within this time).
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

/// One read of a caller's user row (its principal and active flag), shared by all who wait.
type Loading = tokio::sync::OnceCell<(Principal, bool)>;

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    jwt: JwtConfig,
    db: Db,
    cache: Mutex<HashMap<String, (Principal, bool, Instant)>>,
    /// The user-row reads under way, one per subject: when an entry expires (or is forgotten)
    /// every open socket of that caller rechecks it at once, and 10,000 upserts of one row
    /// took a quarter of the machine during a fan-out.
    loading: Mutex<HashMap<String, Arc<Loading>>>,
    /// User rows read so far; tests read it to prove concurrent misses share one read.
    reads: std::sync::atomic::AtomicU64,
    /// Subjects whose role or activation changed on this replica (`None`: everyone's), so
    /// long-lived connections re-check their caller at once instead of at the next cache expiry.
    changed: tokio::sync::broadcast::Sender<Option<String>>,
}

/// A verified caller as a long-lived connection keeps it: who the token names (to look the
/// user up again before each operation) and when the token expires.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    user: NewUser,
    /// The token's `exp` (seconds since the epoch); `None` in development mode.
    pub expires_at: Option<u64>,
}

impl Authenticator {
    pub fn new(jwt: JwtConfig, db: Db) -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                jwt,
                db,
                cache: Mutex::default(),
                loading: Mutex::default(),
                reads: Default::default(),
                changed: tokio::sync::broadcast::channel(64).0,
            }),
        }
    }

    /// Development mode: no token is checked and every caller is the built-in admin.
    pub fn is_dev_mode(&self) -> bool {
        !self.inner.jwt.enabled()
    }

    pub fn jwt(&self) -> &JwtConfig {
        &self.inner.jwt
    }

    /// The caller of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> AppResult<Principal> {
        Ok(self.session(authorization).await?.principal)
    }

    /// The caller with what a long-lived connection needs to check it again later.
    pub async fn session(&self, authorization: Option<&str>) -> AppResult<Session> {
        let (user, expires_at) = self.verify(authorization)?;
        let principal = self.principal_for(user.clone()).await?;
        Ok(Session {
            principal,
            user,
            expires_at,
        })
    }

    /// The caller of `session` as it stands now: its current role, or `FORBIDDEN` once it is
    /// deactivated (through the same short cache as a request's `authenticate`).
    pub async fn current(&self, session: &Session) -> AppResult<Principal> {
        self.principal_for(session.user.clone()).await
    }

    /// User rows read (provisioned) so far by this authenticator.
    pub fn user_reads(&self) -> u64 {
        self.inner.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notices of role and activation changes on this replica (see [`Authenticator::forget`]).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Option<String>> {
        self.inner.changed.subscribe()
    }

    fn verify(&self, authorization: Option<&str>) -> AppResult<(NewUser, Option<u64>)> {
        if self.is_dev_mode() {
            let dev = NewUser {
                subject: DEV_SUBJECT.into(),
                email: None,
                display_name: Some("Development admin".into()),
                role: Role::Admin,
            };
            return Ok((dev, None));
        }
        let header = authorization
            .ok_or_else(|| AppError::Unauthenticated("missing bearer token".into()))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::Unauthenticated("Authorization must be `Bearer <token>`".into())
            })?;
        let claims = self.inner.jwt.verify(token)?;
        if claims.sub.chars().count() > 255 {
            return Err(AppError::Unauthenticated(
                "invalid token: sub is longer than 255 characters".into(),
            ));
        }
        if claims.sub.contains('\0') {
            return Err(AppError::Unauthenticated(
                "invalid token: sub contains a NUL character".into(),
            ));
        }
        let role = match claims.role.as_deref() {
            None => Role::User,
            Some(r) => Role::from_db(&r.to_ascii_lowercase()).ok_or_else(|| {
                AppError::Unauthenticated(format!("invalid token: unknown role {r:?}"))
            })?,
        };
        // Profile claims the table cannot hold are dropped rather than locking the user out.
        let fits = |v: Option<String>, max: usize| {
            v.filter(|s| s.chars().count() <= max && !s.contains('\0'))
        };
        let user = NewUser {
            subject: claims.sub,
            email: fits(claims.email, 320),
            display_name: fits(claims.name, 200),
            role,
        };
        Ok((user, Some(claims.exp)))
    }

    async fn principal_for(&self, user: NewUser) -> AppResult<Principal> {
        let cached = {
            let cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&user.subject)
                .filter(|(_, _, at)| at.elapsed() < CACHE_TTL)
                .map(|(p, active, _)| (p.clone(), *active))
        };
        let (principal, active) = match cached {
            Some(hit) => hit,
            None => {
                let subject = user.subject.clone();
                let cell = self
                    .inner
                    .loading
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(subject.clone())
                    .or_default()
                    .clone();
                // The first caller reads the row; the others wait for its answer (or, if it
                // fails, the next one tries).
                let loaded = cell
                    .get_or_try_init(|| async {
                        self.inner
                            .reads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let row = self.provision(user).await?;
                        let p = Principal {
                            user_id: row.id,
                            subject: row.subject.clone(),
                            role: row.role,
                        };
                        let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
                        if cache.len() >= CACHE_MAX {
                            cache.clear();
                        }
                        cache.insert(row.subject, (p.clone(), row.is_active, Instant::now()));
                        AppResult::Ok((p, row.is_active))
                    })
                    .await
                    .cloned();
                let mut loading = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
                if loading.get(&subject).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    loading.remove(&subject);
                }
                loaded?
            }
        };
        if !active {
            return Err(AppError::Forbidden("this account is deactivated".into()));
        }
        Ok(principal)
    }

    /// `INSERT … ON CONFLICT (subject)`: concurrent first requests of one subject leave one row.
    ///
    /// Only `subject` can be the conflict target, so two first requests that race on the same
    /// email make the loser fail on the email's unique index; tried again, it finds the
    /// subject's row. An email that belongs to another subject is dropped, not an error.
    async fn provision(&self, user: NewUser) -> AppResult<UserRow> {
        let db = self.inner.db.scoped();
        crate::store::run_detached(async move {
            let mut conn = db.conn().await?;
            let mut user = user;
            for attempt in 0..3 {
                match repo::provision(&mut conn, user.clone()).await {
                    Err(AppError::Conflict(_)) if attempt == 1 => {
                        tracing::warn!(subject = %user.subject, "email already belongs to another user; provisioning without it");
                        user.email = None;
                    }
                    Err(AppError::Conflict(_)) if attempt == 0 => {}
                    other => return other,
                }
            }
            Err(AppError::Conflict("cannot provision the user".into()))
        })
        .await
    }

    /// Forgets the cached principal of user `id` (a change heard from any replica).
    pub fn forget_user(&self, id: uuid::Uuid) {
        let subject = {
            let cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .iter()
                .find(|(_, (p, _, _))| p.user_id == id)
                .map(|(s, _)| s.clone())
        };
        // Callers are cached (stale entries included) from their first request until forgotten,
        // so a caller with an open socket here is found; one that is not has nothing to drop.
        if let Some(s) = subject {
            self.forget(Some(&s));
        }
    }

    /// Forgets cached principals, so role and activation changes apply to the next request.
    pub fn forget(&self, subject: Option<&str>) {
        {
            let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            let mut loading = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
            // A read under way may predate the change: later callers start their own.
            match subject {
                Some(s) => {
                    cache.remove(s);
                    loading.remove(s);
                }
                None => {
                    cache.clear();
                    loading.clear();
                }
            }
        }
        // Nobody listening is fine: no connection is open.
        let _ = self.inner.changed.send(subject.map(str::to_owned));
    }
}
