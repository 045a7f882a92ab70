// @vitest-environment jsdom
import { flushSync, mount, unmount } from "svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SessionView, StationStatus } from "./bindings";

const login = vi.fn();
vi.mock("./api", async (importOriginal) => ({ ...(await importOriginal<typeof import("./api")>()), login }));

const { default: LockScreen } = await import("./LockScreen.svelte");

const station: StationStatus = {
  app_version: "1.0",
  enrolled: true,
  station_name: "ICU-3",
  device_profile: "icu",
  server_url: null,
  online: null,
  enrollment_defaults: null,
  revoked: false,
};
type Locked = Extract<SessionView, { state: "locked" }>;

let app: Record<string, unknown> | null = null;
const onlogin = vi.fn();
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);

function render(view: Locked) {
  app = mount(LockScreen, { target: document.body, props: { station, view, onlogin } });
  flushSync();
}

async function submit(password: string) {
  const pw = $("login-password") as HTMLInputElement;
  pw.value = password;
  ($("login-form") as HTMLFormElement).requestSubmit();
  await vi.waitFor(() => expect(login).toHaveBeenCalled());
  await Promise.resolve();
  flushSync();
}

beforeEach(() => {
  login.mockReset();
  onlogin.mockReset();
});
afterEach(() => {
  if (app) unmount(app);
  app = null;
  document.body.innerHTML = "";
  vi.useRealTimers();
});

describe("LockScreen", () => {
  it("unlocks as the signed-in user and clears the password field", async () => {
    const active: SessionView = {
      state: "active",
      user: { username: "nurse.a", role: "nurse", units: [], mode: "clinical", online: true },
      warning_seconds_left: null,
      idle_timeout_s: 300,
      warning_s: 30,
    };
    login.mockResolvedValue(active);
    render({ state: "locked", reason: "idle", signed_in: "nurse.a", idle_minutes: 5 });
    expect($("lock-reason")?.textContent).toContain("Locked — idle 5 min");
    expect($("lock-user")?.textContent).toBe("nurse.a");
    expect($("login-username")).toBeNull();
    await submit("secret");
    expect(login).toHaveBeenCalledWith("nurse.a", "secret");
    expect(($("login-password") as HTMLInputElement).value).toBe("");
    await vi.waitFor(() => expect(onlogin).toHaveBeenCalledWith(active));
  });

  it("switch user reveals a username field and logs in as that user", async () => {
    login.mockRejectedValue({ code: "auth.failed", message: "Wrong username or password.", retry_after_s: null });
    render({ state: "locked", reason: "manual", signed_in: "nurse.a", idle_minutes: null });
    $("switch-user")!.click();
    flushSync();
    const user = $("login-username") as HTMLInputElement;
    expect(user).not.toBeNull();
    user.value = "nurse.b";
    user.dispatchEvent(new Event("input", { bubbles: true }));
    await submit("pw");
    expect(login).toHaveBeenCalledWith("nurse.b", "pw");
    await vi.waitFor(() => expect($("login-error")?.textContent).toContain("Wrong username or password."));
    expect(($("login-password") as HTMLInputElement).value).toBe("");
  });

  it("shows a live retry countdown and disables submit until it ends", async () => {
    login.mockRejectedValue({ code: "auth.throttled", message: "Too many attempts.", retry_after_s: 3 });
    render({ state: "locked", reason: "startup", signed_in: null, idle_minutes: null });
    const user = $("login-username") as HTMLInputElement;
    user.value = "x";
    user.dispatchEvent(new Event("input", { bubbles: true }));
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"] });
    await submit("bad");
    await vi.waitFor(() => expect($("login-retry")?.textContent).toBe("Try again in 3 s"));
    expect(($("login-submit") as HTMLButtonElement).disabled).toBe(true);
    vi.advanceTimersByTime(1000);
    flushSync();
    expect($("login-retry")?.textContent).toBe("Try again in 2 s");
    vi.advanceTimersByTime(2100);
    flushSync();
    expect($("login-retry")).toBeNull();
    expect(($("login-submit") as HTMLButtonElement).disabled).toBe(false);
  });

  it("shows no patient data and says when the connection is unknown", () => {
    render({ state: "locked", reason: "startup", signed_in: null, idle_minutes: null });
    expect($("station-name")?.textContent).toBe("ICU-3");
    expect($("online-indicator")?.textContent).toContain("Connection unknown");
    expect($("lock-reason")).toBeNull();
  });
});
