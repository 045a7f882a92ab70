// View state that must survive the idle-warning screen (which unmounts every patient view so no
// PHI stays in the page): the open chart, its tab, the census search. Memory only — the lock
// reloads the page, and nothing here is ever written to web storage.
import type { CensusInfo, ChartView, DraftView } from "./bindings";

/**
 * The census as last loaded (its rows stay in the backend), kept while the session is active so
 * that going back to it is instant.
 */
export interface CensusCache {
  info: CensusInfo;
  drafts: DraftView[];
  /** The changes the rows reflect (`SyncView.changed_at` when they were loaded). */
  syncedAt: string | null;
  /** A write on this station since (the rows' "last vitals" may be behind). */
  stale: boolean;
}

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
  census = $state.raw<CensusCache | null>(null);

  /** Savers of unsaved work (the note editor) to run before a manual lock. */
  readonly beforeLock = new Set<() => Promise<void>>();

  /** Drops every patient reference (the session is locked). */
  reset(): void {
    this.open = null;
    this.chart = null;
    this.tab = "vitals";
    this.censusQuery = "";
    this.censusMineOnly = false;
    this.census = null;
  }

  /** Whether the cached census should be loaded again (a sync brought changes, or a local write, since). */
  censusOutdated(changedAt: string | null): boolean {
    return this.census === null || this.census.stale || this.census.syncedAt !== changedAt;
  }

  /** A write happened on this station: the census reloads the next time it is shown. */
  censusChanged(): void {
    if (this.census) this.census = { ...this.census, stale: true };
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
