// @vitest-environment jsdom
import { flushSync, mount, unmount } from "svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CensusRow, ChartView, UserView } from "./bindings";

const api = vi.hoisted(() => ({
  census: vi.fn(),
  censusSearch: vi.fn(),
  myDrafts: vi.fn(),
  setMine: vi.fn(),
  breakGlass: vi.fn(),
}));
vi.mock("./api", async (importOriginal) => ({ ...(await importOriginal<typeof import("./api")>()), ...api }));

// jsdom has no modal dialogs.
HTMLDialogElement.prototype.showModal ??= function (this: HTMLDialogElement) {
  this.open = true;
};
HTMLDialogElement.prototype.close ??= function (this: HTMLDialogElement) {
  this.open = false;
};

const { default: Census } = await import("./Census.svelte");
const { ui } = await import("./ui.svelte");
const { syncState } = await import("./sync.svelte");

const row = (i: number, over: Partial<CensusRow> = {}): CensusRow => ({
  patient_id: `p${i}`, mrn: `M${10_000_000 + i}`, name: `Family${i}, Given`, age: "50 y", sex: "F", unit: "ICU",
  bed: String(i + 1), allergy_count: i === 0 ? 2 : 0, last_vitals_at: null, mine: i % 2 === 0, ...over,
});
const nurse: UserView = { username: "n", role: "nurse", units: ["ICU"], mode: "clinical", online: true };
const physician: UserView = { ...nurse, username: "d", role: "physician" };

let app: Record<string, unknown> | null = null;
const onopen = vi.fn();
const onbreakglass = vi.fn();
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);
const $$ = (id: string) => Array.from(document.querySelectorAll<HTMLElement>(`[data-testid="${id}"]`));

/**
 * The backend's census for these tests: `rows`, searched by a plain substring match (the ranking
 * is the backend's, tested in census.rs); `setMine` changes it as the backend does.
 */
async function render(user: UserView, rows: CensusRow[], partial = false) {
  api.census.mockResolvedValue({ patients: rows.length, partial, units: ["ICU"] });
  api.censusSearch.mockImplementation(async (query: string, mineOnly: boolean, limit: number) => {
    const q = query.trim().toLowerCase();
    const hits = rows.filter(
      (r) => (!mineOnly || r.mine) && [r.name, r.mrn, r.bed].some((f) => f.toLowerCase().includes(q)),
    );
    return { rows: hits.slice(0, limit).map((r) => ({ ...r })), total: hits.length };
  });
  api.setMine.mockImplementation(async (mrn: string, mine: boolean) => {
    for (const r of rows) if (r.mrn === mrn) r.mine = mine;
  });
  app = mount(Census, { target: document.body, props: { user, onopen, onbreakglass } });
  await vi.waitFor(() => expect($("census-search")).not.toBeNull());
  await vi.waitFor(() => expect(document.body.textContent).not.toContain("Loading census"));
  flushSync();
}
/** Types `text` into the search field and waits for the backend's answer to be drawn. */
async function search(text: string) {
  const input = $("census-search") as HTMLInputElement;
  const asked = api.censusSearch.mock.calls.length;
  input.value = text;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  await vi.waitFor(() => expect(api.censusSearch.mock.calls.length).toBeGreaterThan(asked));
  await vi.waitFor(() => expect(api.censusSearch.mock.settledResults.at(-1)?.type).toBe("fulfilled"));
  await Promise.resolve();
  flushSync();
}
const key = (el: Element, k: string) => el.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));

beforeEach(() => {
  for (const f of Object.values(api)) f.mockReset();
  api.myDrafts.mockResolvedValue([]);
  onopen.mockReset();
  onbreakglass.mockReset();
  ui.reset();
  ui.censusQuery = "";
  ui.censusMineOnly = false;
});
afterEach(() => {
  if (app) unmount(app);
  app = null;
  document.body.innerHTML = "";
});

describe("Census", () => {
  it("renders at most 50 rows of a large census and says how to narrow it", async () => {
    await render(nurse, Array.from({ length: 1000 }, (_, i) => row(i)), true);
    expect($$("census-row")).toHaveLength(50);
    expect(document.body.textContent).toContain("Showing 50 of 1000 — refine search");
    expect($("census-partial")?.textContent).toContain("has not finished its first sync");
    expect($("mine-filter")).toBeNull();
    await search("family999");
    expect($$("census-row").map((r) => r.dataset.mrn)).toEqual(["M10000999"]);
  });

  it("draws the answer to the latest keystroke even when an earlier one answers later", async () => {
    await render(nurse, [row(0), row(1, { name: "Other, Person" })]);
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const answer = api.censusSearch.getMockImplementation()!;
    api.censusSearch.mockImplementationOnce(async (q: string, m: boolean, l: number) => {
      await held;
      return answer(q, m, l);
    });
    const input = $("census-search") as HTMLInputElement;
    input.value = "other";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    await search("family0");
    expect($$("census-row").map((r) => r.dataset.mrn)).toEqual(["M10000000"]);
    release();
    await vi.waitFor(() => expect(api.censusSearch.mock.settledResults.every((r) => r.type === "fulfilled")).toBe(true));
    await Promise.resolve();
    flushSync();
    expect($$("census-row").map((r) => r.dataset.mrn)).toEqual(["M10000000"]);
  });

  it("loads again when a sync brings changes while it is shown, not after a sync that brought none", async () => {
    const rows: CensusRow[] = [];
    await render(nurse, rows, true);
    expect($$("census-row")).toHaveLength(0);
    const view = {
      online: true, syncing: false, last_sync_at: "2026-11-27T08:00:00Z", changed_at: null, pending: 0,
      conflicts: 0, rejected: 0, first_sync_complete: false, progress: null, last_error: null,
    };
    syncState.view = view;
    flushSync();
    await Promise.resolve();
    expect(api.census).toHaveBeenCalledTimes(1);
    // The first sync arrives with the unit's patients.
    rows.push(row(0), row(1));
    api.census.mockResolvedValue({ patients: 2, partial: false, units: ["ICU"] });
    syncState.view = { ...view, changed_at: "2026-11-27T08:01:00Z", first_sync_complete: true };
    await vi.waitFor(() => expect($$("census-row")).toHaveLength(2));
    expect(api.census).toHaveBeenCalledTimes(2);
    expect($("census-partial")).toBeNull();
    syncState.view = null;
  });

  it("shows allergies as text, not colour only", async () => {
    await render(nurse, [row(0), row(1)]);
    const [first, second] = $$("census-row");
    expect(first.textContent).toContain("Allergies (2)");
    expect(second.textContent).not.toContain("Allergies (");
  });

  it("moves through rows with the arrow keys and opens with Enter on the search", async () => {
    await render(nurse, [row(0), row(1), row(2)]);
    const input = $("census-search") as HTMLInputElement;
    key(input, "ArrowDown");
    expect(document.activeElement?.closest("tr")?.dataset.mrn).toBe("M10000000");
    key(document.activeElement!, "ArrowDown");
    expect(document.activeElement?.closest("tr")?.dataset.mrn).toBe("M10000001");
    key(document.activeElement!, "ArrowUp");
    key(document.activeElement!, "ArrowUp");
    expect(document.activeElement).toBe(input);
    await search("Family2");
    key(input, "Enter");
    expect(onopen).toHaveBeenCalledWith("M10000002");
  });

  it("filters to my patients for physicians and stars a row", async () => {
    await render(physician, [row(0), row(1), row(2)]);
    $("mine-filter")!.click();
    await vi.waitFor(() => expect($$("census-row").map((r) => r.dataset.mrn)).toEqual(["M10000000", "M10000002"]));
    $$("census-row")[0].querySelector<HTMLButtonElement>("button.star")!.click();
    await vi.waitFor(() => expect(api.setMine).toHaveBeenCalledWith("M10000000", false));
    await vi.waitFor(() => expect($$("census-row").map((r) => r.dataset.mrn)).toEqual(["M10000002"]));
  });

  it("offers emergency access for an unknown MRN, requires reason and detail, and Esc cancels", async () => {
    const chart = { patient: { mrn: "M99999999" } } as ChartView;
    api.breakGlass.mockResolvedValue(chart);
    await render(nurse, [row(0)]);
    await search("M99999999");
    expect($$("census-row")).toHaveLength(0);
    $("break-glass-open")!.click();
    flushSync();
    const dialog = $("break-glass-dialog") as HTMLDialogElement;
    expect(dialog.textContent).toContain("audit");
    dialog.dispatchEvent(new Event("cancel", { cancelable: true }));
    flushSync();
    expect($("break-glass-dialog")).toBeNull();

    $("break-glass-open")!.click();
    flushSync();
    $("break-glass-confirm")!.click();
    flushSync();
    expect(api.breakGlass).not.toHaveBeenCalled();
    expect($("break-glass-dialog")?.textContent).toContain("Choose a reason");
    ($("break-glass-reason-emergency_care") as HTMLInputElement).click();
    const detail = $("break-glass-detail") as HTMLTextAreaElement;
    detail.value = "Rapid response call";
    detail.dispatchEvent(new Event("input", { bubbles: true }));
    flushSync();
    $("break-glass-confirm")!.click();
    await vi.waitFor(() => expect(api.breakGlass).toHaveBeenCalledWith("M99999999", "emergency_care", "Rapid response call"));
    await vi.waitFor(() => expect(onbreakglass).toHaveBeenCalledWith(chart));
  });

  it("lists unsigned drafts with links to their charts", async () => {
    api.myDrafts.mockResolvedValue([{ note_id: "d", mrn: "M10000001", patient_name: "Family1, Given", bed: "2", updated_at: new Date().toISOString(), chars: 10 }]);
    await render(nurse, [row(0), row(1)]);
    expect($("drafts-notice")?.textContent).toContain("1 unsigned draft");
    $("draft-link")!.click();
    expect(onopen).toHaveBeenCalledWith("M10000001");
  });
});
