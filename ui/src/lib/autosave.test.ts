import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createAutosave, type SaveStatus } from "./autosave";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

function setup(save = vi.fn(async (_text: string) => {})) {
  const statuses: SaveStatus["kind"][] = [];
  const a = createAutosave({ save, delayMs: 1500, onStatus: (s) => statuses.push(s.kind), now: () => 42 });
  return { a, save, statuses };
}

describe("autosave", () => {
  it("saves once, 1.5 s after the last change", async () => {
    const { a, save } = setup();
    a.change("h");
    await vi.advanceTimersByTimeAsync(1000);
    a.change("he");
    await vi.advanceTimersByTimeAsync(1000);
    a.change("hel");
    await vi.advanceTimersByTimeAsync(1499);
    expect(save).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(save).toHaveBeenCalledTimes(1);
    expect(save).toHaveBeenCalledWith("hel");
    expect(a.dirty()).toBe(false);
  });

  it("flush saves immediately and cancels the timer", async () => {
    const { a, save, statuses } = setup();
    a.change("urgent");
    await a.flush();
    expect(save).toHaveBeenCalledWith("urgent");
    await vi.advanceTimersByTimeAsync(5000);
    expect(save).toHaveBeenCalledTimes(1);
    expect(statuses).toEqual(["pending", "saving", "saved"]);
  });

  it("flush with nothing unsaved does not save", async () => {
    const { a, save } = setup();
    await a.flush();
    expect(save).not.toHaveBeenCalled();
  });

  it("never overlaps saves and saves the newest text after an in-flight one", async () => {
    let release!: () => void;
    const calls: string[] = [];
    const save = vi.fn((text: string) => {
      calls.push(text);
      return calls.length === 1 ? new Promise<void>((r) => (release = r)) : Promise.resolve();
    });
    const { a } = setup(save);
    a.change("one");
    await vi.advanceTimersByTimeAsync(1500);
    a.change("two");
    const flushed = a.flush();
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toEqual(["one"]);
    release();
    await flushed;
    expect(calls).toEqual(["one", "two"]);
  });

  it("keeps the text after a failed save and retries on flush", async () => {
    let fail = true;
    const save = vi.fn(async () => {
      if (fail) throw new Error("offline");
    });
    const { a, statuses } = setup(save);
    a.change("keep me");
    await a.flush();
    expect(statuses.at(-1)).toBe("error");
    expect(a.dirty()).toBe(true);
    fail = false;
    await a.flush();
    expect(save).toHaveBeenLastCalledWith("keep me");
    expect(statuses.at(-1)).toBe("saved");
  });
});
