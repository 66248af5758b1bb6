use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use bughive_gateway::app::{self, Database};
use bughive_gateway::config::DbConfig;
use bughive_gateway::seed::{self, SeedPlan};
use bughive_gateway::store::{Db, build_pool, pending_migrations, revert_last_migration};
use clap::{Parser, Subcommand};

/// glibc malloc showed up as 40% of the gateway's CPU under load, much of it arena-lock
/// contention between worker threads, and its per-thread arenas inflated RSS; mimalloc's
/// thread-local free lists avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// GraphQL gateway for autonomous-QA data (crawl sessions, pages, bugs).
///
/// Without DATABASE_URL it runs its own PostgreSQL cluster in ./.bughive/pg.
#[derive(Parser)]
#[command(name = "bughive-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP and WebSocket (the default).
    Serve(ServeArgs),
    /// Apply pending migrations, or revert the newest one.
    Migrate {
        #[arg(long)]
        revert: bool,
        /// Apply nothing: exit with status 1 when migrations are pending (for deploy pipelines).
        #[arg(long, conflicts_with = "revert")]
        check: bool,
    },
    /// Write deterministic demo data in bulk.
    Seed {
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        #[arg(long, default_value_t = 50)]
        pages_per_session: usize,
        #[arg(long, default_value_t = 3)]
        bugs_per_page: usize,
    },
    /// Print the GraphQL SDL.
    Schema,
    /// Re-seal every session's credentials under CREDENTIALS_KEY: the last step of a key
    /// rotation, after which CREDENTIALS_KEY_PREVIOUS can go.
    RotateCredentials,
    /// Write a pg_dump archive of the database (named by time), keeping the newest N.
    Backup {
        /// Where archives go.
        #[arg(long, default_value = "backups")]
        dir: std::path::PathBuf,
        /// How many archives to keep in DIR, this one included.
        #[arg(long, default_value_t = 7)]
        keep: usize,
    },
    /// Restore a pg_dump archive into an empty database.
    Restore {
        file: std::path::PathBuf,
        /// Replace the contents of a database that is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Mint a development token (HS256, signed with JWT_SECRET).
    Token {
        /// The subject (`sub`): the user's identity.
        #[arg(long)]
        sub: String,
        /// admin, manager, user or service.
        #[arg(long, default_value = "user")]
        role: String,
        /// Lifetime, e.g. 30m, 12h, 7d (default 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8000")]
    listen: Option<SocketAddr>,
    /// Do not seed demo data on the embedded database's first start.
    #[arg(long)]
    no_demo_data: bool,
}

fn main() -> std::process::ExitCode {
    bughive_gateway::memory::tune();
    // One JSON object per line with LOG_FORMAT=json (for log shippers); colours only on a
    // terminal, so log files hold no escape codes.
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=info".into());
    let traces = match bughive_gateway::telemetry::layer() {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        registry.with(logs).init();
    } else {
        use std::io::IsTerminal;
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        registry.with(logs).init();
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Buffered spans go out before the process does.
    bughive_gateway::telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let listen = args
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000)));
            app::serve(listen, !args.no_demo_data).await
        }
        Command::Migrate { check: true, .. } => {
            let database = Database::open(false).await?;
            let pending = pending_migrations(&database.url).await;
            database.close();
            let pending = pending?;
            if pending.is_empty() {
                println!("all migrations are applied");
                return Ok(());
            }
            for m in &pending {
                println!("pending: {m}");
            }
            std::process::exit(1);
        }
        Command::Migrate { revert, .. } => {
            let database = Database::open(!revert).await?;
            let result = if revert {
                revert_last_migration(&database.url)
                    .await
                    .map(|v| println!("reverted migration {v}"))
            } else {
                println!("all migrations are applied");
                Ok(())
            };
            database.close();
            result
        }
        Command::RotateCredentials => {
            let keyring = bughive_gateway::store::credentials::cipher::Keyring::from_env()
                .map_err(|e| anyhow::anyhow!(e))?
                .context("CREDENTIALS_KEY is not set: nothing to rotate to")?;
            let database = Database::open(true).await?;
            let result = async {
                let db = Db::new(build_pool(&DbConfig::from_env(database.url.clone())?)?);
                let total =
                    bughive_gateway::store::credentials::repo::reseal_all(&db, keyring.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!(e.message()))?;
                println!(
                    "re-sealed {total} sessions' credentials under key {}",
                    keyring.current_id()
                );
                Ok(())
            }
            .await;
            database.close();
            result
        }
        Command::Seed {
            sessions,
            pages_per_session,
            bugs_per_page,
        } => {
            let database = Database::open(true).await?;
            let result = async {
                let db = Db::new(build_pool(&DbConfig::from_env(database.url.clone())?)?);
                let t = Instant::now();
                let plan = SeedPlan {
                    sessions,
                    pages_per_session,
                    bugs_per_page,
                    vary_bugs: false,
                };
                let n = seed::run(&db, plan, true).await.context("seeding")?;
                println!(
                    "seeded {n} rows ({sessions} sessions x {pages_per_session} pages x {bugs_per_page} bugs) in {} ms",
                    t.elapsed().as_millis()
                );
                Ok(())
            }
            .await;
            database.close();
            result
        }
        Command::Backup { dir, keep } => {
            let database = Database::open(false).await?;
            let url = database.url.clone();
            let result = tokio::task::spawn_blocking(move || {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                let file = bughive_gateway::store::backup::backup(&url, &dir, keep, |step| {
                    bar.set_message(step.to_owned());
                });
                bar.finish_and_clear();
                file
            })
            .await
            .context("backup task")
            .and_then(|r| r);
            database.close();
            let file = result?;
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!("wrote {} ({size} bytes)", file.display());
            Ok(())
        }
        Command::Restore { file, force } => {
            // Restored as it was dumped, migrations included: nothing is migrated first.
            let database = Database::open(false).await?;
            let result = bughive_gateway::store::backup::restore(&database.url, &file, force).await;
            database.close();
            result?;
            println!("restored {}", file.display());
            Ok(())
        }
        Command::Schema => {
            print!("{}", bughive_gateway::api::sdl());
            Ok(())
        }
        Command::Token {
            sub,
            role,
            ttl,
            email,
        } => {
            let token = app::mint_token(&sub, &role, &ttl, email)?;
            println!("{token}");
            Ok(())
        }
    }
}
