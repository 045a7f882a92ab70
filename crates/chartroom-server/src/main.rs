//! `chartroom-server`: parses arguments and calls the server library (DESIGN §10). Every failure is
//! one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chartroom_crypto::Password;
use chartroom_domain::{Role, Timestamp};
use chartroom_server::users::add_user;
use chartroom_server::{init, start, DataDir, InitOptions};
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
    },
    /// Manage user accounts (works while the server is running).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Serve the HTTPS API until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Overrides the configured address; port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
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
    /// Enable a disabled account.
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir, listen } => {
            let report = init(&DataDir::new(data_dir), &InitOptions { listen, ..InitOptions::default() })?;
            println!("fingerprint: {}", report.fingerprint);
        }
        Command::User { command } => user(command)?,
        Command::Serve { data_dir, listen } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(DataDir::new(data_dir), listen))?;
        }
    }
    Ok(())
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    use chartroom_server::storage::Storage;
    match command {
        UserCommand::Add { data_dir, username, role, units, password_stdin: _ } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line)?;
            let password = Password::new(line.trim_end_matches(['\n', '\r']).to_owned());
            let storage = DataDir::new(data_dir).open_storage()?;
            let user = add_user(&storage, &username, role, units, &password, wall_now())?;
            println!("created {} ({})", user.username, user.role.as_str());
        }
        UserCommand::Disable { data_dir, username } => {
            DataDir::new(data_dir).open_storage()?.set_disabled(&username, true)?;
            println!("disabled {username}");
        }
        UserCommand::Enable { data_dir, username } => {
            DataDir::new(data_dir).open_storage()?.set_disabled(&username, false)?;
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

fn wall_now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

async fn serve(dir: DataDir, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let listen = match listen {
        Some(a) => a,
        None => dir.read_config()?.listen,
    };
    let server = start(&dir, listen).await?;
    println!("listening on https://{}", server.addr);
    let stop = server.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop(Duration::from_secs(10));
    });
    server.wait().await?;
    Ok(())
}

/// SIGTERM (systemd stop) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
