// Draft autosave: a debounce that saves ~1.5 s after typing stops, can be flushed at once (idle
// warning, Sign, leaving the chart), never runs two saves at the same time and never loses the
// newest text: a change made while a save is in flight is saved right after it.

export type SaveStatus =
  | { kind: "idle" }
  | { kind: "pending" }
  | { kind: "saving" }
  | { kind: "saved"; at: number }
  | { kind: "error"; message: string };

export interface AutosaveOptions {
  save: (text: string) => Promise<void>;
  delayMs?: number;
  onStatus?: (status: SaveStatus) => void;
  onError?: (e: unknown) => string;
  now?: () => number;
}

export interface Autosave {
  /** The text changed: (re)start the debounce timer. */
  change(text: string): void;
  /** Save now if anything is unsaved; resolves when the newest text is saved (or failed). */
  flush(): Promise<void>;
  /** Whether text is waiting to be saved or being saved. */
  dirty(): boolean;
  /** Stop the timer (component teardown) without saving. */
  cancel(): void;
}

export function createAutosave(opts: AutosaveOptions): Autosave {
  const delay = opts.delayMs ?? 1500;
  const now = opts.now ?? (() => Date.now());
  const status = (s: SaveStatus) => opts.onStatus?.(s);
  let timer: ReturnType<typeof setTimeout> | null = null;
  let pending: string | null = null;
  let inFlight: Promise<void> | null = null;

  async function run(): Promise<void> {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    while (inFlight) await inFlight;
    if (pending === null) return;
    const text = pending;
    pending = null;
    status({ kind: "saving" });
    inFlight = opts
      .save(text)
      .then(
        () => {
          if (pending === null) status({ kind: "saved", at: now() });
        },
        (e: unknown) => {
          // Keep the text so the next change or flush retries it.
          if (pending === null) pending = text;
          status({ kind: "error", message: opts.onError ? opts.onError(e) : "Could not save the draft." });
        },
      )
      .finally(() => {
        inFlight = null;
      });
    await inFlight;
  }

  return {
    change(text) {
      pending = text;
      status({ kind: "pending" });
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        void run();
      }, delay);
    },
    flush: run,
    dirty: () => pending !== null || inFlight !== null,
    cancel() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
