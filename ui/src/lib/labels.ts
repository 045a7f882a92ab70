// Human texts for backend enums: lock reasons, break-glass reasons, roles, and the live countdown
// arithmetic shared by the login throttle and the idle warning.
import type { BreakGlassReason, LockReason, UserView } from "./bindings";

export type Role = UserView["role"];

/** "Locked — idle 5 min" etc. The reason text only; the caller adds "Locked — ". */
export function lockReasonText(reason: LockReason, idleMinutes: number | null): string {
  switch (reason) {
    case "idle":
      return idleMinutes !== null ? `idle ${idleMinutes} min` : "idle";
    case "screen_locked":
      return "screen locked";
    case "suspend":
      return "computer went to sleep";
    case "manual":
      return "locked manually";
    case "absolute_limit":
      return "session time limit reached";
    case "signed_out":
      return "signed out";
    case "revoked":
      return "IT revoked this station";
    case "startup":
      return "Chartroom started";
  }
}

export const BREAK_GLASS_REASONS: ReadonlyArray<{ value: BreakGlassReason; label: string }> = [
  { value: "emergency_care", label: "Emergency care — patient needs treatment now" },
  { value: "covering_colleague", label: "Covering for a colleague" },
  { value: "patient_transferred", label: "Patient is being transferred to my unit" },
  { value: "consult_requested", label: "Consult requested" },
  { value: "audit_investigation", label: "Audit or investigation" },
];

export function breakGlassLabel(reason: BreakGlassReason | string): string {
  return BREAK_GLASS_REASONS.find((r) => r.value === reason)?.label ?? reason;
}

/** Returns an error message, or null when the break-glass form may be submitted. */
export function validateBreakGlass(reason: BreakGlassReason | null, detail: string): string | null {
  if (reason === null) return "Choose a reason.";
  const n = [...detail.trim()].length;
  if (n < 5) return "Describe why you need access (at least 5 characters).";
  if (n > 500) return "Keep the description under 500 characters.";
  return null;
}

export function roleLabel(role: Role): string {
  return { nurse: "Nurse", physician: "Physician", billing: "Billing", auditor: "Auditor", admin: "Administrator" }[role];
}

/** Whole seconds left until `untilMs` (never negative; rounds up so "1 s" shows until the end). */
export function secondsLeft(untilMs: number, nowMs: number): number {
  return Math.max(0, Math.ceil((untilMs - nowMs) / 1000));
}
