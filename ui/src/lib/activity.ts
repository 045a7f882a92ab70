// Inactivity reporting: the backend owns the lock timer; the UI only tells it about *real* input.
// Synthetic events (element.click(), dispatchEvent) have isTrusted = false and must not keep a
// session alive, and one report per second is plenty for a timer measured in minutes.

export const ACTIVITY_EVENTS = ["keydown", "pointerdown", "wheel", "touchstart"] as const;

/** Returns an event handler that calls `report` for trusted events, at most once per `intervalMs`. */
export function activityReporter(
  report: () => void,
  intervalMs = 1000,
  now: () => number = () => performance.now(),
): (event: Pick<Event, "isTrusted">) => void {
  let last = -Infinity;
  return (event) => {
    if (!event.isTrusted) return;
    const t = now();
    if (t - last < intervalMs) return;
    last = t;
    report();
  };
}

/** Installs the reporter on `target` (capture phase, passive); returns the uninstaller. */
export function installActivityListeners(target: EventTarget, handler: (event: Event) => void): () => void {
  const opts: AddEventListenerOptions = { capture: true, passive: true };
  for (const type of ACTIVITY_EVENTS) target.addEventListener(type, handler, opts);
  return () => {
    for (const type of ACTIVITY_EVENTS) target.removeEventListener(type, handler, opts);
  };
}
