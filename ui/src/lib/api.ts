// Typed wrappers around the Rust commands in src-tauri/src/commands/. The record and command types
// come from ./bindings (generated from the Rust types by ts-rs; DO NOT EDIT those files).
//
// Conventions: command names and argument names are snake_case (the commands are declared with
// `rename_all = "snake_case"`); every command rejects with an AppError.
import { invoke } from "@tauri-apps/api/core";
import type {
  AppError,
  AuditEntryView,
  AuditFilter,
  AuditVerifyView,
  BreakGlassReason,
  BreakGlassUseView,
  CensusInfo,
  CensusPage,
  ChartView,
  ConflictDetail,
  ConflictSummary,
  DraftView,
  EnrollRequest,
  IncidentView,
  NoteView,
  Resolution,
  SessionView,
  StationStatus,
  SyncView,
  UpdateView,
  VitalInput,
  VitalRange,
} from "./bindings";

export type * from "./bindings";
export { MAX_NOTE_CHARS } from "./bindings";

// Station and session ---------------------------------------------------------------------------
export const stationStatus = () => invoke<StationStatus>("station_status");
export const enroll = (request: EnrollRequest) => invoke<StationStatus>("enroll", { request });
export const updateCheck = () => invoke<UpdateView>("update_check");
export const updateInstall = () => invoke<string>("update_install");
export const session = () => invoke<SessionView>("session");
/** Unlock (same user), first login, or switch user (another user): the backend decides. */
export const login = (username: string, password: string) =>
  invoke<SessionView>("login", { username, password });
/** Manual lock ("Lock" button / Ctrl+L). */
export const lock = () => invoke<SessionView>("lock");
/** Report real user input (trusted keyboard/pointer events only; throttle to ~1 per second). */
export const activity = () => invoke<void>("activity");

// Clinical ---------------------------------------------------------------------------------------
/** Loads the census (again) in the backend; the rows come from `censusSearch`. */
export const census = () => invoke<CensusInfo>("census");
/** The census rows matching `query` (name, MRN or bed), best first, at most `limit`. */
export const censusSearch = (query: string, mine_only: boolean, limit: number) =>
  invoke<CensusPage>("census_search", { query, mine_only, limit });
export const setMine = (mrn: string, mine: boolean) => invoke<void>("set_mine", { mrn, mine });
export const chart = (mrn: string) => invoke<ChartView>("chart", { mrn });
export const vitalRanges = () => invoke<VitalRange[]>("vital_ranges");
export const recordVitals = (mrn: string, values: VitalInput[]) =>
  invoke<ChartView>("record_vitals", { mrn, values });
/** Autosave: creates the draft when `note_id` is null, else replaces its text. */
export const saveDraft = (mrn: string, note_id: string | null, text: string) =>
  invoke<NoteView>("save_draft", { mrn, note_id, text });
export const signNote = (note_id: string, text: string) => invoke<NoteView>("sign_note", { note_id, text });
export const writeAddendum = (note_id: string, text: string) =>
  invoke<NoteView>("write_addendum", { note_id, text });
export const enterInError = (note_id: string, reason: string) =>
  invoke<NoteView>("enter_in_error", { note_id, reason });
export const myDrafts = () => invoke<DraftView[]>("my_drafts");
export const breakGlass = (mrn: string, reason: BreakGlassReason, detail: string) =>
  invoke<ChartView>("break_glass", { mrn, reason, detail });

// Sync -------------------------------------------------------------------------------------------
export const syncStatus = () => invoke<SyncView>("sync_status");
export const syncNow = () => invoke<SyncView>("sync_now");
export const conflicts = () => invoke<ConflictSummary[]>("conflicts");
export const conflict = (change_id: string) => invoke<ConflictDetail>("conflict", { change_id });
export const resolveConflict = (change_id: string, resolution: Resolution) =>
  invoke<SyncView>("resolve_conflict", { change_id, resolution });

// Oversight (auditors) ---------------------------------------------------------------------------
export const auditSearch = (filter: AuditFilter) => invoke<AuditEntryView[]>("audit_search", { filter });
export const auditVerify = () => invoke<AuditVerifyView>("audit_verify");
export const breakGlassUses = (unreviewed: boolean) =>
  invoke<BreakGlassUseView[]>("break_glass_uses", { unreviewed });
export const reviewBreakGlass = (id: string) => invoke<void>("review_break_glass", { id });
export const incidents = () => invoke<IncidentView[]>("incidents");

/** Backend → UI events (listen with `listen` from "@tauri-apps/api/event"). */
export const EVENTS = {
  /** Payload SessionView: warning started / countdown / cancelled. At lock the backend reloads the page. */
  session: "session",
  /** Payload SyncView: after every sync attempt and while a long sync runs. */
  sync: "sync",
} as const;

/**
 * Normalises whatever a rejected `invoke` produced. Our commands reject with AppError; the
 * runtime itself rejects with a plain string (e.g. a command a capability does not grant), and
 * outside Tauri (plain `vite dev` in a browser) `invoke` throws a TypeError.
 */
export function toAppError(e: unknown): AppError {
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) {
    const { code, message, retry_after_s } = e as Record<string, unknown>;
    if (typeof code === "string" && typeof message === "string") {
      return { code, message, retry_after_s: typeof retry_after_s === "number" ? retry_after_s : null };
    }
  }
  if (typeof e === "string") {
    return { code: "app.ipc", message: e, retry_after_s: null };
  }
  if (e instanceof Error) {
    return { code: "app.ipc", message: e.message, retry_after_s: null };
  }
  return { code: "app.unknown", message: "Something unexpected went wrong.", retry_after_s: null };
}
