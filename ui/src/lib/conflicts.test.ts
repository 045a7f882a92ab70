import { describe, expect, it } from "vitest";
import { mergeTemplate, prettyJson } from "./conflicts";

describe("prettyJson", () => {
  it("indents JSON and passes other text through", () => {
    expect(prettyJson('{"a":1,"b":[2]}')).toBe('{\n  "a": 1,\n  "b": [\n    2\n  ]\n}');
    expect(prettyJson("plain <text>")).toBe("plain <text>");
  });
});

describe("mergeTemplate", () => {
  it("contains both texts, mine first", () => {
    const t = mergeTemplate({ mine_text: "Mine.", theirs_text: "Theirs.", mine: "{}", theirs: "{}" });
    expect(t.indexOf("Mine.")).toBeLessThan(t.indexOf("Theirs."));
    expect(t).toContain("Server's version");
  });
  it("does not duplicate identical texts and falls back to the raw versions", () => {
    expect(mergeTemplate({ mine_text: "Same", theirs_text: "Same", mine: "", theirs: "" })).toBe("Same");
    expect(mergeTemplate({ mine_text: null, theirs_text: null, mine: "A", theirs: "B" })).toContain("B");
  });
});
