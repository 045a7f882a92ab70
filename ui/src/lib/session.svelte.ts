// Station + session state for the shell. Holds no patient data: the session view carries only
// the user's name, role and units. Nothing here is ever written to web storage.
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import { EVENTS, type SessionView, type StationStatus, type UserView } from "./api";

class SessionState {
  station = $state<StationStatus | null>(null);
  view = $state<SessionView | null>(null);
  /** Seconds left before the idle lock, counted down locally between backend events. */
  warningLeft = $state<number | null>(null);
  #tick: ReturnType<typeof setInterval> | null = null;

  get user(): UserView | null {
    return this.view?.state === "active" ? this.view.user : null;
  }

  /** Applies a SessionView from a command result or a `session` event. */
  apply(view: SessionView): void {
    this.view = view;
    this.#setWarning(view.state === "active" ? view.warning_seconds_left : null);
  }

  #setWarning(left: number | null): void {
    this.warningLeft = left;
    if (this.#tick !== null) {
      clearInterval(this.#tick);
      this.#tick = null;
    }
    if (left !== null) {
      // The backend may send only the start of the warning; keep the number moving locally. The
      // backend's own timer decides when to lock.
      this.#tick = setInterval(() => {
        if (this.warningLeft !== null && this.warningLeft > 0) this.warningLeft -= 1;
      }, 1000);
    }
  }

  /** Subscribes to the backend's `session` event; returns the unsubscriber. */
  async listen(): Promise<UnlistenFn> {
    return listen<SessionView>(EVENTS.session, (event) => this.apply(event.payload));
  }
}

export const sessionState = new SessionState();
