// Vital signs: validation of the "Record vitals" form against the ranges the backend publishes,
// normal-range flags, the table's grouping by recording time and the plot's aligned series.
import type { VitalCode, VitalInput, VitalPoint, VitalRange } from "./bindings";

/** Formats a number for display with at most the precision the range's step allows. */
export function formatValue(value: number, step: number): string {
  const decimals = step >= 1 ? 0 : Math.min(3, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
  return value.toFixed(decimals);
}

/**
 * Validates one raw field. Empty → `{ value: null }` (not sent). Otherwise the number must parse
 * (a comma decimal separator is accepted) and lie within [min, max].
 */
export function validateVital(range: VitalRange, raw: string): { value: number | null; error: string | null } {
  const text = raw.trim().replace(",", ".");
  if (text === "") return { value: null, error: null };
  const value = Number(text);
  const bounds = `${range.label} must be between ${formatValue(range.min, range.step)} and ${formatValue(range.max, range.step)} ${range.unit}`;
  if (!/^-?\d+(\.\d+)?$/.test(text) || !Number.isFinite(value)) {
    return { value: null, error: `${range.label} must be a number. ${bounds}.` };
  }
  if (value < range.min || value > range.max) return { value: null, error: bounds };
  return { value, error: null };
}

/** Validates the whole form: only filled fields are sent; any error blocks the submit. */
export function collectVitals(
  ranges: VitalRange[],
  raw: Partial<Record<VitalCode, string>>,
): { values: VitalInput[]; errors: Partial<Record<VitalCode, string>> } {
  const values: VitalInput[] = [];
  const errors: Partial<Record<VitalCode, string>> = {};
  for (const r of ranges) {
    const { value, error } = validateVital(r, raw[r.vital] ?? "");
    if (error) errors[r.vital] = error;
    else if (value !== null) values.push({ vital: r.vital, value });
  }
  return { values, errors };
}

export type Flag = "low" | "high" | null;

/** Out-of-normal flag for a value. */
export function flagFor(range: VitalRange | undefined, value: number): Flag {
  if (!range) return null;
  if (value < range.normal_low) return "low";
  if (value > range.normal_high) return "high";
  return null;
}

export interface VitalsRow {
  t_ms: number;
  effective_at: string;
  values: Partial<Record<VitalCode, VitalPoint>>;
}

/** Groups points recorded at the same instant into one table row, newest first. */
export function vitalsRows(points: VitalPoint[]): VitalsRow[] {
  const byTime = new Map<number, VitalsRow>();
  for (const p of points) {
    let row = byTime.get(p.t_ms);
    if (!row) {
      row = { t_ms: p.t_ms, effective_at: p.effective_at, values: {} };
      byTime.set(p.t_ms, row);
    }
    row.values[p.vital] = p;
  }
  return [...byTime.values()].sort((a, b) => b.t_ms - a.t_ms);
}

/**
 * uPlot's aligned data: x = seconds since the epoch (ascending, the union of all selected
 * series' times), then one y array per selected vital with null where it was not measured.
 */
export function plotData(points: VitalPoint[], vitals: VitalCode[]): [number[], ...(number | null)[][]] {
  const wanted = new Set(vitals);
  const times = new Set<number>();
  for (const p of points) if (wanted.has(p.vital)) times.add(p.t_ms);
  const xs = [...times].sort((a, b) => a - b);
  const at = new Map<number, number>();
  xs.forEach((t, i) => at.set(t, i));
  const ys = vitals.map(() => new Array<number | null>(xs.length).fill(null));
  for (const p of points) {
    const col = vitals.indexOf(p.vital);
    if (col < 0) continue;
    ys[col][at.get(p.t_ms)!] = p.value;
  }
  return [xs.map((t) => t / 1000), ...ys];
}
