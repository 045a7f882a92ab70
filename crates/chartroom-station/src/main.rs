//! `chartroom-station`: the headless station CLI (DESIGN §10). Parses arguments and calls the
//! station core; every failure is one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chartroom_crypto::Password;
use chartroom_station::{clock, demo, LockedVault, OsKeyring, Profile};
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
    /// Write a note; its text is read from standard input after the password line.
    Note {
        #[arg(long)]
        mrn: String,
        #[arg(long, required = true)]
        text_stdin: bool,
        /// Sign it at once (signed notes are never edited).
        #[arg(long)]
        sign: bool,
    },
    /// Log in online, push the outbox, then pull what changed on the server.
    Sync {
        #[arg(long)]
        json: bool,
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
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the local hash chain: prints "audit ok: N entries" or names the first broken entry (exit 1).
    Verify,
}

fn main() -> ExitCode {
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

fn unlock(cli: &Cli) -> anyhow::Result<chartroom_station::UnlockedVault> {
    let username = cli.username.as_deref().context("--username is required")?;
    anyhow::ensure!(
        cli.password_stdin,
        "--password-stdin is required (passwords are never taken as arguments)"
    );
    let password = read_password()?;
    let keystore = Arc::new(OsKeyring::connect()?);
    let locked = LockedVault::open(Profile::new(&cli.profile_dir), keystore, clock::wall_now())?;
    // A user without a slot on this device logs in online once (enrolled stations only); after
    // that, offline.
    match (locked.unlock(username, &password, clock::wall_now()), locked.server().cloned()) {
        (
            Err(
                chartroom_station::StationError::UnknownUser
                | chartroom_station::StationError::OfflineTooLong,
            ),
            Some(server),
        ) => {
            let client = chartroom_client::ServerClient::new(&server.url, &server.fingerprint)?;
            let runtime = tokio::runtime::Runtime::new()?;
            Ok(runtime.block_on(locked.login_online(&client, username, &password, clock::wall_now()))?)
        }
        (result, _) => Ok(result?),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Command::Enroll { server, fingerprint, token } => {
            let keystore = Arc::new(OsKeyring::connect()?);
            let client = chartroom_client::ServerClient::new(server, fingerprint)?;
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
        Command::Note { mrn, text_stdin: _, sign } => {
            let mut vault = unlock(&cli)?;
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
            let result = vault.write_note(mrn, &text, *sign, clock::wall_now());
            vault.lock();
            let note = result?;
            let state = if *sign { "signed" } else { "draft" };
            writeln!(out, "{state} note {} (queued for sync)", note.id)?;
        }
        Command::Sync { json } => {
            let username = cli.username.as_deref().context("--username is required")?;
            anyhow::ensure!(cli.password_stdin, "--password-stdin is required");
            let password = read_password()?;
            let keystore = Arc::new(OsKeyring::connect()?);
            let locked = LockedVault::open(Profile::new(&cli.profile_dir), keystore, clock::wall_now())?;
            let server = locked.server().cloned().context("this profile is not enrolled with a server")?;
            let client = chartroom_client::ServerClient::new(&server.url, &server.fingerprint)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let mut vault =
                runtime.block_on(locked.login_online(&client, username, &password, clock::wall_now()))?;
            // Push first, so the pull brings back the server's versions of our own changes.
            let result = runtime.block_on(async {
                let pushed = vault.push_outbox(&client, clock::wall_now()).await?;
                let pulled = vault.pull(&client, clock::wall_now()).await?;
                // The audit entries of all this travel too (the server verifies the chain).
                vault.upload_audit(&client).await?;
                Ok::<_, chartroom_station::StationError>((pushed, pulled))
            });
            vault.lock();
            let (pushed, pulled) = result?;
            if *json {
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({ "push": pushed, "pull": pulled }),
                )?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "pushed: {} applied, {} conflicts, {} rejected, {} still pending",
                    pushed.applied, pushed.conflicts, pushed.rejected, pushed.pending
                )?;
                writeln!(
                    out,
                    "pulled: {} charts, {} changes; up to date: {}",
                    pulled.charts, pulled.changes, pulled.complete
                )?;
            }
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
                    writeln!(
                        out,
                        "{} {:<8} {:<12} record {} {reason}",
                        e.created_at, e.state, e.kind, e.record_id
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
    }
    Ok(())
}
