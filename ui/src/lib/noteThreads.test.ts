import { describe, expect, it } from "vitest";
import type { NoteView } from "./bindings";
import { myDraft, noteThreads, upsertNote } from "./noteThreads";

function note(id: string, over: Partial<NoteView> = {}): NoteView {
  return {
    id, kind: "nursing", text: id, status: "signed", author: "nurse1", mine: false,
    created_at: "2026-11-27T10:00:00Z", signed_at: "2026-11-27T10:00:00Z", addendum_to: null, error_reason: null, ...over,
  };
}

describe("noteThreads", () => {
  const notes = [
    note("old", { signed_at: "2026-11-26T10:00:00Z" }),
    note("new", { signed_at: "2026-11-27T12:00:00Z" }),
    note("add2", { addendum_to: "old", signed_at: "2026-11-27T13:00:00Z" }),
    note("add1", { addendum_to: "old", signed_at: "2026-11-27T11:00:00Z" }),
    note("draft", { status: "draft", mine: true, signed_at: null, created_at: "2026-11-27T13:30:00Z" }),
    note("err", { status: "entered_in_error", error_reason: "wrong patient", signed_at: "2026-11-25T10:00:00Z" }),
  ];

  it("lists finished notes newest first with addenda beneath, drafts excluded", () => {
    const t = noteThreads(notes);
    expect(t.map((x) => x.note.id)).toEqual(["new", "old", "err"]);
    expect(t[1].addenda.map((x) => x.id)).toEqual(["add1", "add2"]);
  });

  it("promotes orphaned addenda to threads", () => {
    const t = noteThreads([note("a", { addendum_to: "missing" })]);
    expect(t.map((x) => x.note.id)).toEqual(["a"]);
  });

  it("finds my newest draft only", () => {
    expect(myDraft(notes)?.id).toBe("draft");
    expect(myDraft([note("x", { status: "draft", mine: false })])).toBeNull();
  });

  it("upserts by id", () => {
    const changed = upsertNote(notes, note("new", { text: "changed" }));
    expect(changed.find((n) => n.id === "new")?.text).toBe("changed");
    expect(changed.length).toBe(notes.length);
    expect(upsertNote(notes, note("z")).length).toBe(notes.length + 1);
  });
});
