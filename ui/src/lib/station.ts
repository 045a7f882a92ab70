// Typed wrappers around the Rust commands in src-tauri/src/commands/. Keep the shapes in sync.
import { invoke } from "@tauri-apps/api/core";

/** Mirrors `StationStatus` in src-tauri/src/commands/station.rs. */
export interface StationStatus {
  enrolled: boolean;
  app_version: string;
}

/** Mirrors `AppError` in src-tauri/src/error.rs: a stable code plus a PHI-free message. */
export interface AppError {
  code: string;
  message: string;
}

export function stationStatus(): Promise<StationStatus> {
  return invoke<StationStatus>("station_status");
}

/**
 * Normalises whatever a rejected `invoke` produced. Our commands reject with `AppError`; the
 * runtime itself rejects with a plain string (e.g. a command a capability does not grant), and
 * outside Tauri (plain `vite dev` in a browser) `invoke` throws a TypeError.
 */
export function toAppError(e: unknown): AppError {
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) {
    const { code, message } = e as Record<string, unknown>;
    if (typeof code === "string" && typeof message === "string") {
      return { code, message };
    }
  }
  if (typeof e === "string") {
    return { code: "app.ipc", message: e };
  }
  if (e instanceof Error) {
    return { code: "app.ipc", message: e.message };
  }
  return { code: "app.unknown", message: "Something unexpected went wrong." };
}
