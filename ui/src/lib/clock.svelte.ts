// A shared "now" for relative times ("3 min ago"), ticking every 15 s. It only re-renders
// labels: it never reports activity or talks to the backend.
class Clock {
  now = $state(Date.now());
  #users = 0;
  #timer: ReturnType<typeof setInterval> | null = null;

  /** Starts ticking while at least one component uses it; returns the release function. */
  use(): () => void {
    this.#users++;
    if (this.#timer === null) {
      this.now = Date.now();
      this.#timer = setInterval(() => (this.now = Date.now()), 15_000);
    }
    return () => {
      this.#users--;
      if (this.#users === 0 && this.#timer !== null) {
        clearInterval(this.#timer);
        this.#timer = null;
      }
    };
  }
}

export const clock = new Clock();
