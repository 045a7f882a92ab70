// @vitest-environment jsdom
import { flushSync, mount, unmount } from "svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ChartView, VitalPoint, VitalRange } from "./bindings";

vi.hoisted(() => {
  // jsdom lacks what uPlot needs to draw; the plot itself is checked in the browser.
  window.matchMedia ??= (() => ({ matches: false, addListener() {}, removeListener() {}, addEventListener() {}, removeEventListener() {} })) as unknown as typeof window.matchMedia;
});
vi.mock("uplot", () => ({
  default: class {
    constructor(_o: unknown, public data: unknown) {}
    setSize() {}
    destroy() {}
  },
}));
globalThis.ResizeObserver ??= class {
  observe() {}
  disconnect() {}
  unobserve() {}
} as unknown as typeof ResizeObserver;

const ranges: VitalRange[] = [
  { vital: "heart_rate", label: "Heart rate", unit: "/min", normal_low: 60, normal_high: 100, min: 20, max: 250, step: 1 },
  { vital: "temperature", label: "Temperature", unit: "°C", normal_low: 36.1, normal_high: 37.8, min: 30, max: 44, step: 0.1 },
];
const recordVitals = vi.fn();
vi.mock("./api", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./api")>()),
  vitalRanges: async () => ranges,
  recordVitals,
}));

const { default: Vitals } = await import("./Vitals.svelte");

const point = (id: string, vital: VitalPoint["vital"], value: number, t: number): VitalPoint => ({ id, vital, value, t_ms: t, effective_at: new Date(t).toISOString() });
function chartView(vitals: VitalPoint[], over: Partial<ChartView> = {}): ChartView {
  return {
    patient: { id: "p", mrn: "M1", name: "N", birth_date: "1960-01-01", age: "66 y", sex: "F", unit: "U", bed: "1" },
    allergies: [], problems: [], medications: [], vitals, notes: [],
    break_glass: false, read_only: false, can_write_vitals: true, can_write_notes: true, mine: false, ...over,
  };
}

let app: Record<string, unknown> | null = null;
let current: ChartView | null = null;
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);
const $$ = (id: string) => Array.from(document.querySelectorAll<HTMLElement>(`[data-testid="${id}"]`));

async function render(view: ChartView) {
  app = mount(Vitals, { target: document.body, props: { view, onchart: (c: ChartView) => (current = c) } });
  await vi.waitFor(() => expect($("vitals-table")).not.toBeNull());
  flushSync();
}
function fill(code: string, value: string) {
  const input = $(`vital-input-${code}`) as HTMLInputElement;
  input.value = value;
  input.dispatchEvent(new Event("input", { bubbles: true }));
}

beforeEach(() => {
  recordVitals.mockReset();
  current = null;
});
afterEach(() => {
  if (app) unmount(app);
  app = null;
  document.body.innerHTML = "";
});

describe("Vitals", () => {
  it("flags out-of-normal values with text, newest row first", async () => {
    await render(chartView([point("a", "heart_rate", 72, 1000), point("b", "heart_rate", 130, 5000)]));
    const rows = $$("vitals-row");
    expect(rows).toHaveLength(2);
    expect(rows[0].textContent).toContain("130");
    expect(rows[0].textContent).toContain("High");
    expect(rows[1].textContent).not.toContain("High");
  });

  it("shows the range error next to the field and sends nothing", async () => {
    await render(chartView([]));
    fill("heart_rate", "300");
    ($("vitals-submit") as HTMLButtonElement).click();
    flushSync();
    expect($("vital-error-heart_rate")?.textContent).toContain("Heart rate must be between 20 and 250 /min");
    expect(recordVitals).not.toHaveBeenCalled();
  });

  it("sends only the filled fields and adopts the returned chart", async () => {
    const updated = chartView([point("n", "temperature", 38.5, 9000)]);
    recordVitals.mockResolvedValue(updated);
    await render(chartView([]));
    fill("temperature", "38,5");
    ($("vitals-submit") as HTMLButtonElement).click();
    await vi.waitFor(() => expect(recordVitals).toHaveBeenCalledWith("M1", [{ vital: "temperature", value: 38.5 }]));
    await vi.waitFor(() => expect(current).toBe(updated));
  });

  it("tells tests what the plot draws: point count and each series' newest value", async () => {
    await render(chartView([point("a", "heart_rate", 72, 1000), point("b", "heart_rate", 88, 5000), point("c", "temperature", 37, 3000)]));
    const plot = $("vitals-plot")!;
    expect(plot.dataset.points).toBe("2");
    expect(plot.dataset.latest).toBe("heart_rate=88");
  });

  it("hides the form when the chart cannot be written", async () => {
    await render(chartView([], { can_write_vitals: false }));
    expect($("vitals-submit")).toBeNull();
    expect($("vitals-plot")).not.toBeNull();
  });
});
