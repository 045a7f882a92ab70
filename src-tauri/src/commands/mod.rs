//! IPC commands exposed to the UI: each a few lines calling the station core.
//!
//! Every command must also be listed in `build.rs` (app manifest) and granted in
//! `capabilities/main.json`; otherwise the runtime rejects the call. Arguments are snake_case.

pub mod audit;
pub mod chart;
pub mod session;
pub mod station;
pub mod sync;

use chartroom_station::client::ServerClient;
use chartroom_station::domain::Timestamp;
use chartroom_station::{OversightSession, UnlockedVault};

use crate::error::{AppError, AppResult};
use crate::state::{AppState, SignedIn, Work};

/// Runs `f` on the open vault, if a clinician's session is active *now* (checked after taking the
/// vault, so a lock that happened while waiting for it is honoured).
pub async fn with_vault<T>(
    state: &AppState,
    f: impl FnOnce(&mut UnlockedVault, &SignedIn, Timestamp) -> AppResult<T>,
) -> AppResult<T> {
    let mut work = state.work.lock().await;
    let user = state.active_user().ok_or_else(AppError::locked)?;
    match &mut *work {
        Work::Clinical { vault, .. } if vault.user_id() == user.id => f(vault, &user, state.now()),
        Work::Clinical { .. } | Work::Closed => Err(AppError::locked()),
        Work::Oversight { .. } => Err(AppError::not_for_role()),
    }
}

/// As [`with_vault`], for work that talks to the server (break-glass): the vault and the online
/// session's client.
pub async fn with_online_vault<T>(
    state: &AppState,
    f: impl AsyncFnOnce(&mut UnlockedVault, &ServerClient, &SignedIn, Timestamp) -> AppResult<T>,
) -> AppResult<T> {
    let mut work = state.work.lock().await;
    let user = state.active_user().ok_or_else(AppError::locked)?;
    match &mut *work {
        Work::Clinical { vault, client: Some(client) } if vault.user_id() == user.id => {
            f(vault, client, &user, state.now()).await
        }
        Work::Clinical { client: None, .. } => Err(AppError::new(
            "server.offline",
            "This session signed in offline; this needs the server. Sign in again while it is reachable.",
        )),
        Work::Clinical { .. } | Work::Closed => Err(AppError::locked()),
        Work::Oversight { .. } => Err(AppError::not_for_role()),
    }
}

/// Runs `f` on the open oversight session (auditors), if it is active now.
pub async fn with_oversight<T>(
    state: &AppState,
    f: impl AsyncFnOnce(&mut OversightSession, &ServerClient, Timestamp) -> AppResult<T>,
) -> AppResult<T> {
    let mut work = state.work.lock().await;
    let user = state.active_user().ok_or_else(AppError::locked)?;
    match &mut *work {
        Work::Oversight { session, client } if session.user_id() == user.id => {
            f(session, client, state.now()).await
        }
        Work::Oversight { .. } | Work::Closed => Err(AppError::locked()),
        Work::Clinical { .. } => Err(AppError::not_for_role()),
    }
}

#[cfg(test)]
mod tests {
    /// The names between the first `[` after `marker` and the matching `]` in `text`.
    fn names_after(text: &str, marker: &str) -> Vec<String> {
        let start = text.find(marker).expect("marker") + marker.len();
        let open = start + text[start..].find('[').expect("[");
        let close = open + text[open..].find(']').expect("]");
        text[open + 1..close]
            .split(',')
            .map(|s| s.trim().trim_matches('"').rsplit("::").next().unwrap_or_default().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A command registered but not declared would be refused at run time; one declared but not
    /// granted likewise; one granted but not registered is dead weight in the webview's reach.
    #[test]
    fn registered_declared_and_granted_commands_agree() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect(p);
        let mut registered = names_after(&read("src/lib.rs"), "generate_handler!");
        let mut declared = names_after(&read("build.rs"), "COMMANDS: &[&str] =");
        let capability: serde_json::Value =
            serde_json::from_str(&read("capabilities/main.json")).expect("json");
        let mut granted: Vec<String> = capability["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .filter_map(|p| p.as_str()?.strip_prefix("allow-").map(|c| c.replace('-', "_")))
            .collect();
        for list in [&mut registered, &mut declared, &mut granted] {
            list.sort();
        }
        assert!(registered.len() > 10, "{registered:?}");
        assert_eq!(registered, declared, "generate_handler! vs build.rs COMMANDS");
        assert_eq!(registered, granted, "generate_handler! vs capabilities/main.json");
        // Nothing beyond our commands and listening to our events.
        let others: Vec<&str> = capability["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .filter_map(|p| p.as_str())
            .filter(|p| !p.starts_with("allow-"))
            .collect();
        assert_eq!(others, ["core:event:allow-listen", "core:event:allow-unlisten"]);
        // The UI's typed wrappers call exactly these commands, each by its name.
        let api = read("../ui/src/lib/api.ts");
        let mut wrapped: Vec<String> = api
            .split("invoke<")
            .skip(1)
            .filter_map(|rest| {
                rest.split_once(">(\"").map(|(_, name)| name.split('"').next().unwrap_or_default().to_owned())
            })
            .collect();
        wrapped.sort();
        assert_eq!(registered, wrapped, "generate_handler! vs ui/src/lib/api.ts");
    }
}
