//! `chartroom-station`: the headless station CLI (DESIGN §10). Parses arguments and calls the
//! station core; every failure is one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chartroom_crypto::Password;
use chartroom_station::{clock, demo, LockedVault, MachinePolicy, OsKeyring, Profile};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "chartroom-station", version, about = "Chartroom station (headless)")]
struct Cli {
    /// The station profile directory.
    #[arg(long, global = true, default_value = "profile")]
    profile_dir: PathBuf,
    /// The user to act as.
    #[arg(long, global = true)]
    username: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    password_stdin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enroll this profile with a server (one-time token from `chartroom-server device token`; the
    /// server certificate must match the pinned fingerprint).
    Enroll {
        /// https://HOST:PORT
        #[arg(long)]
        server: String,
        /// sha256:<hex>, as `chartroom-server init` printed it.
        #[arg(long)]
        fingerprint: String,
        #[arg(long)]
        token: String,
    },
    /// After the OS keyring lost this device's secret: with a one-time token from `chartroom-server
    /// device recover`, get the data key back under a new device key, then log in online and sync
    /// (unsynced changes reach the server). Every user logs in online once again afterwards.
    Recover {
        #[arg(long)]
        token: String,
    },
    /// Create a demo vault with synthetic patients, lock, unlock and print a chart summary.
    Demo {
        #[arg(long, default_value_t = 24)]
        patients: u64,
    },
    /// List the patients on a unit (or all units).
    Census {
        #[arg(long)]
        unit: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one patient's chart.
    Chart {
        #[arg(long)]
        mrn: String,
        #[arg(long)]
        json: bool,
    },
    /// Record a vitals set (offline too): stored, audited and queued for sync in one transaction.
    Vitals {
        #[arg(long)]
        mrn: String,
        /// Heart rate, /min.
        #[arg(long)]
        hr: Option<f64>,
        /// Systolic blood pressure, mm Hg.
        #[arg(long)]
        sbp: Option<f64>,
        /// Diastolic blood pressure, mm Hg.
        #[arg(long)]
        dbp: Option<f64>,
        /// Temperature, °C.
        #[arg(long)]
        temp: Option<f64>,
        /// Respiratory rate, /min.
        #[arg(long)]
        rr: Option<f64>,
        /// Oxygen saturation, %.
        #[arg(long)]
        spo2: Option<f64>,
        /// Weight, kg.
        #[arg(long)]
        weight: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Write a note, or change one of your drafts (`--edit ID`); the text is read from standard
    /// input after the password line.
    Note {
        #[arg(long, required_unless_present = "edit", conflicts_with = "edit")]
        mrn: Option<String>,
        /// The id of your draft note to change.
        #[arg(long)]
        edit: Option<uuid::Uuid>,
        #[arg(long, required = true)]
        text_stdin: bool,
        /// Sign it (signed notes are never edited).
        #[arg(long)]
        sign: bool,
    },
    /// Record an allergy.
    Allergy {
        #[arg(long)]
        mrn: String,
        #[arg(long)]
        substance: String,
        #[arg(long)]
        reaction: String,
        /// low, high or unable
        #[arg(long, default_value = "high")]
        criticality: String,
    },
    /// Add a problem (`--mrn --code --display`) or set one's status (`--id --status`).
    Problem {
        #[arg(long, required_unless_present = "id", conflicts_with = "id", requires_all = ["code", "display"])]
        mrn: Option<String>,
        /// SNOMED CT code.
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        display: Option<String>,
        #[arg(long, requires = "status")]
        id: Option<uuid::Uuid>,
        /// active or resolved
        #[arg(long)]
        status: Option<String>,
    },
    /// Order a medication (`--mrn --medication --dose --route --frequency`) or set an order's status
    /// (`--id --status`).
    Med {
        #[arg(long, required_unless_present = "id", conflicts_with = "id", requires_all = ["medication", "dose", "route", "frequency"])]
        mrn: Option<String>,
        #[arg(long)]
        medication: Option<String>,
        #[arg(long)]
        dose: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        frequency: Option<String>,
        #[arg(long, requires = "status")]
        id: Option<uuid::Uuid>,
        /// active, on-hold, completed or stopped
        #[arg(long)]
        status: Option<String>,
    },
    /// Move a patient to another bed and/or unit (a transfer).
    Move {
        #[arg(long)]
        mrn: String,
        #[arg(long, required_unless_present = "bed")]
        unit: Option<String>,
        #[arg(long)]
        bed: Option<String>,
    },
    /// Log in online, push the outbox, pull what changed on the server and upload the audit trail;
    /// retried with exponential backoff and jitter while the server cannot be reached.
    Sync {
        #[arg(long)]
        json: bool,
        /// How many times to try again after a retryable failure.
        #[arg(long, default_value_t = 4)]
        retries: u32,
    },
    /// Pending changes, conflicts, refusals, quarantined patients, last sync.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show or settle a conflict: `--show` prints both versions; then `--keep-mine`, `--take-theirs`
    /// or (notes) `--merge-text-stdin` with the merged text after the password line.
    #[command(group = clap::ArgGroup::new("how").required(true).multiple(false))]
    Resolve {
        #[arg(long)]
        change: uuid::Uuid,
        #[arg(long, group = "how")]
        show: bool,
        #[arg(long, group = "how")]
        keep_mine: bool,
        #[arg(long, group = "how")]
        take_theirs: bool,
        #[arg(long, group = "how")]
        merge_text_stdin: bool,
    },
    /// Give up one of your changes the server refused for good (a new record it never had); the
    /// record goes from this station and the discard is in the audit trail.
    Discard {
        #[arg(long)]
        change: uuid::Uuid,
    },
    /// Local changes not yet accepted by the server, with their state.
    Outbox {
        #[arg(long)]
        json: bool,
    },
    /// The station's audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// This station's data key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Signed updates from the enrolled server (unless the machine policy switched them off).
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
        /// The package format to look for (default: this system's).
        #[arg(long, global = true)]
        format: Option<String>,
    },
    /// The machine policy (`/etc/chartroom/policy.toml`).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Log in online and rotate the data key now (the policy's `key_rotation` does it on a
    /// schedule): the database is re-encrypted under a new key; other users log in online once.
    Rotate,
}

#[derive(Subcommand, Debug)]
enum UpdateCommand {
    /// Verify the server's release (signature against the built-in release key, newer version) and
    /// say whether an update is available.
    Check,
    /// Download the offered package into DIR, only after its checksum and signature verified;
    /// prints its path (install it with the system's package manager).
    Download {
        #[arg(long)]
        out: PathBuf,
    },
    /// As root (the app runs it through `pkexec`): download and verify the offered package into a
    /// directory only root can write, then install it with the system's package manager.
    Install,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Check a policy file before rolling it out and print what it sets (exit 1 naming the bad key).
    Check {
        /// The file to check (default: the installed policy).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Check the timeouts against this device profile when the file names none.
        #[arg(long, default_value = "station")]
        profile: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the local hash chain: prints "audit ok: N entries" or names the first broken entry (exit 1).
    Verify,
}

fn main() -> ExitCode {
    chartroom_station::protocol::logging::init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace. Errors of our crates carry no PHI.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether this process runs as root (reads `/proc/self/status`; no `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

/// `--username` and the password from standard input (`--password-stdin`).
fn credentials(cli: &Cli) -> anyhow::Result<(&str, Password)> {
    let username = cli.username.as_deref().context("--username is required")?;
    anyhow::ensure!(
        cli.password_stdin,
        "--password-stdin is required (passwords are never taken as arguments)"
    );
    Ok((username, read_password()?))
}

fn read_password() -> anyhow::Result<Password> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!pw.is_empty(), "no password on standard input");
    Ok(Password::new(pw.to_owned()))
}

/// Opens the enrolled profile under the machine policy (an invalid policy stops everything).
fn open_locked(
    cli: &Cli,
    keystore: Arc<dyn chartroom_station::DeviceSecretStore>,
) -> anyhow::Result<LockedVault> {
    let policy = MachinePolicy::load_system()?;
    Ok(LockedVault::open(Profile::new(&cli.profile_dir), keystore, clock::wall_now())?
        .with_machine_policy(policy)?)
}

fn unlock(cli: &Cli) -> anyhow::Result<chartroom_station::UnlockedVault> {
    let (username, password) = credentials(cli)?;
    let locked = open_locked(cli, Arc::new(OsKeyring::connect()?))?;
    // A user without a slot on this device logs in online once (enrolled stations only); after
    // that, offline.
    match (locked.unlock(username, &password, clock::wall_now()), locked.server().cloned()) {
        (
            Err(
                chartroom_station::StationError::UnknownUser
                | chartroom_station::StationError::OfflineTooLong
                | chartroom_station::StationError::NeedsOnlineLogin,
            ),
            Some(_),
        ) => {
            let client = locked.server_client()?;
            let runtime = tokio::runtime::Runtime::new()?;
            Ok(runtime.block_on(locked.login_online(&client, username, &password, clock::wall_now()))?)
        }
        (result, _) => Ok(result?),
    }
}

/// Unlocks, runs `f`, and locks again whatever `f` returned.
fn with_vault<T>(
    cli: &Cli,
    f: impl FnOnce(&mut chartroom_station::UnlockedVault) -> Result<T, chartroom_station::StationError>,
) -> anyhow::Result<T> {
    with_vault_text(cli, false, |v, _| f(v))
}

/// As [`with_vault`]; with `read_text`, the rest of standard input after the password line (a
/// note's text) is read and handed to `f`.
fn with_vault_text<T>(
    cli: &Cli,
    read_text: bool,
    f: impl FnOnce(
        &mut chartroom_station::UnlockedVault,
        Option<&zeroize::Zeroizing<String>>,
    ) -> Result<T, chartroom_station::StationError>,
) -> anyhow::Result<T> {
    let mut vault = unlock(cli)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    let result =
        match read_text.then(|| std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)) {
            Some(Err(e)) => Err(chartroom_station::StationError::from(e)),
            _ => f(&mut vault, read_text.then_some(&text)),
        };
    vault.lock();
    Ok(result?)
}

/// A lowercase word of the record types' vocabulary (`high`, `resolved`, `on-hold`, …).
fn parse_word<T: serde::de::DeserializeOwned>(word: &str, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(word.trim().to_lowercase()))
        .map_err(|_| anyhow::anyhow!("unknown {what} `{word}`"))
}

/// Logs in online and syncs; a retryable failure (server unreachable, restarting, busy) is tried
/// again after an exponential, jittered delay, up to `retries` times.
fn sync_with_retries(cli: &Cli, retries: u32) -> anyhow::Result<chartroom_station::sync::SyncReport> {
    let (username, password) = credentials(cli)?;
    let keystore: Arc<dyn chartroom_station::DeviceSecretStore> = Arc::new(OsKeyring::connect()?);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut backoff = chartroom_station::sync::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(30),
    );
    let mut attempt = 0;
    loop {
        let locked = open_locked(cli, keystore.clone())?;
        let client = locked.server_client()?;
        let result = runtime.block_on(async {
            let mut vault = locked.login_online(&client, username, &password, clock::wall_now()).await?;
            let result = vault.sync(&client, clock::wall_now()).await;
            vault.lock();
            result
        });
        match result {
            Err(e) if e.is_retryable() && attempt < retries => {
                attempt += 1;
                let delay = backoff.next_delay(&mut rand::thread_rng());
                eprintln!("sync: {e}; trying again in {:.1} s ({attempt}/{retries})", delay.as_secs_f64());
                std::thread::sleep(delay);
            }
            other => return Ok(other?),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Command::Enroll { server, fingerprint, token } => {
            let policy = MachinePolicy::load_system()?;
            policy.check_enrollment(server, fingerprint)?;
            let keystore = Arc::new(OsKeyring::connect()?);
            let client = policy.enrollment_client(server, fingerprint)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let locked = runtime.block_on(LockedVault::enroll(
                Profile::new(&cli.profile_dir),
                keystore,
                &client,
                fingerprint,
                token,
                clock::wall_now(),
            ))?;
            let name = locked.server().map(|s| s.name.clone()).unwrap_or_default();
            writeln!(out, "enrolled as {name} (device {})", locked.device_id())?;
        }
        Command::Recover { token } => {
            let (username, password) = credentials(&cli)?;
            let locked = open_locked(&cli, Arc::new(OsKeyring::connect()?))?;
            let server = locked.server().cloned().context("this profile is not enrolled with a server")?;
            let client = locked.server_client()?;
            let runtime = tokio::runtime::Runtime::new()?;
            let recovered = runtime.block_on(locked.recover(&client, token, clock::wall_now()))?;
            writeln!(
                out,
                "recovered {} (device {}): data key regained under a new device key; {} user key slot(s) dropped, so every user logs in online once again",
                server.name,
                locked.device_id(),
                recovered.slots_dropped
            )?;
            out.flush()?;
            // The profile is re-keyed whatever happens next; a failure here is an ordinary sync
            // failure (the changes stay in the outbox).
            let report = runtime
                .block_on(async {
                    let mut vault =
                        locked.login_online(&client, username, &password, clock::wall_now()).await?;
                    let result = vault.sync(&client, clock::wall_now()).await;
                    vault.lock();
                    result
                })
                .map_err(|e| anyhow::anyhow!("recovered, but the first sync failed ({e}); run sync"))?;
            let push = &report.push;
            writeln!(
                out,
                "pushed: {} applied, {} conflicts, {} rejected, {} still pending; audit entries uploaded: {}",
                push.applied, push.conflicts, push.rejected, push.pending, report.audit_uploaded
            )?;
        }
        Command::Demo { patients } => {
            let keystore = Arc::new(OsKeyring::connect()?);
            demo::run(Profile::new(&cli.profile_dir), keystore, *patients, clock::wall_now(), &mut out)?;
        }
        Command::Census { unit, json } => {
            let mut vault = unlock(&cli)?;
            let rows = vault.census(unit.as_deref(), clock::wall_now())?;
            // Never pass a partial census off as the whole ward.
            let partial = vault.is_enrolled() && !vault.first_sync_complete()?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                if partial {
                    writeln!(out, "(first sync not complete: this list may be partial; run sync)")?;
                }
                for r in &rows {
                    writeln!(
                        out,
                        "{:<5} {:<4} {:<26} {:<10} {} allergies:{}",
                        r.unit,
                        r.bed,
                        r.name,
                        r.mrn,
                        r.sex.letter(),
                        r.allergy_count
                    )?;
                }
            }
            vault.lock();
        }
        Command::Chart { mrn, json } => {
            let mut vault = unlock(&cli)?;
            let chart = vault.chart_by_mrn(mrn, 200, clock::wall_now())?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &chart)?;
                writeln!(out)?;
            } else {
                demo::write_chart_summary(&chart, clock::wall_now(), &mut out)?;
            }
            vault.lock();
        }
        Command::Vitals { mrn, hr, sbp, dbp, temp, rr, spo2, weight, json } => {
            use chartroom_domain::VitalSign as V;
            let values: Vec<(V, f64)> = [
                (V::HeartRate, *hr),
                (V::SystolicBp, *sbp),
                (V::DiastolicBp, *dbp),
                (V::Temperature, *temp),
                (V::RespiratoryRate, *rr),
                (V::Spo2, *spo2),
                (V::Weight, *weight),
            ]
            .into_iter()
            .filter_map(|(v, x)| x.map(|x| (v, x)))
            .collect();
            let mut vault = unlock(&cli)?;
            let result = vault.record_vitals(mrn, &values, clock::wall_now());
            vault.lock();
            let set = result?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &set)?;
                writeln!(out)?;
            } else {
                writeln!(out, "recorded {} vital signs (queued for sync)", set.len())?;
            }
        }
        Command::Note { mrn, edit, text_stdin: _, sign } => {
            let note = with_vault_text(&cli, true, |v, text| {
                let text = text.map_or("", |t| t.as_str());
                match (mrn, edit) {
                    (_, Some(id)) => v.edit_note(*id, Some(text), *sign, clock::wall_now()),
                    (Some(mrn), None) => v.write_note(mrn, text, *sign, clock::wall_now()),
                    (None, None) => Err(chartroom_station::StationError::NothingToRecord),
                }
            })?;
            let state = if *sign { "signed" } else { "draft" };
            writeln!(out, "{state} note {} (queued for sync)", note.id)?;
        }
        Command::Allergy { mrn, substance, reaction, criticality } => {
            let criticality = parse_word(criticality, "criticality")?;
            let a = with_vault(&cli, |v| {
                v.add_allergy(mrn, substance, reaction, criticality, clock::wall_now())
            })?;
            writeln!(out, "allergy {} (queued for sync)", a.id)?;
        }
        Command::Problem { mrn, code, display, id, status } => {
            let c = match (mrn, id) {
                (_, Some(id)) => {
                    let status = parse_word(status.as_deref().unwrap_or_default(), "status")?;
                    with_vault(&cli, |v| v.set_problem_status(*id, status, clock::wall_now()))?
                }
                (Some(mrn), None) => {
                    let (code, display) = (code.as_deref().unwrap_or(""), display.as_deref().unwrap_or(""));
                    with_vault(&cli, |v| v.add_problem(mrn, code, display, None, clock::wall_now()))?
                }
                (None, None) => anyhow::bail!("give --mrn to add a problem or --id to change one"),
            };
            writeln!(out, "problem {} (queued for sync)", c.id)?;
        }
        Command::Med { mrn, medication, dose, route, frequency, id, status } => {
            let m = match (mrn, id) {
                (_, Some(id)) => {
                    let status = parse_word(status.as_deref().unwrap_or_default(), "status")?;
                    with_vault(&cli, |v| v.set_medication_status(*id, status, clock::wall_now()))?
                }
                (Some(mrn), None) => {
                    let order = chartroom_station::NewMedication {
                        medication: medication.as_deref().unwrap_or(""),
                        dose: dose.as_deref().unwrap_or(""),
                        route: route.as_deref().unwrap_or(""),
                        frequency: frequency.as_deref().unwrap_or(""),
                    };
                    with_vault(&cli, |v| v.add_medication(mrn, &order, clock::wall_now()))?
                }
                (None, None) => anyhow::bail!("give --mrn to order a medication or --id to change an order"),
            };
            writeln!(out, "medication order {} (queued for sync)", m.id)?;
        }
        Command::Move { mrn, unit, bed } => {
            let p = with_vault(&cli, |v| {
                v.move_patient(mrn, unit.as_deref(), bed.as_deref(), clock::wall_now())
            })?;
            writeln!(out, "moved to {} bed {} (queued for sync)", p.unit, p.bed)?;
        }
        Command::Sync { json, retries } => {
            let report = sync_with_retries(&cli, *retries)?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                let (push, pull) = (&report.push, &report.pull);
                writeln!(
                    out,
                    "pushed: {} applied, {} conflicts, {} rejected, {} still pending",
                    push.applied, push.conflicts, push.rejected, push.pending
                )?;
                writeln!(
                    out,
                    "pulled: {} charts, {} changes, {} conflicts, {} patients left ({} kept until synced); up to date: {}",
                    pull.charts,
                    pull.changes,
                    pull.conflicts,
                    pull.shredded + pull.quarantined + push.released,
                    pull.quarantined,
                    pull.complete
                )?;
            }
        }
        Command::Status { json } => {
            let status = with_vault(&cli, |v| v.sync_indicator())?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &status)?;
                writeln!(out)?;
            } else {
                let s = &status.status;
                let last = s.last_sync_at.map_or_else(|| "never".to_string(), |t| t.to_string());
                writeln!(
                    out,
                    "{} pending, {} conflicts, {} rejected, {} quarantined patients; first sync complete: {}; last sync: {last}",
                    s.pending, s.conflicts, s.rejected, s.quarantined_patients, s.first_sync_complete
                )?;
            }
        }
        Command::Resolve { change, show, keep_mine, take_theirs, merge_text_stdin } => {
            use chartroom_store::Resolution;
            if *show {
                let view = with_vault(&cli, |v| v.conflict(*change, clock::wall_now()))?;
                serde_json::to_writer_pretty(&mut out, &view)?;
                writeln!(out)?;
                return Ok(());
            }
            let how = match (keep_mine, take_theirs, merge_text_stdin) {
                (true, _, _) => Resolution::KeepMine,
                (_, true, _) => Resolution::TakeTheirs,
                _ => Resolution::Merge,
            };
            let queued = with_vault_text(&cli, *merge_text_stdin, |v, text| {
                v.resolve(*change, how, text.map(|t| t.as_str()), clock::wall_now())
            })?;
            match queued {
                Some(id) => writeln!(out, "resolved; change {id} queued for sync")?,
                None => writeln!(out, "resolved: the server's version is kept")?,
            }
        }
        Command::Discard { change } => {
            with_vault(&cli, |v| v.discard(*change, clock::wall_now()))?;
            writeln!(out, "discarded change {change}")?;
        }
        Command::Outbox { json } => {
            let vault = unlock(&cli)?;
            let entries = vault.outbox();
            vault.lock();
            let entries = entries?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                for e in &entries {
                    let reason = e.reason.as_deref().unwrap_or("");
                    let q =
                        if e.quarantined { " [patient left this station; kept until synced]" } else { "" };
                    writeln!(
                        out,
                        "{} {} {:<8} {:<20} record {} {reason}{q}",
                        e.created_at, e.change_id, e.state, e.kind, e.record_id
                    )?;
                }
                writeln!(out, "{} change(s) not yet on the server", entries.len())?;
            }
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let vault = unlock(&cli)?;
            let result = vault.verify_audit()?;
            vault.lock();
            match result {
                Ok(n) => writeln!(out, "audit ok: {n} entries")?,
                Err(b) => anyhow::bail!("{b}"),
            }
        }
        Command::Keys { command: KeysCommand::Rotate } => {
            let (username, password) = credentials(&cli)?;
            let locked = open_locked(&cli, Arc::new(OsKeyring::connect()?))?;
            let client = locked.server_client()?;
            let runtime = tokio::runtime::Runtime::new()?;
            let vault =
                runtime.block_on(locked.rotate_data_key(&client, username, &password, clock::wall_now()))?;
            vault.lock();
            writeln!(out, "data key rotated: the database is re-encrypted under a new key; other users log in online once")?;
        }
        Command::Update { command, format } => {
            use chartroom_station::update::{self, Offer, TrustedKey, UpdateError};
            let policy = MachinePolicy::load_system()?;
            if !policy.updates_enabled() {
                return Err(UpdateError::Disabled.into());
            }
            let format = match format {
                Some(f) => f.parse().map_err(|e: String| anyhow::anyhow!("--format: {e}"))?,
                None => update::format_of_this_system(),
            };
            let device = Profile::new(&cli.profile_dir).read_device()?;
            let link = device.server.context("this profile is not enrolled with a server")?;
            let client = policy.server_client(&link)?;
            let key = TrustedKey::built_in()?;
            let runtime = tokio::runtime::Runtime::new()?;
            let installed = env!("CARGO_PKG_VERSION");
            let offer = runtime.block_on(update::check(&client, &key, installed, format))?;
            match (command, offer) {
                (_, Offer::UpToDate { installed }) => writeln!(out, "up to date: {installed}")?,
                (UpdateCommand::Check, Offer::Available { version, notes, package }) => {
                    writeln!(out, "update available: {version} ({}, signature verified)", package.file)?;
                    if !notes.is_empty() {
                        writeln!(out, "{notes}")?;
                    }
                }
                (UpdateCommand::Install, Offer::Available { version, package, .. }) => {
                    anyhow::ensure!(is_root(), "update install runs as root (the app asks through pkexec)");
                    let bytes = runtime.block_on(update::download(&client, &key, &package))?;
                    // Verified in memory and written where no user process can swap it before the
                    // package manager reads it.
                    let dir = std::env::temp_dir()
                        .join(format!("chartroom-update-{}", uuid::Uuid::new_v4().simple()));
                    let mut builder = std::fs::DirBuilder::new();
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder.create(&dir)?;
                    let path = dir.join(&package.file);
                    std::fs::write(&path, &bytes)?;
                    let status = match package.format {
                        update::PackageFormat::Deb => std::process::Command::new("apt-get")
                            .args(["install", "-y"])
                            .arg(&path)
                            .env("DEBIAN_FRONTEND", "noninteractive")
                            .status(),
                        update::PackageFormat::Rpm => {
                            std::process::Command::new("dnf").args(["install", "-y"]).arg(&path).status()
                        }
                    };
                    let _ = std::fs::remove_dir_all(&dir);
                    let status = status.context("the package manager could not be started")?;
                    anyhow::ensure!(
                        status.success(),
                        "the package manager failed ({status}); nothing was changed by Chartroom"
                    );
                    writeln!(out, "installed {version}; restart Chartroom")?;
                }
                (UpdateCommand::Download { out: dir }, Offer::Available { version, package, .. }) => {
                    let bytes = runtime.block_on(update::download(&client, &key, &package))?;
                    std::fs::create_dir_all(dir)?;
                    let path = dir.join(&package.file);
                    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    writeln!(
                        out,
                        "downloaded {version}: {} (checksum and signature verified)",
                        path.display()
                    )?;
                }
            }
        }
        Command::Policy { command: PolicyCommand::Check { file, profile } } => {
            let path = file.clone().unwrap_or_else(MachinePolicy::system_path);
            let policy = MachinePolicy::load(&path)?;
            let enrolled: chartroom_station::domain::DeviceProfile = profile
                .parse()
                .map_err(|e: chartroom_station::domain::PolicyError| anyhow::anyhow!("--profile: {e}"))?;
            let lock = policy.lock_policy(enrolled)?;
            if policy.source.is_none() {
                writeln!(out, "no policy file at {}: the defaults apply", path.display())?;
            } else {
                writeln!(out, "policy ok: {}", path.display())?;
            }
            let or = |v: Option<&str>, d: &str| v.map_or_else(|| d.to_owned(), str::to_owned);
            writeln!(out, "server_url: {}", or(policy.server_url.as_deref(), "(the enrollment's)"))?;
            let pins = if policy.fingerprints.is_empty() {
                "(the enrollment's)".to_owned()
            } else {
                policy.fingerprints.join(", ")
            };
            writeln!(out, "fingerprints: {pins}")?;
            writeln!(out, "device_profile: {}", lock.profile().as_str())?;
            writeln!(out, "idle_timeout: {} s", lock.idle().as_secs())?;
            writeln!(out, "warning: {} s", lock.warning().as_secs())?;
            writeln!(out, "max_offline_age: {} h", lock.max_offline_age().as_secs() / 3600)?;
            let roles = policy.allowed_roles.as_ref().map_or_else(
                || "every role".to_owned(),
                |r| r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            );
            writeln!(out, "allowed_roles: {roles}")?;
            writeln!(out, "key_rotation: {} d", policy.key_rotation().as_secs() / 86_400)?;
            writeln!(out, "updates: {}", if policy.updates_enabled() { "on" } else { "off" })?;
        }
    }
    Ok(())
}
