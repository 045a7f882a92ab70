// Generated from src-tauri/src/dto.rs by ts-rs. DO NOT EDIT.
// Regenerate: CHARTROOM_BLESS=1 cargo test -p chartroom-app typescript_bindings

export type AppError = { code: string, message: string, retry_after_s: number | null, };

export type LockReason = "startup" | "idle" | "absolute_limit" | "manual" | "screen_locked" | "suspend" | "signed_out" | "revoked";

export type EnrollmentDefaults = { server_url: string | null, fingerprint: string | null, station_name: string | null, device_profile: string | null, };

export type StationStatus = { app_version: string, enrolled: boolean, 
/**
 * The name the administrator gave this device (or the host name before enrollment).
 */
station_name: string, device_profile: string | null, server_url: string | null, 
/**
 * Whether the server answered the last check (`None`: not enrolled or not checked yet).
 */
online: boolean | null, enrollment_defaults: EnrollmentDefaults | null, 
/**
 * This run of the app wiped the station because IT revoked it (the enrollment screen says so).
 */
revoked: boolean, };

export type UpdateView = { "state": "off" } | { "state": "none" } | { "state": "up_to_date", installed: string, } | { "state": "available", version: string, notes: string, file: string, };

export type EnrollRequest = { server_url: string, fingerprint: string, token: string, };

export type SessionMode = "clinical" | "oversight";

export type UserView = { username: string, role: "nurse" | "physician" | "billing" | "auditor" | "admin", units: Array<string>, mode: SessionMode, online: boolean, };

export type SessionView = { "state": "locked", reason: LockReason, 
/**
 * Who is signed in (their session is locked; unlocking with their password resumes it).
 */
signed_in: string | null, 
/**
 * For an idle lock: the idle timeout in minutes.
 */
idle_minutes: number | null, } | { "state": "active", user: UserView, 
/**
 * Set while the idle warning counts down.
 */
warning_seconds_left: number | null, idle_timeout_s: number, warning_s: number, };

export type CensusRow = { patient_id: string, mrn: string, name: string, age: string, sex: string, unit: string, bed: string, allergy_count: number, last_vitals_at: string | null, mine: boolean, };

export type CensusInfo = { patients: number, 
/**
 * The first sync has not completed: the list may be incomplete.
 */
partial: boolean, units: Array<string>, };

export type CensusPage = { rows: Array<CensusRow>, 
/**
 * Every match, drawn or not.
 */
total: number, };

export type VitalCode = "heart_rate" | "systolic_bp" | "diastolic_bp" | "temperature" | "respiratory_rate" | "spo2" | "weight";

export type VitalRange = { vital: VitalCode, label: string, unit: string, normal_low: number, normal_high: number, min: number, max: number, step: number, };

export type VitalInput = { vital: VitalCode, value: number, };

export type VitalPoint = { id: string, vital: VitalCode, value: number, effective_at: string, 
/**
 * `effective_at` in milliseconds since the epoch, for plotting.
 */
t_ms: number, };

export type PatientBanner = { id: string, mrn: string, name: string, birth_date: string, age: string, sex: string, unit: string, bed: string, };

export type AllergyView = { id: string, substance: string, reaction: string, criticality: string, };

export type ProblemView = { id: string, display: string, status: string, onset: string | null, };

export type MedicationView = { id: string, medication: string, dose: string, route: string, frequency: string, status: string, };

export type NoteStatusView = "draft" | "signed" | "entered_in_error";

export type NoteView = { id: string, kind: "nursing" | "progress", text: string, status: NoteStatusView, 
/**
 * "you" for the user's own notes; otherwise the author's username when this station knows it.
 */
author: string, mine: boolean, created_at: string, signed_at: string | null, addendum_to: string | null, error_reason: string | null, };

export type ChartView = { patient: PatientBanner, allergies: Array<AllergyView>, problems: Array<ProblemView>, medications: Array<MedicationView>, vitals: Array<VitalPoint>, notes: Array<NoteView>, 
/**
 * Opened under emergency access (audited and reviewed).
 */
break_glass: boolean, 
/**
 * Nothing can be written here (a break-glass view of a patient this station does not hold).
 */
read_only: boolean, can_write_vitals: boolean, can_write_notes: boolean, mine: boolean, };

export type DraftView = { note_id: string, mrn: string, patient_name: string, bed: string, updated_at: string, chars: number, };

export type BreakGlassReason = "emergency_care" | "covering_colleague" | "patient_transferred" | "consult_requested" | "audit_investigation";

export type SyncProgress = { done: number, total: number | null, };

export type SyncView = { online: boolean, syncing: boolean, last_sync_at: string | null, 
/**
 * When a sync of this session last brought changes from the server (what the census shows
 * may then be out of date; a sync that brought nothing leaves it alone).
 */
changed_at: string | null, pending: number, conflicts: number, rejected: number, first_sync_complete: boolean, progress: SyncProgress | null, last_error: AppError | null, };

export type ConflictSummary = { change_id: string, kind: string, mrn: string | null, patient_name: string | null, 
/**
 * `conflict` or `rejected`, with the server's reason code for a refusal.
 */
reason: string, };

export type ConflictDetail = { change_id: string, kind: string, 
/**
 * Pretty-printed JSON of this station's version.
 */
mine: string, 
/**
 * Pretty-printed JSON of the server's version.
 */
theirs: string, mergeable_text: boolean, mine_text: string | null, theirs_text: string | null, };

export type Resolution = { "choice": "keep_mine" } | { "choice": "take_theirs" } | { "choice": "merge", text: string, };

export type AuditFilter = { user: string | null, mrn: string | null, action: string | null, since: string | null, until: string | null, limit: number, };

export type AuditEntryView = { seq: number, at: string, username: string | null, device_id: string, action: string, resource_type: string, outcome: string, patient_count: number, break_glass: boolean, };

export type AuditVerifyView = { ok: boolean, entries: number, problem: string | null, };

export type BreakGlassUseView = { id: string, at: string, username: string, patient_id: string, 
/**
 * The patient's MRN and name as the server holds them (empty: the patient was removed).
 */
mrn: string, patient_name: string, 
/**
 * A break-glass reason code (`emergency_care`, …).
 */
reason: string, detail: string | null, reviewed: boolean, };

export type IncidentView = { id: string, at: string, username: string, kind: string, detail: string, };

/** The longest note (or addendum) text, in characters. */
export const MAX_NOTE_CHARS = 20000;
