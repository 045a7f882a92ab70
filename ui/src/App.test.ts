// @vitest-environment jsdom
// The shell against a fake backend (Tauri's own IPC mock): boot sequence, role-based views, the
// idle-warning screen hiding patient data, and that only trusted input is reported as activity.
import { flushSync, mount, unmount } from "svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";
import type { CensusRow, SessionView, StationStatus, UserView } from "./lib/bindings";
import App from "./App.svelte";

// jsdom has no matchMedia; uPlot reads it when its module loads (before any test runs).
vi.hoisted(() => {
  window.matchMedia ??= ((query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: () => {},
    removeListener: () => {},
    addEventListener: () => {},
    removeEventListener: () => {},
    dispatchEvent: () => false,
  })) as typeof window.matchMedia;
});

const station: StationStatus = {
  app_version: "1.0",
  enrolled: true,
  station_name: "ICU-3",
  device_profile: "icu",
  server_url: "https://server.example",
  online: true,
  enrollment_defaults: null,
  revoked: false,
};
const row: CensusRow = {
  patient_id: "p1",
  mrn: "M12345678",
  name: "Zebrafish, Quentin",
  age: "70 y",
  sex: "M",
  unit: "ICU",
  bed: "4",
  allergy_count: 1,
  last_vitals_at: null,
  mine: false,
};
const nurse: UserView = { username: "nurse.a", role: "nurse", units: ["ICU"], mode: "clinical", online: true };
const auditor: UserView = { username: "aud", role: "auditor", units: [], mode: "oversight", online: true };
const active = (user: UserView, warning: number | null = null): SessionView => ({
  state: "active",
  user,
  warning_seconds_left: warning,
  idle_timeout_s: 300,
  warning_s: 30,
});

let calls: string[] = [];
let app: Record<string, unknown> | null = null;
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);

function backend(sessionView: SessionView, stationView: StationStatus = station) {
  mockIPC(
    (cmd) => {
      calls.push(cmd);
      switch (cmd) {
        case "station_status":
          return stationView;
        case "session":
          return sessionView;
        case "census":
          return { patients: 1, partial: true, units: ["ICU"] };
        case "census_search":
          return { rows: [row], total: 1 };
        case "my_drafts":
          return [];
        case "sync_status":
          return { online: true, syncing: false, last_sync_at: null, changed_at: null, pending: 0, conflicts: 0, rejected: 0, first_sync_complete: false, progress: null, last_error: null };
        case "break_glass_uses":
        case "incidents":
          return [];
        case "activity":
          return null;
      }
      throw { code: "test.unexpected", message: `unexpected ${cmd}`, retry_after_s: null };
    },
    { shouldMockEvents: true },
  );
}

async function start() {
  app = mount(App, { target: document.body });
  flushSync();
}

beforeEach(() => {
  calls = [];
});
afterEach(async () => {
  if (app) unmount(app);
  app = null;
  document.body.innerHTML = "";
  // Let the shell's asynchronous unlisten calls reach the mock before it is removed.
  await new Promise((r) => setTimeout(r, 0));
  clearMocks();
});

describe("App shell", () => {
  it("shows enrollment when the station is not enrolled (and does not ask for a session)", async () => {
    backend(active(nurse), { ...station, enrolled: false });
    await start();
    await expect.poll(() => $("enroll-form")).not.toBeNull();
    expect(calls).toEqual(["station_status"]);
  });

  it("boots into the census for a clinician, without the Audit view", async () => {
    backend(active(nurse));
    await start();
    await expect.poll(() => $("census-row")?.dataset.mrn).toBe("M12345678");
    expect(calls.slice(0, 2)).toEqual(["station_status", "session"]);
    expect($("census-partial")).not.toBeNull();
    expect($("nav-audit")).toBeNull();
    expect($("topbar-user")?.textContent).toContain("nurse.a");
    expect(document.title).not.toContain("Zebrafish");
  });

  it("shows oversight users only the Audit view", async () => {
    backend(active(auditor));
    await start();
    await expect.poll(() => $("audit-view")).not.toBeNull();
    expect($("nav-census")).toBeNull();
    expect($("nav-sync")).toBeNull();
    expect($("census")).toBeNull();
  });

  it("replaces patient data with the countdown while the idle warning runs", async () => {
    backend(active(nurse));
    await start();
    await expect.poll(() => $("census-row")).not.toBeNull();
    await emit("session", active(nurse, 25));
    await expect.poll(() => $("idle-warning")?.textContent).toContain("Locking in 25 s");
    expect(document.body.innerHTML).not.toContain("Zebrafish");
    expect(document.body.innerHTML).not.toContain("M12345678");
    await emit("session", active(nurse, null));
    await expect.poll(() => $("census-row")).not.toBeNull();
    expect($("idle-warning")).toBeNull();
  });

  it("never reports synthetic input as activity", async () => {
    backend(active(nurse));
    await start();
    await expect.poll(() => $("census-row")).not.toBeNull();
    for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) window.dispatchEvent(new Event(type));
    $("census-row")?.querySelector("button")?.click();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).not.toContain("activity");
  });
});
