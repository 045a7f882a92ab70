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
            eprintln!("error: {e:#}");
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
        (Err(chartroom_station::StationError::UnknownUser), Some(server)) => {
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
            if *json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
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
