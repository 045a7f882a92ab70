import { describe, expect, it } from "vitest";
import type { CensusRow } from "./bindings";
import { looksLikeMrn, sameRow } from "./censusSearch";

describe("sameRow", () => {
  const row: CensusRow = {
    patient_id: "p1", mrn: "M1", name: "Doe, Jane", age: "50 y", sex: "F", unit: "ICU", bed: "3",
    allergy_count: 0, last_vitals_at: null, mine: false,
  };
  it("is true for equal rows and false when any field differs", () => {
    expect(sameRow(row, { ...row })).toBe(true);
    for (const [k, v] of Object.entries({ mrn: "M2", name: "Doe, J", age: "51 y", sex: "M", unit: "MED", bed: "4", allergy_count: 1, last_vitals_at: "2026-11-27T08:00:00Z", mine: true })) {
      expect(sameRow(row, { ...row, [k]: v }), k).toBe(false);
    }
  });
});

describe("looksLikeMrn", () => {
  it("accepts MRN shapes", () => {
    expect(looksLikeMrn("M10004711")).toBe(true);
    expect(looksLikeMrn(" MRN-000123 ")).toBe(true);
    expect(looksLikeMrn("123456")).toBe(true);
  });
  it("rejects names and beds", () => {
    expect(looksLikeMrn("Doe")).toBe(false);
    expect(looksLikeMrn("ICU-3")).toBe(false);
    expect(looksLikeMrn("Jane Doe 1234")).toBe(false);
    expect(looksLikeMrn("")).toBe(false);
  });
});
