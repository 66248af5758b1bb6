//! Everything that speaks SQL, and nothing that speaks GraphQL or HTTP.
//!
//! Shared parts: the pool and per-request statement counting (here), migrations, the embedded
//! PostgreSQL default, a cacheable raw-SQL builder (`sql`), keyset paging (`page`), the one
//! visibility predicate (`scope`), lifecycles as data (`lifecycle`) and the request's batched
//! reads with their one child-list loader (`batch`). Each entity is a folder: its rows and
//! enums (`model`), its queries and writes (`repo`) and the keys of its batched reads.

pub mod agents;
pub mod audit;
pub mod backup;
pub mod batch;
pub mod bugs;
pub mod comments;
pub mod credentials;
pub mod embedded;
pub mod enums;
pub mod events;
pub mod evidence;
pub mod jobs;
pub mod json;
pub mod lifecycle;
pub mod listen;
pub mod page;
pub mod pages;
pub mod persisted;
pub mod replicas;
pub mod row;
pub mod schema;
pub mod scope;
pub mod search;
pub mod sessions;
pub mod sql;
pub mod tls;
pub mod trends;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::config::DbConfig;
use crate::error::{AppError, AppResult};

pub type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;
pub type Conn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The client settings of every connection the gateway opens, with its TLS connector (see
/// [`tls`]). `statement_timeout` travels in the startup packet, so it costs no extra round trip
/// and holds for every statement.
pub fn pg_config(
    url: &str,
    statement_timeout_ms: u64,
    application_name: &str,
) -> diesel::ConnectionResult<(
    tokio_postgres::Config,
    tokio_postgres_rustls::MakeRustlsConnect,
)> {
    let (mut cfg, tls) =
        tls::configure(url).map_err(diesel::ConnectionError::InvalidConnectionUrl)?;
    let mut options = cfg.get_options().unwrap_or_default().to_string();
    if statement_timeout_ms > 0 {
        options.push_str(&format!(" -c statement_timeout={statement_timeout_ms}"));
    }
    cfg.options(options.trim());
    if cfg.get_application_name().is_none() {
        cfg.application_name(application_name);
    }
    Ok((cfg, tls))
}

/// Opens one pooled-style connection with the gateway's session settings.
pub async fn connect(
    url: &str,
    statement_timeout_ms: u64,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let (cfg, tls) = pg_config(url, statement_timeout_ms, "bughive-gateway")?;
    let (client, connection) = cfg
        .connect(tls)
        .await
        .map_err(|e| diesel::ConnectionError::BadConnection(with_causes(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// An error with its causes: tokio-postgres says "error performing TLS handshake" and keeps the
/// reason (an unknown issuer, a name the certificate does not hold) in its source.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Builds the deadpool pool. Every timeout is bounded so an exhausted or unreachable database
/// surfaces as `UNAVAILABLE` instead of a request that hangs.
pub fn build_pool(cfg: &DbConfig) -> anyhow::Result<Pool> {
    let timeout = cfg.statement_timeout_ms;
    let mut mc = ManagerConfig::default();
    mc.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move { connect(&url, timeout).await }.boxed()
    });
    // Fast recycling skips a round trip per checkout; broken connections are dropped on error.
    mc.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&cfg.url, mc);
    let t = Some(Duration::from_millis(cfg.pool_timeout_ms));
    let pool = Pool::builder(manager)
        .max_size(cfg.pool_size)
        .wait_timeout(t)
        .create_timeout(t)
        .recycle_timeout(t)
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
    Ok(pool)
}

/// Statements issued on behalf of one request, counted by diesel's instrumentation hook on each
/// connection the request checks out. Tests and the benchmark read it to prove batching; a
/// recording handle ([`Db::recording`]) also keeps each statement's text and duration.
#[derive(Debug, Default)]
pub struct QueryStats {
    statements: AtomicU64,
    log: Option<Mutex<Vec<Statement>>>,
}

/// One statement a request ran, as the playground's SQL panel shows it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL text with `$n` placeholders (no bound values).
    pub sql: String,
    /// From sending it to its last row.
    pub ms: f64,
}

impl QueryStats {
    fn new(record: bool) -> Self {
        QueryStats {
            statements: AtomicU64::new(0),
            log: record.then(Mutex::default),
        }
    }

    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The statements run so far, in order of completion; empty unless recording.
    pub fn log(&self) -> Vec<Statement> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }
}

/// The statement without its bound values: diesel's debug form appends them (`-- binds: […]`),
/// and they are data (emails, titles) that neither the SQL panel nor a trace backend should see.
fn statement_text(debug: &str) -> String {
    debug
        .split_once(" -- binds: ")
        .map_or(debug, |(sql, _)| sql)
        .to_owned()
}

struct Counting {
    stats: Arc<QueryStats>,
    /// The statement in flight on this connection, when recording.
    running: Option<(String, Instant)>,
    /// Its trace span, while traces are exported: closed when the statement finishes.
    span: Option<tracing::Span>,
}

impl Instrumentation for Counting {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                self.stats.statements.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(target: "bughive::sql", %query);
                let traced = crate::telemetry::enabled();
                if self.stats.log.is_some() || traced {
                    let sql = statement_text(&query.to_string());
                    if traced {
                        self.span = Some(tracing::info_span!(
                            "sql",
                            db.system = "postgresql",
                            db.statement = %sql,
                            otel.kind = "client",
                        ));
                    }
                    if self.stats.log.is_some() {
                        self.running = Some((sql, Instant::now()));
                    }
                }
            }
            InstrumentationEvent::FinishQuery { .. } => {
                self.span = None;
                if let (Some(log), Some((sql, started))) = (&self.stats.log, self.running.take()) {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Statement { sql, ms });
                }
            }
            _ => {}
        }
    }
}

/// The pool plus the statement counter of the request (or task) that uses it, and where its
/// reads go: the primary, or one read replica chosen for the whole request (`for_read`).
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    stats: Arc<QueryStats>,
    record: bool,
    replicas: Option<Arc<replicas::Replicas>>,
    /// The replica this handle reads from; `None` is the primary.
    target: Option<usize>,
    /// The keys that seal sessions' credentials (`CREDENTIALS_KEY`), when configured.
    keyring: Option<Arc<credentials::cipher::Keyring>>,
}

impl Db {
    pub fn new(pool: Pool) -> Self {
        Db {
            pool,
            stats: Arc::default(),
            record: false,
            replicas: None,
            target: None,
            keyring: None,
        }
    }

    /// This handle, sealing and opening sessions' credentials with `keyring`.
    pub fn with_keyring(mut self, keyring: Option<Arc<credentials::cipher::Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    pub fn keyring(&self) -> Option<Arc<credentials::cipher::Keyring>> {
        self.keyring.clone()
    }

    /// This handle, with read replicas that [`Db::for_read`] may route to.
    pub fn with_replicas(mut self, replicas: Arc<replicas::Replicas>) -> Self {
        self.replicas = Some(replicas).filter(|r| !r.is_empty());
        self
    }

    /// A handle sharing the pool but counting into a fresh counter (recording, if this one
    /// records).
    pub fn scoped(&self) -> Self {
        Db {
            stats: Arc::new(QueryStats::new(self.record)),
            ..self.clone()
        }
    }

    /// A handle whose scoped handles also keep each statement's text and duration.
    pub fn recording(&self) -> Self {
        Db {
            record: true,
            ..self.scoped()
        }
    }

    /// A handle for a read-only request: a usable replica that has replayed `min_lsn` (the
    /// client's last write), else the primary. The choice holds for the whole request, so all
    /// its levels read one server's state.
    pub fn for_read(&self, min_lsn: Option<replicas::Lsn>) -> Self {
        let Some(replicas) = &self.replicas else {
            return self.clone();
        };
        let target = replicas.pick(min_lsn);
        let to = if target.is_some() {
            "replica"
        } else {
            "primary"
        };
        metrics::counter!("bughive_db_reads_total", "target" => to).increment(1);
        Db {
            target,
            ..self.clone()
        }
    }

    /// The read replicas, when reads may go to them (so writes report their WAL position).
    pub fn replicas(&self) -> Option<&Arc<replicas::Replicas>> {
        self.replicas.as_ref()
    }

    /// The primary's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn stats(&self) -> &Arc<QueryStats> {
        &self.stats
    }

    /// Checks a connection out and points its instrumentation at this handle's counter. A
    /// replica that cannot be reached is marked down and the primary answers instead.
    pub async fn conn(&self) -> AppResult<Conn> {
        let replica = match (&self.replicas, self.target) {
            (Some(r), Some(i)) => r.conn(i).await,
            _ => None,
        };
        let mut conn = match replica {
            Some(c) => c,
            None => self.pool.get().await?,
        };
        conn.set_instrumentation(Counting {
            stats: self.stats.clone(),
            running: None,
            span: None,
        });
        Ok(conn)
    }

    /// The primary's WAL position now, for a client to read its own writes from a replica.
    pub async fn primary_lsn(&self) -> AppResult<replicas::Lsn> {
        let primary = Db {
            target: None,
            ..self.clone()
        };
        replicas::current_lsn(&mut primary.conn().await?).await
    }
}

/// The advisory lock migrations run under, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x0062_7567_6869_7665; // "bughive" in ASCII

/// Applies pending migrations on a dedicated connection. Runs at start-up only.
///
/// Several replicas may start at the same moment: each takes the same advisory lock first, so
/// one migrates while the others wait, and then find nothing left to do. A database that holds
/// a migration this build does not know (a newer gateway migrated it) is refused: running old
/// code on a newer schema is how data gets lost.
pub async fn run_migrations(url: &str) -> anyhow::Result<usize> {
    use diesel::migration::MigrationSource;
    use diesel_async::SimpleAsyncConnection;
    let mut conn = connect(url, 0).await?;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await?;
    let known: std::collections::HashSet<String> =
        MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("reading the migrations: {e}"))?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
    let applied = applied_versions(&mut conn).await?;
    if let Some(newer) = applied.iter().find(|v| !known.contains(*v)) {
        let newest = known.iter().max().cloned().unwrap_or_default();
        anyhow::bail!(
            "the database has migration {newer}, which this gateway does not know (its newest is \
             {newest}): it was migrated by a newer version; run that version, or revert with it"
        );
    }
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    let (result, harness) = tokio::task::spawn_blocking(move || {
        let r = harness
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        (r, harness)
    })
    .await?;
    // Dropping the connection would release the lock too; unlocking says so.
    let mut conn = harness.into_inner();
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await?;
    result
}

/// Versions recorded as applied; none when the database was never migrated.
async fn applied_versions(conn: &mut AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct V {
        #[diesel(sql_type = Text)]
        version: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        e: bool,
    }
    let exists: Exists =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS e")
            .get_result(conn)
            .await?;
    if !exists.e {
        return Ok(Vec::new());
    }
    let rows: Vec<V> = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|r| r.version).collect())
}

/// Migrations this build has that the database lacks, oldest first (`migrate --check`).
pub async fn pending_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    use diesel::migration::MigrationSource;
    let mut conn = connect(url, 0).await?;
    let applied: std::collections::HashSet<String> =
        applied_versions(&mut conn).await?.into_iter().collect();
    let mut pending: Vec<String> = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("reading the migrations: {e}"))?
        .iter()
        .filter(|m| !applied.contains(&m.name().version().to_string()))
        .map(|m| m.name().to_string())
        .collect();
    pending.sort();
    Ok(pending)
}

/// Reverts the newest applied migration and returns its version.
pub async fn revert_last_migration(url: &str) -> anyhow::Result<String> {
    let conn = connect(url, 0).await?;
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    tokio::task::spawn_blocking(move || {
        harness
            .revert_last_migration(MIGRATIONS)
            .map(|v| v.to_string())
            .map_err(|e| anyhow::anyhow!("revert failed: {e}"))
    })
    .await?
}

/// Reverts every migration and applies them again; proves each `down.sql` undoes its `up.sql`.
pub async fn redo_all_migrations(url: &str) -> anyhow::Result<(usize, usize)> {
    let conn = connect(url, 0).await?;
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    tokio::task::spawn_blocking(move || {
        let down = harness
            .revert_all_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("revert failed: {e}"))?
            .len();
        let up = harness
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?
            .len();
        Ok((down, up))
    })
    .await?
}

/// PostgreSQL's estimate of each table's rows (`pg_class.reltuples`; -1 before the first
/// analyze), for the metrics: free to read, unlike `count(*)`.
pub async fn table_rows_estimate(db: &Db) -> AppResult<Vec<(String, f64)>> {
    use diesel::sql_types::{Double, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct R {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Double)]
        rows: f64,
    }
    let mut conn = db.conn().await?;
    let rows: Vec<R> = diesel::sql_query(
        "SELECT relname::text AS name, reltuples::float8 AS rows FROM pg_class \
         WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1",
    )
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.rows)).collect())
}

/// True when every embedded migration has been applied; `/ready` reports it.
pub async fn migrations_applied(db: &Db) -> AppResult<bool> {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let versions: Vec<String> =
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
            .map_err(AppError::internal)?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
    let mut conn = db.conn().await?;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM __diesel_schema_migrations WHERE version = ANY($1)",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&versions)
    .get_result(&mut conn)
    .await
    .map_err(AppError::from)?;
    Ok(n.n as usize == versions.len())
}

/// Runs a write path to completion even if the request future that started it is dropped.
///
/// A client disconnect cancels its request future; cancelling diesel-async mid-transaction can leave
/// the connection with an open transaction (diesel_async#198). Spawning the write makes it finish
/// (commit or roll back) on its own task while the caller merely awaits the result.
pub async fn run_detached<T, F>(fut: F) -> AppResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = AppResult<T>> + Send + 'static,
{
    // The write keeps the request's trace: its statements are children of the request's span.
    tokio::spawn(tracing::Instrument::in_current_span(fut))
        .await
        .map_err(|e| AppError::internal(format!("write task failed: {e}")))?
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

impl From<PoolError> for AppError {
    fn from(e: PoolError) -> Self {
        use deadpool::managed::PoolError as P;
        match e {
            P::Timeout(_) => {
                metrics::counter!("bughive_db_pool_timeouts_total").increment(1);
                AppError::Unavailable("database pool exhausted".into())
            }
            P::Backend(e) => AppError::Unavailable(format!("database unreachable: {e}")),
            P::Closed => AppError::Unavailable("database pool closed".into()),
            other => AppError::internal(other),
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use crate::error::AppError;

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
            AppError::from(PoolError::Timeout(TimeoutType::Wait)).code(),
            "UNAVAILABLE"
        );
        assert_eq!(AppError::from(PoolError::Closed).code(), "UNAVAILABLE");
    }
}
