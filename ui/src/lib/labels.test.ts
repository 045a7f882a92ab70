import { describe, expect, it } from "vitest";
import type { LockReason } from "./bindings";
import { BREAK_GLASS_REASONS, breakGlassLabel, lockReasonText, secondsLeft, validateBreakGlass } from "./labels";

describe("lockReasonText", () => {
  it("includes the idle minutes when known", () => {
    expect(lockReasonText("idle", 5)).toBe("idle 5 min");
    expect(lockReasonText("idle", null)).toBe("idle");
  });
  it("has a distinct text for every reason", () => {
    const reasons: LockReason[] = ["startup", "idle", "absolute_limit", "manual", "screen_locked", "suspend", "signed_out", "revoked"];
    const texts = reasons.map((r) => lockReasonText(r, 3));
    expect(new Set(texts).size).toBe(reasons.length);
    expect(lockReasonText("suspend", null)).toBe("computer went to sleep");
  });
});

describe("break-glass", () => {
  it("requires a reason and a non-empty detail", () => {
    expect(validateBreakGlass(null, "x")).toMatch(/reason/);
    expect(validateBreakGlass("emergency_care", "   ")).toMatch(/why/);
    expect(validateBreakGlass("emergency_care", "Code blue on ward 4")).toBeNull();
    expect(validateBreakGlass("emergency_care", " abc ")).toMatch(/at least 5/);
    expect(validateBreakGlass("emergency_care", "x".repeat(501))).toMatch(/500/);
  });
  it("labels every reason", () => {
    for (const r of BREAK_GLASS_REASONS) expect(breakGlassLabel(r.value)).toBe(r.label);
  });
});

describe("secondsLeft", () => {
  it("rounds up and never goes negative", () => {
    expect(secondsLeft(10_000, 0)).toBe(10);
    expect(secondsLeft(10_000, 9_001)).toBe(1);
    expect(secondsLeft(10_000, 10_000)).toBe(0);
    expect(secondsLeft(10_000, 20_000)).toBe(0);
  });
});
