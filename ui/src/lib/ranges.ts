// Vital ranges change only with a backend release: fetch them once per page load.
import { vitalRanges, type VitalRange } from "./api";

let cached: Promise<VitalRange[]> | null = null;

export function loadVitalRanges(): Promise<VitalRange[]> {
  if (!cached) {
    cached = vitalRanges().catch((e: unknown) => {
      cached = null;
      throw e;
    });
  }
  return cached;
}
