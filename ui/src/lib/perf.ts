// Performance marks for the real-window benchmark (e2e/bench.mjs): `markStart("chart-open")` where
// the user acts (click, Enter, keystroke), `markPainted("chart-open")` once the result is in the DOM
// (call it after `await tick()`). The measure "<name>" spans from the start mark to the first task
// after the next animation frame, i.e. after the browser painted the new content. Only timings are
// recorded — never a name, MRN or query. The page reloads at every lock, which drops them all.
// Outside a browser with the User Timing API (unit tests) these do nothing.

function supported(): boolean {
  return typeof performance !== "undefined" && typeof performance.mark === "function" && typeof performance.measure === "function";
}

/** At most this many measures of one name are kept (the benchmark reads and clears them). */
const KEEP = 2000;

export function markStart(name: string): void {
  if (!supported()) return;
  performance.mark(`${name}:start`);
}

/**
 * An intermediate step, e.g. `markStep("chart-open", "data")` when the backend answered: the
 * painted measure is then split into "<name>:backend" (start → data) and "<name>:render" (data →
 * painted) as well.
 */
export function markStep(name: string, step: string): void {
  if (!supported()) return;
  performance.mark(`${name}:${step}`);
}

export function markPainted(name: string): void {
  if (!supported() || typeof requestAnimationFrame !== "function") return;
  requestAnimationFrame(() => {
    setTimeout(() => {
      try {
        performance.mark(`${name}:painted`);
        performance.measure(name, `${name}:start`, `${name}:painted`);
        if (performance.getEntriesByName(`${name}:data`, "mark").length > 0) {
          performance.measure(`${name}:backend`, `${name}:start`, `${name}:data`);
          performance.measure(`${name}:render`, `${name}:data`, `${name}:painted`);
        }
        for (const n of [name, `${name}:backend`, `${name}:render`]) {
          if (performance.getEntriesByName(n, "measure").length > KEEP) performance.clearMeasures(n);
        }
      } catch {
        // No start mark (e.g. a chart restored after the idle warning): nothing to measure.
      } finally {
        for (const m of ["start", "data", "painted"]) performance.clearMarks(`${name}:${m}`);
      }
    }, 0);
  });
}

/** Marks `name` once the next frame has been painted (e.g. "lock-screen:painted" for cold start). */
export function markAfterPaint(name: string): void {
  if (!supported() || typeof requestAnimationFrame !== "function") return;
  requestAnimationFrame(() => setTimeout(() => performance.mark(name), 0));
}
