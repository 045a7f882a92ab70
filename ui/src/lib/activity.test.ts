import { describe, expect, it, vi } from "vitest";
import { activityReporter, installActivityListeners } from "./activity";

describe("activityReporter", () => {
  it("ignores untrusted events", () => {
    const report = vi.fn();
    const on = activityReporter(report, 1000, () => 0);
    on({ isTrusted: false });
    expect(report).not.toHaveBeenCalled();
  });

  it("reports at most once per interval", () => {
    let t = 0;
    const report = vi.fn();
    const on = activityReporter(report, 1000, () => t);
    on({ isTrusted: true });
    t = 500;
    on({ isTrusted: true });
    t = 999;
    on({ isTrusted: true });
    expect(report).toHaveBeenCalledTimes(1);
    t = 1000;
    on({ isTrusted: true });
    expect(report).toHaveBeenCalledTimes(2);
  });

  it("installs capture-phase listeners for the four input types and removes them", () => {
    const target = new EventTarget();
    const seen: string[] = [];
    const off = installActivityListeners(target, (e) => seen.push(e.type));
    for (const type of ["keydown", "pointerdown", "wheel", "touchstart", "focus", "mousemove"]) target.dispatchEvent(new Event(type));
    expect(seen).toEqual(["keydown", "pointerdown", "wheel", "touchstart"]);
    off();
    target.dispatchEvent(new Event("keydown"));
    expect(seen.length).toBe(4);
  });
});
