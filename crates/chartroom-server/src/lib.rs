//! The Chartroom central server as a library: `init` lays out a data directory (TLS certificate,
//! signing key, master key outside the database, SQLCipher database); `start` serves the HTTPS API
//! (TLS 1.3 only by default) until asked to stop. The `chartroom-server` binary only parses
//! arguments and calls this crate.
//!
//! Architecture invariant: handlers never touch files or SQL directly — they go through the
//! `Storage` trait; the wire types live in `chartroom-protocol`; access decisions come from the
//! policy engine in `chartroom-domain`; PHI is sealed (`phi`) before it reaches storage.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod backup;
mod datadir;
pub mod devices;
mod error;
pub mod fhir;
mod hex;
pub mod hsm;
mod http;
pub mod oversight;
pub mod phi;
pub mod records;
pub mod rotation;
pub mod storage;
pub mod sync;
mod tls;
pub mod updates;
pub mod users;

pub use datadir::{init, DataDir, DatabasePool, InitOptions, InitReport, MasterKeyStore, ServerConfig};
pub use error::ServerError;
pub use http::{openapi_json, router, AppState};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The server's clock: wall time (tokens and enrollment expiry are wall-clock deadlines).
struct WallClock;

impl chartroom_domain::Clock for WallClock {
    fn now(&self) -> chartroom_domain::Timestamp {
        wall_now()
    }
}

/// Wall-clock time now (UTC), for commands and the API.
pub fn wall_now() -> chartroom_domain::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    chartroom_domain::Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Signs audit checkpoints when due (every `audit::CHECKPOINT_EVERY` entries or
/// `audit::CHECKPOINT_INTERVAL`), checking twice a minute for the life of the runtime.
fn spawn_checkpointer(
    storage: Arc<dyn storage::Storage>,
    key: Arc<audit::CheckpointKey>,
    clock: Arc<dyn chartroom_domain::Clock>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let (storage, key, now) = (storage.clone(), key.clone(), clock.now());
            // A failure here is retried at the next tick; the trail itself is unaffected.
            let _ = tokio::task::spawn_blocking(move || {
                storage::may_block(|| audit::checkpoint_if_due(storage.as_ref(), &key, now))
            })
            .await;
        }
    });
}

/// A server that is accepting connections.
#[derive(Debug)]
pub struct RunningServer {
    _serving_lock: std::fs::File,
    pub addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting connections and lets requests in flight finish (up to `grace`).
    pub async fn shutdown(self, grace: Duration) -> Result<(), ServerError> {
        self.handle.graceful_shutdown(Some(grace));
        self.task.await.map_err(|_| ServerError::Internal("server task failed"))??;
        Ok(())
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] from another task, or an
    /// error).
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|_| ServerError::Internal("server task failed"))??;
        Ok(())
    }

    /// A handle that can stop the server from elsewhere (e.g. a signal handler).
    pub fn stopper(&self) -> impl Fn(Duration) + Send + 'static {
        let handle = self.handle.clone();
        move |grace| handle.graceful_shutdown(Some(grace))
    }
}

/// Binds `listen` (port 0 allowed) and starts serving the data directory's API over TLS.
pub async fn start(dir: &DataDir, listen: SocketAddr) -> Result<RunningServer, ServerError> {
    start_with_clock(dir, listen, Arc::new(WallClock)).await
}

/// [`start`] with an injected clock (tests of expiry and throttling).
pub async fn start_with_clock(
    dir: &DataDir,
    listen: SocketAddr,
    clock: Arc<dyn chartroom_domain::Clock>,
) -> Result<RunningServer, ServerError> {
    let config = dir.read_config()?;
    // Held while serving: a key rotation (which needs the server stopped) cannot start meanwhile.
    let serving_lock = dir.lock_serving()?;
    let tls = tls::server_config(dir, config.allow_tls12)?;
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| ServerError::Bind(e.kind().to_string()))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
    )?
    // Without TCP_NODELAY a response split into small TLS records waits for the client's delayed
    // ACK (40 ms on Linux): measured as a 44 ms census that takes 1.5 ms to compute.
    .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
    .handle(handle.clone());
    let master = dir.master_key()?;
    let signing = Arc::new(dir.signing_key()?);
    // Opening PostgreSQL connects and migrates: blocking work, kept off the async workers.
    let opening = dir.clone();
    let storage = tokio::task::spawn_blocking(move || storage::may_block(|| opening.open_storage()))
        .await
        .map_err(|_| ServerError::Internal("opening the database"))??;
    let state = AppState {
        storage,
        keys: Arc::new(phi::RecordKeys::from_master(&master)),
        // Per-device escrow keys come from this root, itself derived from the master key.
        escrow_root: Arc::new(dir.escrow_root(&master)?),
        recovery: Arc::new(dir.recovery_keys()?),
        clock,
        anomaly: config.anomaly,
        signing: signing.clone(),
        updates: Arc::new(updates::dir(dir)),
    };
    drop(master);
    // Loading the master key to serve is a key access: it goes in the trail.
    let mut started =
        audit::event(state.clock.now(), "key_access", "master_key", "ok", &auth::Origin::default());
    started.resource_id = Some(format!("serve on {addr}"));
    let log = state.storage.clone();
    tokio::task::spawn_blocking(move || storage::may_block(|| log.append_events(&[started])))
        .await
        .map_err(|_| ServerError::Internal("audit"))??;
    spawn_checkpointer(state.storage.clone(), signing, state.clock.clone());
    let app = router(state);
    let task =
        tokio::spawn(
            async move { server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );
    Ok(RunningServer { addr, handle, task, _serving_lock: serving_lock })
}
