//! `chartroom-server`: parses arguments and calls the server library (DESIGN §10). Every failure is
//! one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Serve the HTTPS API until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Overrides the configured address; port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
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
        Command::Serve { data_dir, listen } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(DataDir::new(data_dir), listen))?;
        }
    }
    Ok(())
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
