import { describe, expect, it } from "vitest";
import type { VitalPoint, VitalRange } from "./bindings";
import { collectVitals, flagFor, formatValue, plotData, validateVital, vitalsRows } from "./vitalSigns";

const hr: VitalRange = { vital: "heart_rate", label: "Heart rate", unit: "/min", normal_low: 60, normal_high: 100, min: 20, max: 250, step: 1 };
const temp: VitalRange = { vital: "temperature", label: "Temperature", unit: "°C", normal_low: 36.1, normal_high: 37.8, min: 30, max: 44, step: 0.1 };

describe("validateVital", () => {
  it("accepts empty as not sent", () => {
    expect(validateVital(hr, "  ")).toEqual({ value: null, error: null });
  });
  it("rejects out-of-range values with the bounds in the message", () => {
    expect(validateVital(hr, "300").error).toBe("Heart rate must be between 20 and 250 /min");
    expect(validateVital(hr, "19").error).toBe("Heart rate must be between 20 and 250 /min");
    expect(validateVital(temp, "29.9").error).toBe("Temperature must be between 30.0 and 44.0 °C");
  });
  it("accepts boundaries and a decimal comma", () => {
    expect(validateVital(hr, "20").value).toBe(20);
    expect(validateVital(hr, "250").value).toBe(250);
    expect(validateVital(temp, "37,2").value).toBe(37.2);
  });
  it("rejects garbage", () => {
    expect(validateVital(hr, "12a").error).toMatch(/must be a number/);
    expect(validateVital(hr, "1e3").error).toMatch(/must be a number/);
  });
});

describe("collectVitals", () => {
  it("sends only filled, valid fields and reports each error", () => {
    const ok = collectVitals([hr, temp], { heart_rate: "72", temperature: "" });
    expect(ok).toEqual({ values: [{ vital: "heart_rate", value: 72 }], errors: {} });
    const bad = collectVitals([hr, temp], { heart_rate: "72", temperature: "50" });
    expect(Object.keys(bad.errors)).toEqual(["temperature"]);
  });
});

describe("flags and formatting", () => {
  it("flags low and high against the normal range", () => {
    expect(flagFor(hr, 59)).toBe("low");
    expect(flagFor(hr, 60)).toBe(null);
    expect(flagFor(hr, 101)).toBe("high");
    expect(flagFor(undefined, 500)).toBe(null);
  });
  it("formats to the step's precision", () => {
    expect(formatValue(37.25, 0.1)).toBe("37.3");
    expect(formatValue(72, 1)).toBe("72");
    expect(formatValue(1.234, 0.01)).toBe("1.23");
  });
});

describe("vitals table and plot data", () => {
  const p = (id: string, vital: VitalPoint["vital"], value: number, t: number): VitalPoint => ({
    id, vital, value, t_ms: t, effective_at: new Date(t).toISOString(),
  });
  const pts = [p("a", "heart_rate", 80, 1000), p("b", "temperature", 37, 1000), p("c", "heart_rate", 90, 5000), p("d", "spo2", 97, 3000)];

  it("groups by time, newest first", () => {
    const rows = vitalsRows(pts);
    expect(rows.map((r) => r.t_ms)).toEqual([5000, 3000, 1000]);
    expect(rows[2].values.temperature?.value).toBe(37);
  });

  it("aligns the selected series on ascending x in seconds", () => {
    const [xs, hrs, temps] = plotData(pts, ["heart_rate", "temperature"]);
    expect(xs).toEqual([1, 5]);
    expect(hrs).toEqual([80, 90]);
    expect(temps).toEqual([37, null]);
  });
});
