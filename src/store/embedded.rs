//! The embedded default: a private PostgreSQL cluster created and managed from the system's
//! server binaries, so `cargo run` works without any database set-up.
//!
//! The cluster listens on a unix socket in a private directory only (no TCP port), so it never
//! collides with another PostgreSQL on the machine. As root it runs as the `postgres` system user,
//! because PostgreSQL refuses to run as root.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// The role and database the embedded cluster serves.
pub const DB_USER: &str = "bughive";
pub const DB_NAME: &str = "bughive";

/// How the cluster is started. The server uses durable settings; the test harness trades
/// durability for speed.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// Extra `-c name=value` settings passed to the postmaster.
    pub settings: Vec<(String, String)>,
}

impl EmbeddedOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            data_dir: data_dir.into(),
            settings: Vec::new(),
        }
    }

    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A running cluster. Dropping it does not stop it: call [`EmbeddedPg::stop`] on shutdown, so a
/// crash leaves a postmaster that the next start adopts instead of a half-stopped one.
#[derive(Debug)]
pub struct EmbeddedPg {
    bindir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// True when this start ran `initdb`: the caller seeds demo data only then.
    pub created: bool,
    /// True when a postmaster left over from an earlier run was adopted.
    pub adopted: bool,
}

/// Finds the server binaries: `PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`, else
/// `pg_config --bindir`.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    locate_bindir(
        std::env::var_os("PG_BINDIR").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
        "pg_config",
    )
}

/// [`find_bindir`] with its inputs spelled out, so the search order can be tested.
pub fn locate_bindir(
    explicit: Option<PathBuf>,
    versions_root: &Path,
    pg_config: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        bail!(
            "PG_BINDIR={} has no initdb; point it at PostgreSQL's server binaries",
            dir.display()
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new(pg_config).arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "no PostgreSQL server binaries found: install them with `apt-get install postgresql`, or set DATABASE_URL to use an existing database"
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let name = CString::new("postgres")?;
    // SAFETY: getpwnam gets a valid C string; the result is read before any other passwd call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, but there is no 'postgres' system user to run PostgreSQL as");
    }
    // SAFETY: pw was checked non-null and points to a static passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

/// As root, every ancestor of the data directory must be searchable by the postgres user.
fn check_reachable(dir: &Path, uid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for anc in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(anc) else {
            continue;
        };
        let searchable =
            meta.mode() & 0o001 != 0 || (meta.uid() == uid && meta.mode() & 0o100 != 0);
        if !searchable {
            bail!(
                "PostgreSQL runs as the 'postgres' user, which cannot enter {}; set BUGHIVE_DATA_DIR to a directory it can reach (for example /var/tmp/bughive)",
                anc.display()
            );
        }
    }
    Ok(())
}

impl EmbeddedPg {
    /// Creates the cluster on first use, adopts a leftover postmaster, or starts it.
    pub fn start(opts: &EmbeddedOptions) -> anyhow::Result<Self> {
        let bindir = find_bindir()?;
        std::fs::create_dir_all(opts.data_dir.parent().unwrap_or(Path::new(".")))?;
        let data_dir = std::path::absolute(&opts.data_dir)?;
        let run_as = if is_root() {
            let (uid, gid) = postgres_user()?;
            check_reachable(&data_dir, uid)?;
            Some((uid, gid))
        } else {
            None
        };
        // The socket lives in the data directory when its path fits the 107-byte limit of
        // sockaddr_un, else in a private directory under /tmp.
        let socket_dir = if data_dir.as_os_str().len() + 20 < 100 {
            data_dir.clone()
        } else {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in data_dir.as_os_str().as_encoded_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
            }
            std::env::temp_dir().join(format!("bughive-sock-{h:016x}"))
        };
        let mut pg = EmbeddedPg {
            bindir,
            data_dir,
            socket_dir,
            port: 5432,
            run_as,
            created: false,
            adopted: false,
        };
        if !pg.data_dir.join("PG_VERSION").is_file() {
            pg.init()?;
            pg.created = true;
        }
        if let Some((port, sock)) = pg.running_postmaster() {
            pg.port = port;
            pg.socket_dir = sock;
            pg.adopted = true;
            tracing::info!(data_dir = %pg.data_dir.display(), "adopted a running PostgreSQL left over from an earlier run");
        } else {
            pg.launch(opts)?;
        }
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", &self.data_dir);
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn run(&self, cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
        let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    fn prepare_dir(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = self.run_as {
            chown(dir, uid, gid)?;
        }
        Ok(())
    }

    fn init(&self) -> anyhow::Result<()> {
        self.prepare_dir(&self.data_dir)?;
        let t = Instant::now();
        self.run(
            self.command("initdb").arg("-D").arg(&self.data_dir).args([
                "-U",
                DB_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]),
            "initdb",
        )?;
        tracing::info!(data_dir = %self.data_dir.display(), elapsed_ms = t.elapsed().as_millis() as u64, "created PostgreSQL cluster");
        Ok(())
    }

    /// Port and socket directory of a live postmaster on this data directory, if any.
    fn running_postmaster(&self) -> Option<(u16, PathBuf)> {
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = pid_file.lines().collect();
        let pid: i32 = lines.first()?.trim().parse().ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM };
        if !alive {
            return None;
        }
        let status = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data_dir)
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let port = lines.get(3)?.trim().parse().ok()?;
        let sock = PathBuf::from(lines.get(4)?.trim());
        sock.join(format!(".s.PGSQL.{port}"))
            .exists()
            .then_some((port, sock))
    }

    fn launch(&self, opts: &EmbeddedOptions) -> anyhow::Result<()> {
        if self.socket_dir != self.data_dir {
            self.prepare_dir(&self.socket_dir)?;
        }
        let mut pg_opts = format!(
            "-c listen_addresses='' -k '{}' -p {} -c unix_socket_permissions=0700",
            self.socket_dir.display(),
            self.port
        );
        for (k, v) in &opts.settings {
            pg_opts.push_str(&format!(" -c {k}={v}"));
        }
        let t = Instant::now();
        self.run(
            self.command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(self.data_dir.join("server.log"))
                .args(["-w", "-t", "30", "-s", "-o", &pg_opts]),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow!(
                "{e}\nserver.log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })?;
        tracing::info!(socket_dir = %self.socket_dir.display(), elapsed_ms = t.elapsed().as_millis() as u64, "started embedded PostgreSQL");
        Ok(())
    }

    /// A libpq-style connection string for `dbname` over the private socket.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host='{}' port={} user={DB_USER} dbname='{dbname}'",
            self.socket_dir.display(),
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the cluster's unix socket (its `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The user the server runs as, when this process runs as root.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// Creates the database unless it exists.
    pub async fn ensure_database(&self, dbname: &str) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to the embedded PostgreSQL")?;
        let driver = tokio::spawn(conn);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await?
            .is_some();
        if !exists {
            let quoted = dbname.replace('"', "\"\"");
            match client
                .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
                .await
            {
                Ok(()) => {}
                // Another process created it between our check and our CREATE.
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(e.into()),
            }
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// Stops the cluster (fast shutdown: open sessions are rolled back, data is kept).
    pub fn stop(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        self.run(
            self.command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "-t", "30", "-s"]),
            "pg_ctl stop",
        )?;
        tracing::info!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            "stopped embedded PostgreSQL"
        );
        Ok(())
    }

    /// Restarts the postmaster in place (used by resilience tests).
    pub fn restart(&self, opts: &EmbeddedOptions) -> anyhow::Result<()> {
        self.stop()?;
        std::thread::sleep(Duration::from_millis(50));
        self.launch(opts)
    }
}
