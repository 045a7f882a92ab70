// Time formatting for the UI: relative ages ("3 min ago") and wall-clock labels. Pure functions;
// `now` is always passed in so tests (and the ticking clock store) decide what "now" is.

/** Milliseconds since the epoch for an ISO string, or null when it does not parse. */
export function toMs(iso: string | null | undefined): number | null {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * Short relative age for a past instant: "just now", "5 min ago", "2 h ago", "3 d ago".
 * Instants slightly in the future (clock skew between station and server) read "just now";
 * `null`/unparseable input reads "never".
 */
export function relativeTime(iso: string | null | undefined, nowMs: number): string {
  const ms = toMs(iso);
  if (ms === null) return "never";
  const diffS = Math.floor((nowMs - ms) / 1000);
  if (diffS < 45) return "just now";
  const min = Math.floor(diffS / 60);
  if (min < 1) return "1 min ago";
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ago`;
  const d = Math.floor(h / 24);
  return `${d} d ago`;
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** "14:02" in the station's local time. */
export function clockTime(iso: string | number | null | undefined): string {
  const ms = typeof iso === "number" ? iso : toMs(iso);
  if (ms === null) return "";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "2026-11-27 14:02" in the station's local time (unambiguous, sortable, no locale surprises). */
export function dateTime(iso: string | number | null | undefined): string {
  const ms = typeof iso === "number" ? iso : toMs(iso);
  if (ms === null) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Converts an `<input type="datetime-local">` value to an ISO instant (local time), or null. */
export function localInputToIso(value: string): string | null {
  if (!value.trim()) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}
