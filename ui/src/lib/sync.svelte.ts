// Sync status for the status bar and the Sync view: the last SyncView from a command or the
// backend's `sync` event.
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import { EVENTS, syncStatus, toAppError, type AppError, type SyncView } from "./api";

class SyncState {
  view = $state<SyncView | null>(null);
  error = $state<AppError | null>(null);

  async refresh(): Promise<void> {
    try {
      this.view = await syncStatus();
      this.error = null;
    } catch (e) {
      this.error = toAppError(e);
    }
  }

  async listen(): Promise<UnlistenFn> {
    return listen<SyncView>(EVENTS.sync, (event) => {
      this.view = event.payload;
    });
  }
}

export const syncState = new SyncState();
