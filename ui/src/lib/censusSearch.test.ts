import { describe, expect, it } from "vitest";
import type { CensusRow } from "./bindings";
import { buildCensusIndex, looksLikeMrn, searchCensus } from "./censusSearch";

function row(i: number, over: Partial<CensusRow> = {}): CensusRow {
  return {
    patient_id: `p${i}`,
    mrn: `M${String(10_000_000 + i)}`,
    name: `Patient${i}, Given`,
    age: "50 y",
    sex: "F",
    unit: "MED",
    bed: `B${i}`,
    allergy_count: 0,
    last_vitals_at: null,
    mine: false,
    ...over,
  };
}

describe("census search", () => {
  const rows = [
    row(1, { name: "Doe, Jane", bed: "12", mine: true }),
    row(2, { name: "Smith, John", bed: "3", mrn: "M00000012" }),
    row(3, { name: "Adams, Jo", bed: "10" }),
    row(4, { name: "Jones, Mary", bed: "2", unit: "ICU" }),
  ];
  const ix = buildCensusIndex(rows);

  it("orders by unit then bed naturally when the query is empty", () => {
    const r = searchCensus(ix, "", false, 200);
    expect(r.rows.map((x) => x.bed)).toEqual(["2", "3", "10", "12"]);
    expect(r.total).toBe(4);
  });

  it("matches name, MRN and bed case-insensitively", () => {
    expect(searchCensus(ix, "JANE", false, 200).rows.map((x) => x.name)).toEqual(["Doe, Jane"]);
    expect(searchCensus(ix, "m00000012", false, 200).rows.map((x) => x.name)).toEqual(["Smith, John"]);
  });

  it("ranks an exact bed before substring hits", () => {
    const r = searchCensus(ix, "12", false, 200);
    expect(r.rows[0].name).toBe("Doe, Jane");
    expect(r.rows.map((x) => x.name)).toContain("Smith, John");
  });

  it("ranks name word starts before inner substrings", () => {
    // "jo" starts "Jones" and "John"/"Jo" (word starts) — all rank 1; "Doe" has no "jo".
    const r = searchCensus(ix, "jo", false, 200);
    expect(r.rows.map((x) => x.name).sort()).toEqual(["Adams, Jo", "Jones, Mary", "Smith, John"]);
  });

  it("filters to my patients", () => {
    expect(searchCensus(ix, "", true, 200).rows.map((x) => x.name)).toEqual(["Doe, Jane"]);
  });

  it("limits rendered rows but counts every hit, quickly at 10,000 rows", () => {
    const big = buildCensusIndex(Array.from({ length: 10_000 }, (_, i) => row(i)));
    const t0 = performance.now();
    let r = searchCensus(big, "", false, 200);
    for (const q of ["p", "pa", "pat", "pati", "patie", "patient1"]) r = searchCensus(big, q, false, 200);
    const ms = performance.now() - t0;
    expect(r.rows.length).toBe(200);
    expect(r.total).toBe(1111); // Patient1, Patient10..19, 100..199, 1000..1999
    // Generous bound for a cold JIT on a loaded CI machine; warm runs take a few ms per keystroke.
    expect(ms).toBeLessThan(2000);
  });

  it("keeps better-ranked rows even when they come after the limit", () => {
    const many = Array.from({ length: 50 }, (_, i) => row(i, { name: `Xabc${i}`, bed: `Z${i}` }));
    many.push(row(99, { name: "Abc, Exact", bed: "A1" }));
    const r = searchCensus(buildCensusIndex(many), "abc", false, 5);
    expect(r.rows[0].name).toBe("Abc, Exact");
    expect(r.total).toBe(51);
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
