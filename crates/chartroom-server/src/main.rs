//! `chartroom-server`: parses arguments and calls the server library (DESIGN §10). Every failure is
//! one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chartroom_crypto::Password;
use chartroom_domain::{DeviceProfile, Role};
use chartroom_server::audit::admin_action;
use chartroom_server::devices::issue_token;
use chartroom_server::users::add_user;
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "chartroom-server", version, about = "Chartroom central server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create keys, a self-signed TLS certificate and the database; prints the certificate fingerprint.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Address `serve` listens on by default.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Use this certificate chain (PEM) instead of a self-signed one.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where to keep the master key: `file` (keys/master.key, 0600), `keyring` (the OS keyring),
        /// or an HSM: `pkcs11:token=…;object=…?module-path=…&pin-source=file:…` (the key stays
        /// wrapped by an AES key inside the HSM).
        #[arg(long, default_value = "file", value_parser = master_key_store)]
        master_key: String,
        /// Keep the audit checkpoint signing key in an HSM (an Ed25519 key pair generated there):
        /// `pkcs11:token=…;object=…?module-path=…&pin-source=file:…`.
        #[arg(long)]
        signing_key: Option<String>,
        /// Use PostgreSQL instead of the embedded database: a libpq URL with
        /// `sslmode=verify-full&sslrootcert=CA.pem` (kept in keys/database.url, 0600). Or
        /// CHARTROOM_DATABASE_URL, which keeps a password off the command line.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Write an encrypted backup of the database (an online copy of the embedded database, or a
    /// `pg_dump` of PostgreSQL) under a key derived from the master key, which is not in the file.
    Backup {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a fresh server: a data directory with the original's keys/, tls/ and
    /// config.json and no database yet (PostgreSQL: an empty database, --database-url).
    Restore {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        from: PathBuf,
        /// The (empty) PostgreSQL database to restore into; recorded as this server's database.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Apply pending database migrations (the server also applies them when it starts); refuses a
    /// database whose schema is newer than this build.
    Migrate {
        #[arg(long)]
        data_dir: PathBuf,
        /// Instead of the database `init` recorded.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Manage user accounts (works while the server is running).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage devices: enrollment tokens and revocation.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Load synthetic patients (deterministic for a given seed; already present ones are skipped).
    Seed {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        patients: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Units to spread patients over, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "ICU,MED")]
        units: Vec<String>,
    },
    /// Import FHIR R4 Bundles (collection or transaction, e.g. from Synthea). A malformed file imports
    /// nothing and names the offending entry.
    ImportFhir {
        #[arg(long)]
        data_dir: PathBuf,
        /// Unit for patients whose bundle does not place them.
        #[arg(long, default_value = "IMPORT")]
        unit: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Export every patient as FHIR Bulk Data NDJSON, one file per resource type.
    ExportFhir {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify or export the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Incidents raised by the anomaly rule.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Rotate the master key (with the server stopped): every patient key is re-wrapped and the
    /// database re-keyed under a new key; resumable after a crash; audited.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Publish a signed release for the stations' in-app updater (the directory `scripts/release`
    /// wrote: manifest.json, manifest.json.minisig and the packages). Works while serving.
    Updates {
        #[command(subcommand)]
        command: UpdatesCommand,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Serve the HTTPS API until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Overrides the configured address; port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Instead of the database `init` recorded (e.g. another PostgreSQL host).
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Replace the master key (or finish a rotation that was interrupted). Stop the server first;
    /// take a new backup afterwards (older backups need the old key, which is destroyed).
    Rotate {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum UpdatesCommand {
    /// Check the release in --from (signed manifest, every package matching its entry) and serve it.
    Publish {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Re-verify every device chain, the server chain and every checkpoint signature. Prints
    /// "audit ok: N entries" or names the first bad entry (exit 1).
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Delete entries older than --before, if the retention period (at least six years) allows;
    /// the trail stays verifiable from a signed purge point.
    Purge {
        #[arg(long)]
        data_dir: PathBuf,
        /// RFC 3339, e.g. 2019-01-01T00:00:00Z.
        #[arg(long)]
        before: String,
    },
    /// Write entries to standard output (JSON lines or CSV); the export is itself audited.
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_parser = ["jsonl", "csv"])]
        format: String,
        /// Only entries of this username.
        #[arg(long)]
        user: Option<String>,
        /// Only entries about the patient with this MRN.
        #[arg(long)]
        patient: Option<String>,
        /// Only entries with this action (view, login_failed, denied, …).
        #[arg(long)]
        action: Option<String>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: Role,
        /// A unit the user works on (repeatable).
        #[arg(long = "unit")]
        units: Vec<String>,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable an account (its logins and tokens stop working).
    Disable {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled account, and unlock it after failed logins.
    Enable {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// List accounts (never passwords or hashes).
    List {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Issue a one-time enrollment token (printed once; only its hash is stored).
    Token {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        profile: DeviceProfile,
        /// A unit whose patients this device may hold (repeatable).
        #[arg(long = "unit")]
        units: Vec<String>,
        #[arg(long, default_value_t = 24)]
        expires_in_hours: u64,
    },
    /// Approve the recovery of an enrolled device whose OS keyring lost its secret: prints a
    /// one-time recovery token for `chartroom-station recover` (only its hash is stored).
    Recover {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 60)]
        expires_in_minutes: u64,
    },
    /// Revoke a device: its token and (once enrollment exists) its access stop working.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List devices (never tokens).
    List {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    chartroom_protocol::logging::init();
    // A panic message may quote a value (and values can be PHI): print where, never what. The HTTP
    // layer already answers such a request with a fixed 500.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{at}");
    }));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The data directory a command works on, if the command may run beside a server (everything but
/// `init`, which makes it, and `keys rotate`, which needs it to itself).
fn shared_data_dir(command: &Command) -> Option<&PathBuf> {
    match command {
        Command::Init { .. } | Command::Keys { .. } | Command::Openapi => None,
        Command::Backup { data_dir, .. }
        | Command::Restore { data_dir, .. }
        | Command::Migrate { data_dir, .. }
        | Command::Seed { data_dir, .. }
        | Command::ImportFhir { data_dir, .. }
        | Command::ExportFhir { data_dir, .. }
        | Command::Serve { data_dir, .. }
        | Command::Updates { command: UpdatesCommand::Publish { data_dir, .. } }
        | Command::Incidents { command: IncidentsCommand::List { data_dir, .. } } => Some(data_dir),
        Command::User { command } => match command {
            UserCommand::Add { data_dir, .. }
            | UserCommand::Disable { data_dir, .. }
            | UserCommand::Enable { data_dir, .. }
            | UserCommand::List { data_dir, .. } => Some(data_dir),
        },
        Command::Device { command } => match command {
            DeviceCommand::Token { data_dir, .. }
            | DeviceCommand::Recover { data_dir, .. }
            | DeviceCommand::Revoke { data_dir, .. }
            | DeviceCommand::List { data_dir, .. } => Some(data_dir),
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { data_dir, .. }
            | AuditCommand::Purge { data_dir, .. }
            | AuditCommand::Export { data_dir, .. } => Some(data_dir),
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Held until the command ends, so that a key rotation cannot start under it (and this command
    // cannot start during one).
    let _shared = match shared_data_dir(&cli.command) {
        Some(dir) if dir.join("config.json").exists() => Some(DataDir::new(dir).lock_serving()?),
        _ => None,
    };
    match cli.command {
        Command::Init { data_dir, listen, tls_cert, tls_key, master_key, signing_key, database_url } => {
            let database_url = database_url.or_else(database_url_from_env);
            let options = InitOptions {
                listen,
                tls: tls_cert.zip(tls_key),
                master_key_in_keyring: master_key == "keyring",
                master_key_hsm: master_key.starts_with("pkcs11:").then_some(master_key.clone()),
                signing_key_hsm: signing_key,
                database_url,
                ..InitOptions::default()
            };
            let report = init(&DataDir::new(data_dir), &options)?;
            println!("fingerprint: {}", report.fingerprint);
        }
        Command::Migrate { data_dir, database_url } => {
            let database_url = database_url.or_else(database_url_from_env);
            let (_, m) = DataDir::new(data_dir).with_database_url(database_url).open_storage_migrated()?;
            if m.from == m.to {
                println!("schema {}: up to date", m.to);
            } else {
                println!("schema {}: migrated from {}", m.to, m.from);
            }
        }
        Command::Backup { data_dir, out } => {
            let r = chartroom_server::backup::backup(&DataDir::new(data_dir), &out, wall_now())?;
            println!("backup written: {} database, {} bytes, encrypted", r.backend, r.bytes);
        }
        Command::Restore { data_dir, from, database_url } => {
            let database_url = database_url.or_else(database_url_from_env);
            let dir = DataDir::new(data_dir).with_database_url(database_url.clone());
            let r = chartroom_server::backup::restore(&dir, &from, wall_now())?;
            // Recorded as this server's database only once the restore succeeded.
            if let Some(url) = database_url {
                dir.set_database_url(&url)?;
            }
            println!("restored: {} database, {} bytes; run `audit verify` to check it", r.backend, r.bytes);
        }
        Command::User { command } => user(command)?,
        Command::Seed { data_dir, patients, seed, units } => {
            let dir = DataDir::new(data_dir);
            let storage = dir.open_storage()?;
            let keys = dir.record_keys()?;
            let mut config = chartroom_synth::SynthConfig::new(seed, wall_now());
            anyhow::ensure!(
                units.iter().all(|u| !u.trim().is_empty()),
                "--units must name at least one unit"
            );
            config.units = units;
            let mut report = chartroom_server::records::LoadReport::default();
            let mut next = 0;
            while next < patients {
                let end = (next + 1000).min(patients);
                let charts: Vec<_> = (next..end).map(|i| chartroom_synth::patient(&config, i)).collect();
                let r = chartroom_server::records::load_charts(&*storage, &keys, &charts)?;
                report.imported += r.imported;
                report.already_present += r.already_present;
                next = end;
            }
            println!("seeded {} patients ({} already present)", report.imported, report.already_present);
        }
        Command::ImportFhir { data_dir, unit, files } => {
            let dir = DataDir::new(data_dir);
            let (storage, keys) = (dir.open_storage()?, dir.record_keys()?);
            let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
            let s = chartroom_server::fhir::import_files(&*storage, &keys, &paths, &unit, wall_now())?;
            for (resource_type, n) in &s.imported {
                println!("imported {n} {resource_type}");
            }
            for (resource_type, n, reason) in &s.skipped {
                println!("skipped {n} {resource_type}: {reason}");
            }
            println!("patients: {} new, {} already present", s.patients.imported, s.patients.already_present);
        }
        Command::ExportFhir { data_dir, out } => {
            let dir = DataDir::new(data_dir);
            let (storage, keys) = (dir.open_storage()?, dir.record_keys()?);
            for (resource_type, n) in chartroom_server::fhir::export_all(&*storage, &keys, &out, wall_now())?
            {
                println!("exported {n} {resource_type}");
            }
        }
        Command::Audit { command } => return audit(command),
        Command::Incidents { command: IncidentsCommand::List { data_dir, json } } => {
            let incidents = DataDir::new(data_dir).open_storage()?.incidents()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
            } else {
                for i in incidents {
                    println!(
                        "{}  {:<24} {}: {} accesses in the last hour (usual {:.1}/h); account disabled",
                        i.at, i.username, i.kind, i.last_hour, i.hourly_average
                    );
                }
            }
        }
        Command::Openapi => print!("{}", chartroom_server::openapi_json()),
        Command::Keys { command: KeysCommand::Rotate { data_dir } } => {
            let r = chartroom_server::rotation::rotate_master_key(&DataDir::new(data_dir), wall_now())?;
            let how = if r.resumed { "interrupted rotation finished" } else { "master key rotated" };
            println!(
                "{how}: {} of {} patient keys re-wrapped; the old key is destroyed — take a new backup now",
                r.rewrapped, r.patients
            );
        }
        Command::Updates { command: UpdatesCommand::Publish { data_dir, from } } => {
            let p = chartroom_server::updates::publish(&DataDir::new(data_dir), &from, wall_now())?;
            println!("published {} ({} packages)", p.version, p.packages);
        }
        Command::Device { command } => device(command)?,
        Command::Serve { data_dir, listen, database_url } => {
            let database_url = database_url.or_else(database_url_from_env);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(DataDir::new(data_dir).with_database_url(database_url), listen))?;
        }
    }
    Ok(())
}

/// `--master-key`: `file`, `keyring` or a PKCS#11 URI.
fn master_key_store(s: &str) -> Result<String, String> {
    if s == "file" || s == "keyring" || s.starts_with("pkcs11:") {
        Ok(s.to_owned())
    } else {
        Err("expected file, keyring or a pkcs11: URI".into())
    }
}

/// `CHARTROOM_DATABASE_URL`, for a URL with a password that should not sit on a command line (other
/// local users can read those).
fn database_url_from_env() -> Option<String> {
    std::env::var("CHARTROOM_DATABASE_URL").ok().filter(|u| !u.trim().is_empty())
}

fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { data_dir } => {
            let dir = DataDir::new(data_dir);
            let storage = dir.open_storage()?;
            let key = dir.signing_key()?;
            // Sign what is there first, so that a verify right after activity covers it all.
            chartroom_server::audit::checkpoint_if_due(&*storage, &key, wall_now())?;
            match chartroom_server::audit::verify(&*storage, &key.verifying_key())? {
                Ok(v) => println!(
                    "audit ok: {} entries ({} device chains, {} checkpoints)",
                    v.entries, v.devices, v.checkpoints
                ),
                Err(problem) => anyhow::bail!("{problem}"),
            }
        }
        AuditCommand::Purge { data_dir, before } => {
            let dir = DataDir::new(data_dir);
            let before = chartroom_fhir::parse_date_time(&before)
                .ok_or_else(|| anyhow::anyhow!("--before must be RFC 3339, e.g. 2019-01-01T00:00:00Z"))?;
            let retention = dir.read_config()?.audit_retention_days;
            let p = chartroom_server::audit::purge(
                &*dir.open_storage()?,
                &dir.signing_key()?,
                before,
                retention,
                wall_now(),
            )?;
            println!("purged {} entries; {} remain", p.entries, p.remaining);
        }
        AuditCommand::Export { data_dir, format, user, patient, action, since, until } => {
            let dir = DataDir::new(data_dir);
            let storage = dir.open_storage()?;
            let patient_id = match patient {
                None => None,
                Some(mrn) => Some(
                    chartroom_server::records::patient_by_mrn(&*storage, &dir.record_keys()?, &mrn)?
                        .ok_or_else(|| anyhow::anyhow!("no patient with this MRN"))?,
                ),
            };
            let time = |s: Option<String>| -> anyhow::Result<Option<chartroom_domain::Timestamp>> {
                s.map(|s| {
                    chartroom_fhir::parse_date_time(&s)
                        .ok_or_else(|| anyhow::anyhow!("times must be RFC 3339, e.g. 2026-11-01T00:00:00Z"))
                })
                .transpose()
            };
            let filter = chartroom_server::audit::ExportFilter {
                username: user,
                patient_id,
                action,
                since: time(since)?,
                until: time(until)?,
            };
            let format = if format == "csv" {
                chartroom_server::audit::ExportFormat::Csv
            } else {
                chartroom_server::audit::ExportFormat::Jsonl
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            chartroom_server::audit::export(&*storage, &filter, format, &mut out, wall_now())?;
            std::io::Write::flush(&mut out)?;
        }
    }
    Ok(())
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { data_dir, username, role, units, password_stdin: _ } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line)?;
            let password = Password::new(line.trim_end_matches(['\n', '\r']).to_owned());
            let storage = DataDir::new(data_dir).open_storage()?;
            let user = add_user(&*storage, &username, role, units, &password, wall_now())?;
            admin_action(&*storage, "user_add", "user", &user.username, wall_now())?;
            println!("created {} ({})", user.username, user.role.as_str());
        }
        UserCommand::Disable { data_dir, username } => {
            let storage = DataDir::new(data_dir).open_storage()?;
            storage.set_disabled(&username, true)?;
            admin_action(&*storage, "user_disable", "user", &username, wall_now())?;
            println!("disabled {username}");
        }
        UserCommand::Enable { data_dir, username } => {
            // Enabling also lifts a lockout from failed logins (the admin unlock).
            let storage = DataDir::new(data_dir).open_storage()?;
            storage.set_disabled(&username, false)?;
            chartroom_server::auth::unlock_user(&*storage, &username)?;
            admin_action(&*storage, "user_enable", "user", &username, wall_now())?;
            println!("enabled {username}");
        }
        UserCommand::List { data_dir, json } => {
            let users = DataDir::new(data_dir).open_storage()?.list_users()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in users {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!("{:<24} {:<10} {:<8} {}", u.username, u.role.as_str(), state, u.units.join(","));
                }
            }
        }
    }
    Ok(())
}

fn device(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Token { data_dir, name, profile, units, expires_in_hours } => {
            anyhow::ensure!(
                (1..=24 * 30).contains(&expires_in_hours),
                "--expires-in-hours must be between 1 and 720"
            );
            let storage = DataDir::new(data_dir).open_storage()?;
            let lifetime = Duration::from_secs(expires_in_hours * 3600);
            let token = issue_token(&*storage, &name, profile, units, lifetime, wall_now())?;
            admin_action(&*storage, "device_token", "device", &name, wall_now())?;
            println!("{}", token.as_str());
        }
        DeviceCommand::Recover { data_dir, name, expires_in_minutes } => {
            anyhow::ensure!(
                (1..=24 * 60).contains(&expires_in_minutes),
                "--expires-in-minutes must be between 1 and 1440"
            );
            let storage = DataDir::new(data_dir).open_storage()?;
            let lifetime = Duration::from_secs(expires_in_minutes * 60);
            let (device, token) =
                chartroom_server::devices::approve_recovery(&*storage, &name, lifetime, wall_now())?;
            admin_action(&*storage, "device_recover_approve", "device", &device.id.to_string(), wall_now())?;
            println!("{}", token.as_str());
        }
        DeviceCommand::Revoke { data_dir, name } => {
            let storage = DataDir::new(data_dir).open_storage()?;
            storage.revoke_device(&name, wall_now())?;
            admin_action(&*storage, "device_revoke", "device", &name, wall_now())?;
            println!("revoked {name}");
        }
        DeviceCommand::List { data_dir, json } => {
            let devices = DataDir::new(data_dir).open_storage()?.list_devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                for d in devices {
                    let state = match (d.revoked_at, d.enrolled_at) {
                        (Some(_), _) => "revoked",
                        (None, Some(_)) => "enrolled",
                        (None, None) => "awaiting enrollment",
                    };
                    println!("{:<24} {:<8} {:<20} {}", d.name, d.profile.as_str(), state, d.units.join(","));
                }
            }
        }
    }
    Ok(())
}

async fn serve(dir: DataDir, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let listen = match listen {
        Some(a) => a,
        None => dir.read_config()?.listen,
    };
    // Install the signal handlers before announcing readiness: a supervisor (or test) that sends
    // SIGTERM right after "listening on" must get a graceful stop, not the default kill.
    let shutdown = shutdown_signal()?;
    let server = start(&dir, listen).await?;
    let stop = server.stopper();
    tokio::spawn(async move {
        shutdown.await;
        stop(Duration::from_secs(10));
    });
    println!("listening on https://{}", server.addr);
    log::info!("serving on {} (log level {})", server.addr, log::max_level());
    server.wait().await?;
    log::info!("stopped");
    Ok(())
}

/// SIGTERM (systemd stop) or Ctrl-C. The SIGTERM handler is registered when this is called, not
/// when the returned future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
