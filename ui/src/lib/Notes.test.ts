// @vitest-environment jsdom
import { flushSync, mount, unmount } from "svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ChartView, NoteView } from "./bindings";

const saveDraft = vi.fn();
const signNote = vi.fn();
vi.mock("./api", async (importOriginal) => ({ ...(await importOriginal<typeof import("./api")>()), saveDraft, signNote }));

const { default: Notes } = await import("./Notes.svelte");
const { sessionState } = await import("./session.svelte");

const note = (over: Partial<NoteView>): NoteView => ({
  id: "n1", kind: "nursing", text: "", status: "signed", author: "nurse.b", mine: false,
  created_at: "2026-11-27T10:00:00Z", signed_at: "2026-11-27T10:00:00Z", addendum_to: null, error_reason: null, ...over,
});
function chartView(notes: NoteView[], over: Partial<ChartView> = {}): ChartView {
  return {
    patient: { id: "p", mrn: "M1", name: "N", birth_date: "1960-01-01", age: "66 y", sex: "F", unit: "U", bed: "1" },
    allergies: [], problems: [], medications: [], vitals: [], notes,
    break_glass: false, read_only: false, can_write_vitals: true, can_write_notes: true, mine: false, ...over,
  };
}

let app: Record<string, unknown> | null = null;
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);
const $$ = (id: string) => Array.from(document.querySelectorAll<HTMLElement>(`[data-testid="${id}"]`));
let current: ChartView;

function render(view: ChartView) {
  current = view;
  app = mount(Notes, { target: document.body, props: { view, onchart: (c: ChartView) => (current = c) } });
  flushSync();
}
function type(text: string) {
  const ed = $("note-editor") as HTMLTextAreaElement;
  ed.value = text;
  ed.dispatchEvent(new Event("input", { bubbles: true }));
  flushSync();
}

beforeEach(() => {
  saveDraft.mockReset();
  signNote.mockReset();
  saveDraft.mockImplementation(async (_mrn: string, id: string | null, text: string) => note({ id: id ?? "d1", text, status: "draft", mine: true, signed_at: null }));
});
afterEach(() => {
  if (app) unmount(app);
  app = null;
  document.body.innerHTML = "";
  sessionState.apply({ state: "locked", reason: "startup", signed_in: null, idle_minutes: null });
  vi.useRealTimers();
});

describe("Notes", () => {
  it("lists notes newest first with status, and hides write controls when read-only", () => {
    render(chartView([
      note({ id: "a", text: "older", signed_at: "2026-11-26T10:00:00Z" }),
      note({ id: "b", text: "wrong", status: "entered_in_error", error_reason: "wrong patient" }),
    ], { read_only: true }));
    expect($$("note-item").map((e) => e.dataset.status)).toEqual(["entered_in_error", "signed"]);
    expect(document.body.textContent).toContain("wrong patient");
    expect($("note-editor")).toBeNull();
    expect($("note-addendum")).toBeNull();
  });

  it("autosaves 1.5 s after typing stops and shows the saved time", async () => {
    vi.useFakeTimers();
    render(chartView([]));
    type("Pain 2/10");
    expect($("note-save-status")?.textContent).toContain("Unsaved");
    await vi.advanceTimersByTimeAsync(1400);
    expect(saveDraft).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(100);
    expect(saveDraft).toHaveBeenCalledWith("M1", null, "Pain 2/10");
    flushSync();
    expect($("note-save-status")?.textContent).toMatch(/Draft saved \d\d:\d\d/);
    expect(current.notes.map((n) => n.id)).toContain("d1");
  });

  it("saves at once when the idle warning appears", async () => {
    vi.useFakeTimers();
    render(chartView([]));
    type("Before I walk away");
    sessionState.apply({ state: "active", user: { username: "u", role: "nurse", units: [], mode: "clinical", online: true }, warning_seconds_left: 30, idle_timeout_s: 300, warning_s: 30 });
    flushSync();
    await vi.advanceTimersByTimeAsync(0);
    expect(saveDraft).toHaveBeenCalledWith("M1", null, "Before I walk away");
  });

  it("cannot sign an empty note and says why", () => {
    render(chartView([]));
    type("   ");
    expect(($("note-sign") as HTMLButtonElement).disabled).toBe(true);
    expect(document.body.textContent).toContain("Write the note to sign it");
  });

  it("keeps a 10 MB paste in the editor, says it is too long and sends nothing", async () => {
    vi.useFakeTimers();
    render(chartView([]));
    const paste = "Pasted monitor log line. ".repeat(420_000);
    expect(paste.length).toBeGreaterThan(10_000_000);
    type(paste);
    await vi.advanceTimersByTimeAsync(1500);
    flushSync();
    expect(saveDraft).not.toHaveBeenCalled();
    expect($("note-save-status")?.dataset.status).toBe("error");
    expect($("note-save-status")?.textContent).toContain("longer than 20,000 characters");
    expect(($("note-editor") as HTMLTextAreaElement).value).toBe(paste);
    expect(($("note-sign") as HTMLButtonElement).disabled).toBe(true);
    // Shortened to fit: it saves.
    type(paste.slice(0, 19_999));
    await vi.advanceTimersByTimeAsync(1500);
    expect(saveDraft).toHaveBeenCalledWith("M1", null, paste.slice(0, 19_999));
  });

  it("continues my own draft and signs it after an inline confirmation", async () => {
    signNote.mockImplementation(async (id: string, text: string) => note({ id, text, mine: true, signed_at: "2026-11-27T12:00:00Z" }));
    render(chartView([note({ id: "d9", text: "my draft", status: "draft", mine: true, signed_at: null })]));
    expect(($("note-editor") as HTMLTextAreaElement).value).toBe("my draft");
    $("note-sign")!.click();
    flushSync();
    expect(signNote).not.toHaveBeenCalled();
    $("note-sign-confirm")!.click();
    await vi.waitFor(() => expect(signNote).toHaveBeenCalledWith("d9", "my draft"));
    await vi.waitFor(() => expect(current.notes.find((n) => n.id === "d9")?.status).toBe("signed"));
  });
});
