//! Start-up and shutdown: choosing the database, migrating, seeding demo data, serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::Limits;
use crate::auth::Authenticator;
use crate::auth::authenticator::DEV_SUBJECT;
use crate::auth::jwt::{Claims, JwtConfig};
use crate::config::{DbConfig, ReadConfig, database_url, embedded_data_dir};
use crate::http::{AppState, HttpConfig, router};
use crate::store::embedded::{DB_NAME, EmbeddedOptions, EmbeddedPg};
use crate::store::replicas::Replicas;
use crate::store::{Db, build_pool, run_migrations};

/// The database the process talks to, and the embedded cluster behind it when there is one.
pub struct Database {
    pub url: String,
    pub embedded: Option<EmbeddedPg>,
}

impl Database {
    /// `DATABASE_URL` when set; otherwise the embedded cluster, created on first use. Pending
    /// migrations are applied when `migrate` is true.
    pub async fn open(migrate: bool) -> anyhow::Result<Self> {
        let db = match database_url() {
            Some(url) => Database {
                url,
                embedded: None,
            },
            None => {
                let opts = EmbeddedOptions::new(embedded_data_dir());
                let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&opts)).await??;
                pg.ensure_database(DB_NAME).await?;
                Database {
                    url: pg.url(DB_NAME),
                    embedded: Some(pg),
                }
            }
        };
        if migrate {
            let applied = run_migrations(&db.url)
                .await
                .context("applying migrations")?;
            if applied > 0 {
                tracing::info!(applied, "applied migrations");
            }
        }
        Ok(db)
    }

    /// True on the first start of a fresh embedded cluster.
    pub fn is_fresh_embedded(&self) -> bool {
        self.embedded.as_ref().is_some_and(|pg| pg.created)
    }

    /// Stops the embedded cluster, if this process manages one.
    pub fn close(self) {
        if let Some(pg) = self.embedded
            && let Err(e) = pg.stop()
        {
            tracing::warn!(error = %e, "could not stop embedded PostgreSQL");
        }
    }
}

/// Demo data written on the embedded default's first start, so the playground shows something.
pub const DEMO: crate::seed::SeedPlan = crate::seed::SeedPlan {
    sessions: 12,
    pages_per_session: 25,
    bugs_per_page: 2,
    vary_bugs: false,
};

pub async fn serve(listen: SocketAddr, demo_data: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let jwt = JwtConfig::from_env()?;
    if !jwt.enabled() && !listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {listen} without authentication: set JWT_SECRET (or \
             JWT_PUBLIC_KEY) to serve other machines, or listen on a loopback address such as \
             127.0.0.1:8000 for development"
        );
    }
    let limits = Limits::from_env()?;
    let http = HttpConfig::from_env(&limits)?;
    crate::http::documents::Documents::check(&http.documents)?;
    let database = Database::open(true).await?;
    let result = serve_on(&database, listen, demo_data, started, (jwt, limits, http)).await;
    database.close();
    result
}

async fn serve_on(
    database: &Database,
    listen: SocketAddr,
    demo_data: bool,
    started: Instant,
    (jwt, limits, http): (JwtConfig, Limits, HttpConfig),
) -> anyhow::Result<()> {
    let db_config = DbConfig::from_env(database.url.clone())?;
    let pool = build_pool(&db_config)?;
    let mut db = Db::new(pool.clone()).with_keyring(
        crate::store::credentials::cipher::Keyring::from_env().map_err(|e| anyhow::anyhow!(e))?,
    );
    let reads = ReadConfig::from_env()?;
    let mut checker = None;
    if !reads.urls.is_empty() {
        let replicas = Arc::new(Replicas::new(
            &reads.urls,
            &db_config,
            Duration::from_millis(reads.max_lag_ms),
            Duration::from_millis(reads.check_ms),
        )?);
        // The first check runs before serving, so the first reads can already use replicas.
        replicas.check(&pool).await;
        for r in replicas.status() {
            match &r.error {
                None => tracing::info!(replica = %r.name, "reading from replica"),
                Some(e) => {
                    tracing::warn!(replica = %r.name, error = %e, "replica not usable yet; reading from the primary until it is")
                }
            }
        }
        checker = Some(replicas.spawn_checker(pool.clone()));
        db = db.with_replicas(replicas);
    }
    if demo_data && database.is_fresh_embedded() {
        let n = crate::seed::run(&db, DEMO, false).await?;
        tracing::info!(rows = n, "seeded demo data (pass --no-demo-data to skip)");
    }
    let schema = crate::api::build_schema_with(&limits);
    let live = crate::live::Live::start(database.url.clone(), db.scoped());
    let reaper = crate::store::jobs::reaper::spawn(db.scoped(), reap_interval()?);
    let trends = crate::store::trends::refresher::spawn(db.scoped(), trends_interval()?);
    let retention = crate::store::events::retention::spawn(
        db.scoped(),
        crate::config::event_retention()?,
        std::time::Duration::from_secs(60),
    );
    let auth = Authenticator::new(jwt, db.scoped());
    if auth.is_dev_mode() {
        tracing::warn!(
            "development mode: JWT_SECRET is not set, so every request is served as the \
             built-in admin ({DEV_SUBJECT}); only loopback addresses are allowed"
        );
    }
    let timeouts = http.timeouts;
    let metrics_listen = http.metrics_listen;
    let state = AppState::new(schema, db.clone(), live.clone(), auth, http);
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_LISTEN={addr}"))?;
        let app = crate::http::metrics_router(state.clone());
        tracing::info!("metrics at http://{addr}/metrics");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let stopping = state.clone();
    let app = router(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        "ready in {} ms: GraphQL at http://{}/graphql (open it in a browser for GraphiQL)",
        started.elapsed().as_millis(),
        listener.local_addr()?
    );
    let shutdown = async move {
        shutdown_signal().await;
        stopping.begin_shutdown();
    };
    crate::http::serve::serve(listener, app, timeouts, shutdown).await;
    tracing::info!("shutting down");
    reaper.abort();
    trends.abort();
    retention.abort();
    if let Some(c) = checker {
        c.abort();
    }
    live.stop();
    db.pool().close();
    if let Some(r) = db.replicas() {
        r.close();
    }
    Ok(())
}

/// How often the trend rollups are refreshed (`TRENDS_REFRESH_SECS`, default 60): the most a
/// `trends` answer lags behind, plus the refresh's own duration.
fn trends_interval() -> anyhow::Result<std::time::Duration> {
    let secs = crate::config::env_num("TRENDS_REFRESH_SECS", 60u64)?;
    if secs == 0 {
        anyhow::bail!("TRENDS_REFRESH_SECS must be at least 1");
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// How often this replica reaps expired job leases (`JOB_REAP_INTERVAL_MS`, default 5000).
fn reap_interval() -> anyhow::Result<std::time::Duration> {
    let ms = crate::config::env_num("JOB_REAP_INTERVAL_MS", 5_000u64)?;
    if ms == 0 {
        anyhow::bail!("JOB_REAP_INTERVAL_MS must be at least 1");
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// A development token for `sub` with `role`, valid for `ttl` (`90s`, `30m`, `12h`, `7d`).
pub fn mint_token(
    sub: &str,
    role: &str,
    ttl: &str,
    email: Option<String>,
) -> anyhow::Result<String> {
    let jwt = JwtConfig::from_env()?;
    if sub.trim().is_empty() {
        anyhow::bail!("--sub must not be empty");
    }
    let role = role.to_ascii_lowercase();
    if crate::auth::Role::from_db(&role).is_none() {
        anyhow::bail!("--role must be admin, manager, user or service, not {role:?}");
    }
    let secs = crate::config::parse_duration(ttl)
        .map_err(|e| anyhow::anyhow!("--ttl {e}"))?
        .as_secs();
    let now = crate::auth::jwt::now();
    jwt.mint(&Claims {
        sub: sub.to_owned(),
        exp: now + secs,
        nbf: Some(now),
        iat: Some(now),
        iss: jwt.issuer.clone(),
        aud: jwt.audience.clone().map(serde_json::Value::String),
        role: Some(role),
        email,
        name: None,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
