//! Encrypted backups of the server database, and restores into a fresh server.
//!
//! A backup file is one header line naming the format and the backend, then a sealed stream
//! (`chartroom_crypto::stream`, AES-256-GCM in chunks bound to the header) under a key derived from
//! the master key — which is never in the file. Inside the stream:
//! - embedded backend: a consistent copy of the database made with `sqlcipher_export` (itself a
//!   SQLCipher file under the database key);
//! - PostgreSQL: a `pg_dump --format=custom` of the database (patient columns are sealed already;
//!   the stream also hides usernames, device names and who-accessed-what).
//!
//! Restoring needs the same master key: a fresh server is a data directory holding a copy of the
//! original's `keys/`, `tls/` and `config.json` (kept apart from database backups), and no database.
//! The backup and the restore are both recorded in the audit trail.

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chartroom_crypto::DataKey;

use crate::{DataDir, ServerError};

const MAGIC: &str = "chartroom-backup v1";

/// What a backup or restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Bytes of database (before sealing).
    pub bytes: u64,
}

fn backup_key(dir: &DataDir) -> Result<DataKey, ServerError> {
    Ok(DataKey::derive(b"chartroom/server-backup/v1", &*dir.master_key()?, b"backup"))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::Backup(format!("{what}: {}", e.kind()))
}

/// Writes an encrypted backup of `dir`'s database to `out` (refusing to replace a file).
pub fn backup(
    dir: &DataDir,
    out: &Path,
    now: chartroom_domain::Timestamp,
) -> Result<BackupReport, ServerError> {
    if out.exists() {
        return Err(ServerError::Backup("the output file exists; refusing to replace it".into()));
    }
    let storage = dir.open_storage()?;
    // Recorded first, so that the backup holds its own record.
    crate::audit::admin_action(&*storage, "backup", "database", &out.display().to_string(), now)?;
    drop(storage);
    let key = backup_key(dir)?;
    let tmp = sibling(out, "partial");
    let result = (|| {
        let mut file = BufWriter::new(private_file(&tmp)?);
        let (backend, bytes) = match dir.database_url()? {
            None => {
                let header = format!("{MAGIC} sqlite\n");
                file.write_all(header.as_bytes()).map_err(io("writing the backup"))?;
                let export = sibling(&dir.database_path(), "export");
                let exported = sqlite_export(dir, &export);
                let bytes = exported.and_then(|()| {
                    let mut input = fs::File::open(&export).map_err(io("reading the export"))?;
                    key.seal_stream(header.as_bytes(), &mut input, &mut file)
                        .map_err(io("writing the backup"))
                });
                let _ = fs::remove_file(&export);
                ("sqlite", bytes?)
            }
            Some(url) => {
                let header = format!("{MAGIC} postgres\n");
                file.write_all(header.as_bytes()).map_err(io("writing the backup"))?;
                let mut child = pg_command("pg_dump", &url)?
                    .args(["--format=custom", "--no-owner", "--no-privileges"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|_| {
                        ServerError::Backup(
                            "pg_dump could not be started (is postgresql-client installed?)".into(),
                        )
                    })?;
                let mut dump = child.stdout.take().ok_or(ServerError::Internal("pg_dump output"))?;
                let sealed = key.seal_stream(header.as_bytes(), &mut dump, &mut file);
                // Unread output would block pg_dump (and this wait) for ever.
                drop(dump);
                if sealed.is_err() {
                    let _ = child.kill();
                }
                let status = child.wait_with_output().map_err(io("pg_dump"))?;
                if !status.status.success() {
                    return Err(ServerError::Backup(tool_failure("pg_dump", &status.stderr)));
                }
                ("postgres", sealed.map_err(io("writing the backup"))?)
            }
        };
        let file = file.into_inner().map_err(|e| io("writing the backup")(e.into_error()))?;
        file.sync_all().map_err(io("writing the backup"))?;
        Ok(BackupReport { backend, bytes })
    })();
    let placed = result.and_then(|report| place(&tmp, out).map(|()| report));
    let _ = fs::remove_file(&tmp);
    placed
}

/// Restores a backup made by [`backup`] into `dir`, a server with the original's keys and no
/// database yet (embedded: no `server.db`; PostgreSQL: an empty database). A damaged backup, or one
/// made under another master key, restores nothing.
pub fn restore(
    dir: &DataDir,
    from: &Path,
    now: chartroom_domain::Timestamp,
) -> Result<BackupReport, ServerError> {
    let key = backup_key(dir)?;
    let mut input = BufReader::new(fs::File::open(from).map_err(io("reading the backup"))?);
    let mut header = String::new();
    input.by_ref().take(64).read_line(&mut header).map_err(io("reading the backup"))?;
    let backend = match header.strip_prefix(MAGIC).map(str::trim) {
        Some("sqlite") => "sqlite",
        Some("postgres") => "postgres",
        _ => return Err(ServerError::Backup("this is not a Chartroom backup".into())),
    };
    let url = dir.database_url()?;
    let bytes =
        match (backend, url) {
            ("sqlite", None) => {
                let target = dir.database_path();
                // A stale write-ahead log beside the target would be replayed into the restored file.
                let wal = |suffix: &str| target.with_file_name(format!("server.db{suffix}"));
                if target.exists() || wal("-wal").exists() || wal("-shm").exists() {
                    return Err(ServerError::Backup(
                        "this server already has a database; restore into a fresh one".into(),
                    ));
                }
                let tmp = sibling(&target, "restoring");
                let opened = (|| {
                    let mut file = BufWriter::new(private_file(&tmp)?);
                    let n = key
                        .open_stream(header.as_bytes(), &mut input, &mut file)
                        .map_err(|e| ServerError::Backup(e.to_string()))?;
                    file.into_inner()
                        .map_err(|e| io("restoring")(e.into_error()))?
                        .sync_all()
                        .map_err(io("restoring"))?;
                    Ok(n)
                })();
                let placed = opened.and_then(|n| place(&tmp, &target).map(|()| n));
                let _ = fs::remove_file(&tmp);
                placed?
            }
            ("postgres", Some(url)) => {
                let mut child = pg_command("pg_restore", &url)?
                    .args([
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        "--single-transaction",
                        "--dbname",
                    ])
                    .arg(without_password(&url))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|_| {
                        ServerError::Backup(
                            "pg_restore could not be started (is postgresql-client installed?)".into(),
                        )
                    })?;
                let mut stdin = child.stdin.take().ok_or(ServerError::Internal("pg_restore input"))?;
                let opened = key.open_stream(header.as_bytes(), &mut input, &mut stdin);
                if opened.is_err() {
                    // Nothing commits: the restore runs in one transaction, which dies with the process.
                    let _ = child.kill();
                }
                drop(stdin);
                let status = child.wait_with_output().map_err(io("pg_restore"))?;
                match opened {
                    // Damage is the cause (pg_restore was stopped because of it).
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        return Err(ServerError::Backup(e.to_string()))
                    }
                    // pg_restore stopped first (e.g. a database that is not empty): its reason.
                    _ if !status.status.success() => {
                        return Err(ServerError::Backup(tool_failure("pg_restore", &status.stderr)))
                    }
                    opened => opened.map_err(|e| ServerError::Backup(e.to_string()))?,
                }
            }
            ("sqlite", Some(_)) => {
                return Err(ServerError::Backup(
                    "this backup is of an embedded database; this server uses PostgreSQL".into(),
                ))
            }
            _ => return Err(ServerError::Backup(
                "this backup is of a PostgreSQL database; this server has none configured (--database-url)"
                    .into(),
            )),
        };
    // Opening checks the key binding and the schema version, and records the restore.
    let storage = dir.open_storage()?;
    crate::audit::admin_action(&*storage, "restore", "database", &from.display().to_string(), now)?;
    Ok(BackupReport { backend, bytes })
}

/// A consistent copy of the embedded database at `to`, under the same database key.
fn sqlite_export(dir: &DataDir, to: &Path) -> Result<(), ServerError> {
    let key = crate::storage::SqliteStorage::database_key(&*dir.master_key()?);
    crate::storage::SqliteStorage::export_copy(&dir.database_path(), &key, to, &key)
}

/// `pg_dump`/`pg_restore` for `url`: the password goes in the environment, never on a command line
/// (other local users can read those).
fn pg_command(tool: &str, url: &str) -> Result<Command, ServerError> {
    // The driver reads the user part; it does not know libpq's `sslmode=verify-full`, so only the
    // part before the parameters is given to it.
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let config: tokio_postgres::Config = base
        .parse()
        .map_err(|_| ServerError::Database("--database-url: not a valid postgres:// URL".into()))?;
    let mut command = Command::new(tool);
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
    }
    if tool == "pg_dump" {
        command.arg(without_password(url));
    }
    Ok(command)
}

/// `url` without the password of its user part.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// A tool's failure in one line, without its output (which can quote values).
fn tool_failure(tool: &str, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    if text.contains("already exists") {
        return format!("{tool}: the target database is not empty; restore into a fresh one");
    }
    format!("{tool} failed")
}

/// Puts the finished `tmp` at `to`, never replacing a file there: a hard link where the file system
/// has them, else a rename after checking (backup shares are often FAT or SMB).
fn place(tmp: &Path, to: &Path) -> Result<(), ServerError> {
    match fs::hard_link(tmp, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ServerError::Backup(format!("{} exists; refusing to replace it", to.display())))
        }
        Err(_) if !to.exists() => fs::rename(tmp, to).map_err(io("placing the file")),
        Err(e) => Err(io("placing the file")(e)),
    }
}

fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}", uuid::Uuid::new_v4().simple()))
}

fn private_file(path: &Path) -> Result<fs::File, ServerError> {
    crate::datadir::create_new(path, 0o600).map_err(io("creating a file"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_a_command_line() {
        assert_eq!(
            super::without_password("postgres://chartroom:s3cret@db:5432/chartroom?sslmode=verify-full"),
            "postgres://chartroom@db:5432/chartroom?sslmode=verify-full"
        );
        assert_eq!(super::without_password("postgres://db/x"), "postgres://db/x");
    }
}
