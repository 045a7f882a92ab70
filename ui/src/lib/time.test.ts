import { describe, expect, it } from "vitest";
import { clockTime, dateTime, relativeTime } from "./time";

const now = Date.parse("2026-11-27T14:00:00Z");
const ago = (s: number) => new Date(now - s * 1000).toISOString();

describe("relativeTime", () => {
  it("says never for missing or bad input", () => {
    expect(relativeTime(null, now)).toBe("never");
    expect(relativeTime("not a date", now)).toBe("never");
  });
  it("rounds down into minutes, hours and days", () => {
    expect(relativeTime(ago(10), now)).toBe("just now");
    expect(relativeTime(ago(50), now)).toBe("1 min ago");
    expect(relativeTime(ago(3 * 60 + 59), now)).toBe("3 min ago");
    expect(relativeTime(ago(2 * 3600 + 10), now)).toBe("2 h ago");
    expect(relativeTime(ago(47 * 3600), now)).toBe("47 h ago");
    expect(relativeTime(ago(3 * 86400), now)).toBe("3 d ago");
  });
  it("treats small future skew as just now", () => {
    expect(relativeTime(ago(-30), now)).toBe("just now");
  });
});

describe("clock formats", () => {
  it("pads hours and minutes in local time", () => {
    const local = new Date(2026, 0, 5, 9, 7).getTime();
    expect(clockTime(local)).toBe("09:07");
    expect(dateTime(local)).toBe("2026-01-05 09:07");
    expect(clockTime(null)).toBe("");
  });
});
