// Dev-only fake backend for `npx vite --mode mock`: lets the screens be looked at in a plain
// browser. Imported only when import.meta.env.MODE === "mock", so production builds never
// contain it (main.ts's branch is removed at build time). Synthetic data only.
//
// Users: any name with password "pw"; "auditor" → oversight auditor, names starting with "doc" →
// physician, else nurse. Password "slow" fails with a 5 s retry. `?idle` in the URL starts an
// idle warning 3 s after login; `?partial` marks the census incomplete; `?enroll` starts unenrolled.
import { emit } from "@tauri-apps/api/event";
import { mockIPC } from "@tauri-apps/api/mocks";
import type {
  CensusRow,
  ChartView,
  ConflictSummary,
  NoteView,
  SessionView,
  StationStatus,
  SyncView,
  UserView,
  VitalPoint,
  VitalRange,
} from "../lib/bindings";

const params = new URLSearchParams(location.search);
const NOW = Date.now();
const iso = (ms: number) => new Date(ms).toISOString();

const station: StationStatus = {
  app_version: "0.1.0-mock",
  enrolled: !params.has("enroll"),
  station_name: "MED-4 nurses' station",
  device_profile: "ward",
  server_url: "https://chartroom.example",
  online: true,
  enrollment_defaults: { server_url: "https://chartroom.example", fingerprint: "AB:CD:EF", station_name: "MED-4 nurses' station", device_profile: "ward" },
  revoked: params.has("revoked"),
};

let session: SessionView = { state: "locked", reason: "startup", signed_in: params.get("signed_in"), idle_minutes: null };
if (params.has("signed_in")) session = { state: "locked", reason: "idle", signed_in: params.get("signed_in"), idle_minutes: 5 };

const ranges: VitalRange[] = [
  { vital: "heart_rate", label: "Heart rate", unit: "/min", normal_low: 60, normal_high: 100, min: 20, max: 250, step: 1 },
  { vital: "systolic_bp", label: "Systolic BP", unit: "mmHg", normal_low: 90, normal_high: 140, min: 40, max: 300, step: 1 },
  { vital: "diastolic_bp", label: "Diastolic BP", unit: "mmHg", normal_low: 60, normal_high: 90, min: 20, max: 200, step: 1 },
  { vital: "temperature", label: "Temperature", unit: "°C", normal_low: 36.1, normal_high: 37.8, min: 30, max: 44, step: 0.1 },
  { vital: "respiratory_rate", label: "Respiratory rate", unit: "/min", normal_low: 12, normal_high: 20, min: 4, max: 60, step: 1 },
  { vital: "spo2", label: "SpO₂", unit: "%", normal_low: 94, normal_high: 100, min: 50, max: 100, step: 1 },
  { vital: "weight", label: "Weight", unit: "kg", normal_low: 40, normal_high: 120, min: 0.5, max: 400, step: 0.1 },
];

const FAMILY = ["Testperson", "Mockwell", "Fakename", "Sample", "Example", "Placeholder", "Demo", "Dummy"];
const GIVEN = ["Alex", "Sam", "Jo", "Robin", "Kim", "Chris", "Pat", "Lee"];
const rows: CensusRow[] = Array.from({ length: 2500 }, (_, i) => ({
  patient_id: `p${i}`,
  mrn: `M${String(10_000_000 + i * 7)}`,
  name: `${FAMILY[i % 8]}${i}, ${GIVEN[(i * 3) % 8]}`,
  age: `${20 + (i % 70)} y`,
  sex: i % 2 ? "F" : "M",
  unit: ["MED-4", "ICU-1", "SURG-2"][i % 3],
  bed: `${(i % 40) + 1}${"AB"[i % 2]}`,
  allergy_count: i % 4 === 0 ? (i % 3) + 1 : 0,
  last_vitals_at: i % 5 === 0 ? null : iso(NOW - (i % 300) * 60_000),
  mine: i % 11 === 0,
}));

const charts = new Map<string, ChartView>();
let noteSeq = 0;
let user: UserView | null = null;
let warning = false;
let activityCount = 0;
(window as unknown as { __mockActivityCount: () => number }).__mockActivityCount = () => activityCount;

function chartFor(mrn: string, bg = false): ChartView {
  let c = charts.get(mrn);
  if (c) return c;
  const row = rows.find((r) => r.mrn === mrn);
  if (!row && !bg) throw { code: "policy.not_in_scope", message: "This patient is not on your units.", retry_after_s: null };
  const r = row ?? { ...rows[0], mrn, name: "Outside, Patient", unit: "ONC-3", bed: "7" };
  const vitals: VitalPoint[] = [];
  for (let k = 0; k < 12; k++) {
    const t = NOW - (12 - k) * 4 * 3600_000;
    const add = (vital: VitalPoint["vital"], value: number) => vitals.push({ id: `v${k}${vital}`, vital, value, t_ms: t, effective_at: iso(t) });
    add("heart_rate", 70 + ((k * 13) % 45));
    add("systolic_bp", 110 + ((k * 7) % 40));
    add("temperature", 36.5 + ((k * 3) % 20) / 10);
    add("spo2", 92 + (k % 7));
  }
  const note = (over: Partial<NoteView>): NoteView => ({
    id: `n${noteSeq++}`, kind: "nursing", text: "", status: "signed", author: "nurse.b", mine: false,
    created_at: iso(NOW - 86400_000), signed_at: iso(NOW - 86400_000), addendum_to: null, error_reason: null, ...over,
  });
  const first = note({ text: "Patient comfortable overnight. Pain 2/10. Mobilised to chair." });
  c = {
    patient: { id: r.patient_id, mrn: r.mrn, name: r.name, birth_date: "1961-04-12", age: r.age, sex: r.sex, unit: r.unit, bed: r.bed },
    allergies: r.allergy_count
      ? [
          { id: "a1", substance: "Penicillin", reaction: "anaphylaxis", criticality: "high" },
          { id: "a2", substance: "Latex", reaction: "rash", criticality: "low" },
        ].slice(0, r.allergy_count)
      : [],
    problems: [{ id: "pr1", display: "Community-acquired pneumonia", status: "active", onset: "2026-11-20" }],
    medications: [{ id: "m1", medication: "Amoxicillin/clavulanate", dose: "875/125 mg", route: "oral", frequency: "every 12 h", status: "active" }],
    vitals,
    notes: [
      first,
      note({ text: "Correction: pain 3/10.", addendum_to: first.id, signed_at: iso(NOW - 80000_000) }),
      note({ text: "Wrong patient documented.", status: "entered_in_error", error_reason: "wrong chart", mine: true, author: user?.username ?? "me", signed_at: iso(NOW - 90000_000) }),
      note({ text: "Mine, signed.", mine: true, author: user?.username ?? "me", signed_at: iso(NOW - 3600_000) }),
    ],
    break_glass: bg,
    read_only: false,
    can_write_vitals: true,
    can_write_notes: true,
    mine: row?.mine ?? false,
  };
  charts.set(mrn, c);
  return c;
}

let sync: SyncView = {
  online: true, syncing: false, last_sync_at: iso(NOW - 180_000), changed_at: null, pending: 2, conflicts: 1, rejected: 0,
  first_sync_complete: !params.has("partial"), progress: null, last_error: null,
};
let conflictList: ConflictSummary[] = [{ change_id: "c1", kind: "note", mrn: rows[0].mrn, patient_name: rows[0].name, reason: "Edited on another station" }];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function active(u: UserView): SessionView {
  return { state: "active", user: u, warning_seconds_left: null, idle_timeout_s: 300, warning_s: 30 };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a loose fake: arguments are whatever the command sends.
async function handle(cmd: string, a: Record<string, any>): Promise<unknown> {
  await sleep(150);
  switch (cmd) {
    case "station_status":
      return station;
    case "update_check":
      return params.has("update")
        ? { state: "available", version: "0.2.0", notes: "Faster census search.", file: "chartroom_0.2.0_amd64.deb" }
        : { state: "up_to_date", installed: station.app_version };
    case "enroll":
      station.enrolled = true;
      return station;
    case "session":
      return session;
    case "login": {
      if (a.password === "slow") throw { code: "auth.throttled", message: "Wrong username or password.", retry_after_s: 5 };
      if (a.password !== "pw") throw { code: "auth.failed", message: "Wrong username or password.", retry_after_s: null };
      const name = String(a.username);
      user = {
        username: name,
        role: name === "auditor" ? "auditor" : name.startsWith("doc") ? "physician" : "nurse",
        units: ["MED-4"],
        mode: name === "auditor" ? "oversight" : "clinical",
        online: true,
      };
      session = active(user);
      if (params.has("idle")) {
        const delay = Number(params.get("idle")) || 3;
        setTimeout(() => {
          warning = true;
          void emit("session", { ...active(user!), warning_seconds_left: 27 });
        }, delay * 1000);
      }
      return session;
    }
    case "lock":
      session = { state: "locked", reason: "manual", signed_in: user?.username ?? null, idle_minutes: null };
      return session;
    case "activity":
      activityCount++;
      if (warning && user) {
        warning = false;
        void emit("session", active(user));
      }
      return null;
    case "census":
      return { rows, partial: !sync.first_sync_complete, units: ["MED-4", "ICU-1", "SURG-2"] };
    case "set_mine": {
      const r = rows.find((x) => x.mrn === a.mrn);
      if (r) r.mine = Boolean(a.mine);
      return null;
    }
    case "my_drafts":
      return [{ note_id: "d1", mrn: rows[3].mrn, patient_name: rows[3].name, bed: rows[3].bed, updated_at: iso(NOW - 600_000), chars: 120 }];
    case "chart":
      return chartFor(String(a.mrn));
    case "break_glass":
      return chartFor(String(a.mrn), true);
    case "vital_ranges":
      return ranges;
    case "record_vitals": {
      const c = chartFor(String(a.mrn));
      const t = Date.now();
      const values = a.values as { vital: VitalPoint["vital"]; value: number }[];
      const next = { ...c, vitals: [...c.vitals, ...values.map((v, i) => ({ id: `new${t}${i}`, vital: v.vital, value: v.value, t_ms: t, effective_at: iso(t) }))] };
      charts.set(c.patient.mrn, next);
      return next;
    }
    case "save_draft": {
      const id = (a.note_id as string | null) ?? `n${noteSeq++}`;
      return { id, kind: "nursing", text: a.text, status: "draft", author: user?.username ?? "", mine: true, created_at: iso(Date.now()), signed_at: null, addendum_to: null, error_reason: null } satisfies NoteView;
    }
    case "sign_note":
      return { id: a.note_id, kind: "nursing", text: a.text, status: "signed", author: user?.username ?? "", mine: true, created_at: iso(Date.now()), signed_at: iso(Date.now()), addendum_to: null, error_reason: null } satisfies NoteView;
    case "write_addendum":
      return { id: `n${noteSeq++}`, kind: "nursing", text: a.text, status: "signed", author: user?.username ?? "", mine: true, created_at: iso(Date.now()), signed_at: iso(Date.now()), addendum_to: a.note_id, error_reason: null } satisfies NoteView;
    case "enter_in_error": {
      for (const c of charts.values()) {
        const n = c.notes.find((x) => x.id === a.note_id);
        if (n) return { ...n, status: "entered_in_error", error_reason: a.reason };
      }
      throw { code: "note.not_found", message: "Note not found.", retry_after_s: null };
    }
    case "sync_status":
      return sync;
    case "sync_now":
      sync = { ...sync, syncing: true, progress: { done: 0, total: 40 } };
      void (async () => {
        for (let d = 10; d <= 40; d += 10) {
          await sleep(400);
          sync = { ...sync, progress: { done: d, total: 40 } };
          void emit("sync", sync);
        }
        sync = { ...sync, syncing: false, progress: null, pending: 0, last_sync_at: iso(Date.now()) };
        void emit("sync", sync);
      })();
      return sync;
    case "conflicts":
      return conflictList;
    case "conflict":
      return {
        change_id: a.change_id, kind: "note",
        mine: JSON.stringify({ text: "Patient walked 20 m with frame." }), theirs: JSON.stringify({ text: "Patient walked 10 m with assistance." }),
        mergeable_text: true, mine_text: "Patient walked 20 m with frame.", theirs_text: "Patient walked 10 m with assistance.",
      };
    case "resolve_conflict":
      conflictList = conflictList.filter((c) => c.change_id !== a.change_id);
      sync = { ...sync, conflicts: conflictList.length };
      return sync;
    case "audit_search":
      return Array.from({ length: 25 }, (_, i) => ({
        seq: 1000 - i, at: iso(NOW - i * 60_000), username: i % 3 ? "nurse.a" : "doc.b", device_id: "station-med4",
        action: i % 4 ? "chart_view" : "break_glass", resource_type: "patient", outcome: "ok", patient_count: 1, break_glass: i % 4 === 0,
      }));
    case "audit_verify":
      return { ok: true, entries: 12873, problem: null };
    case "break_glass_uses":
      return [{ id: "bg1", at: iso(NOW - 7200_000), username: "doc.b", patient_id: "p42", mrn: "M10000042", patient_name: "DOE, Jane", reason: "emergency_care", detail: "Rapid response", reviewed: false }];
    case "review_break_glass":
      return null;
    case "incidents":
      return [{ id: "i1", at: iso(NOW - 3600_000), username: "nurse.c", kind: "bulk_access", detail: "Opened 40 charts in 5 minutes" }];
  }
  throw { code: "mock.unknown_command", message: `The mock has no command ${cmd}.`, retry_after_s: null };
}

export function install(): void {
  mockIPC((cmd, args) => handle(cmd, (args ?? {}) as Record<string, unknown>), { shouldMockEvents: true });
}
