import { afterEach, describe, expect, it, vi } from "vitest";
import { ui } from "./ui.svelte";

afterEach(() => {
  ui.beforeLock.clear();
  vi.useRealTimers();
});

describe("ui state", () => {
  it("runs every saver before a lock, even when one fails", async () => {
    const done: string[] = [];
    ui.beforeLock.add(async () => void done.push("a"));
    ui.beforeLock.add(async () => {
      throw new Error("offline");
    });
    ui.beforeLock.add(async () => void done.push("c"));
    await ui.saveBeforeLock();
    expect(done).toEqual(["a", "c"]);
  });

  it("does not let a hanging saver block the lock for more than the timeout", async () => {
    vi.useFakeTimers();
    ui.beforeLock.add(() => new Promise(() => {}));
    let finished = false;
    const p = ui.saveBeforeLock(3000).then(() => (finished = true));
    await vi.advanceTimersByTimeAsync(2999);
    expect(finished).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(finished).toBe(true);
  });

  it("reset forgets the open chart and the search", () => {
    ui.openChart("M1", null, true);
    ui.censusQuery = "Doe";
    ui.reset();
    expect(ui.open).toBeNull();
    expect(ui.chart).toBeNull();
    expect(ui.censusQuery).toBe("");
  });
});

describe("census cache", () => {
  const info = { patients: 0, partial: false, units: ["ICU"] };
  const cache = (syncedAt: string | null) => ({
    info,
    drafts: [],
    syncedAt,
    stale: false,
  });

  it("is reused until a sync or a local write, and dropped at lock", () => {
    ui.reset();
    expect(ui.censusOutdated(null)).toBe(true);
    ui.census = cache("2026-11-27T08:00:00Z");
    expect(ui.censusOutdated("2026-11-27T08:00:00Z")).toBe(false);
    expect(ui.censusOutdated("2026-11-27T08:01:00Z")).toBe(true);
    ui.censusChanged();
    expect(ui.censusOutdated("2026-11-27T08:00:00Z")).toBe(true);
    ui.reset();
    expect(ui.census).toBeNull();
  });
});
