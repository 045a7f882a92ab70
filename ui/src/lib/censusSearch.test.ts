import { describe, expect, it } from "vitest";
import { looksLikeMrn } from "./censusSearch";

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
