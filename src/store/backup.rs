//! Backups with PostgreSQL's own tools: `pg_dump` custom-format archives, named by time and
//! rotated, and `pg_restore` into an empty database. The binaries are the system's, found as the
//! embedded default finds them; the connection string goes to them as is, so TLS settings and
//! unix sockets work alike.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::store::embedded::find_bindir;

const PREFIX: &str = "bughive-";
const SUFFIX: &str = ".dump";

/// Writes a new archive of the database into `dir`, then deletes all but the newest `keep`
/// archives there. `progress` hears each object as `pg_dump` writes it.
pub fn backup(
    url: &str,
    dir: &Path,
    keep: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!(
        "{PREFIX}{}{SUFFIX}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f")
    );
    let file = dir.join(name);
    let partial = file.with_extension("dump.partial");
    let mut child = Command::new(find_bindir()?.join("pg_dump"))
        .arg("--format=custom")
        .arg("--verbose")
        .arg("--no-owner")
        .arg(format!("--file={}", partial.display()))
        .arg(format!("--dbname={url}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pg_dump")?;
    let mut errors = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.strip_prefix("pg_dump: ") {
                Some(msg) if !msg.starts_with("error") => progress(msg),
                _ => errors.push(line),
            }
        }
    }
    let status = child.wait().context("waiting for pg_dump")?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("pg_dump failed: {}", errors.join("; "));
    }
    // Only a complete archive gets an archive's name, so rotation never keeps a torn one.
    std::fs::rename(&partial, &file).context("naming the archive")?;
    rotate(dir, keep)?;
    Ok(file)
}

/// Deletes all but the newest `keep` archives of `dir`; names sort by time.
fn rotate(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    archives.sort();
    let excess = archives.len().saturating_sub(keep.max(1));
    for old in &archives[..excess] {
        std::fs::remove_file(old).with_context(|| format!("deleting {}", old.display()))?;
    }
    Ok(())
}

/// Restores an archive into the database. A database that already has tables is refused unless
/// `force`, which drops what the archive holds before restoring it.
pub async fn restore(url: &str, file: &Path, force: bool) -> anyhow::Result<()> {
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let tables = table_count(url).await?;
    if tables > 0 && !force {
        bail!(
            "the database is not empty ({tables} tables): restore into an empty one, or pass --force to replace its contents"
        );
    }
    let mut cmd = Command::new(find_bindir()?.join("pg_restore"));
    cmd.arg("--no-owner")
        .arg("--exit-on-error")
        .arg(format!("--dbname={url}"));
    if tables > 0 {
        cmd.arg("--clean").arg("--if-exists");
    }
    let out = cmd.arg(file).output().context("starting pg_restore")?;
    if !out.status.success() {
        bail!(
            "pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn table_count(url: &str) -> anyhow::Result<i64> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = super::connect(url, 0).await?;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .get_result(&mut conn)
    .await?;
    Ok(n.n)
}
