// View state that must survive the idle-warning screen (which unmounts every patient view so no
// PHI stays in the page): the open chart, its tab, the census search. Memory only — the lock
// reloads the page, and nothing here is ever written to web storage.
import type { ChartView } from "./bindings";

export type ChartTab = "vitals" | "notes" | "problems" | "medications";

export interface OpenChart {
  mrn: string;
  breakGlass: boolean;
}

class UiState {
  open = $state.raw<OpenChart | null>(null);
  /** The latest ChartView of the open chart, so returning to it needs no second `chart()` call. */
  chart = $state.raw<ChartView | null>(null);
  tab = $state<ChartTab>("vitals");
  censusQuery = $state("");
  censusMineOnly = $state(false);

  /** Savers of unsaved work (the note editor) to run before a manual lock. */
  readonly beforeLock = new Set<() => Promise<void>>();

  /** Drops every patient reference (the session is locked). */
  reset(): void {
    this.open = null;
    this.chart = null;
    this.tab = "vitals";
    this.censusQuery = "";
    this.censusMineOnly = false;
  }

  /** Runs the savers, giving up after `timeoutMs` so that locking is never blocked for long. */
  async saveBeforeLock(timeoutMs = 3000): Promise<void> {
    const all = Promise.allSettled([...this.beforeLock].map((save) => save()));
    await Promise.race([all, new Promise((r) => setTimeout(r, timeoutMs))]);
  }

  openChart(mrn: string, initial: ChartView | null, breakGlass: boolean): void {
    this.open = { mrn, breakGlass };
    this.chart = initial;
    this.tab = "vitals";
  }
}

export const ui = new UiState();
