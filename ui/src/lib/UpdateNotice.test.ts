// @vitest-environment jsdom
import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it, vi } from "vitest";

const updateCheck = vi.fn();
const updateInstall = vi.fn();
vi.mock("./api", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./api")>()),
  updateCheck,
  updateInstall,
}));

const { default: UpdateNotice } = await import("./UpdateNotice.svelte");

let app: Record<string, unknown> | null = null;
const $ = (id: string) => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);

async function render() {
  app = mount(UpdateNotice, { target: document.body });
  await vi.waitFor(() => expect(updateCheck).toHaveBeenCalled());
  await Promise.resolve();
  await Promise.resolve();
  flushSync();
}

afterEach(() => {
  if (app) unmount(app);
  app = null;
  vi.resetAllMocks();
});

describe("UpdateNotice", () => {
  it("offers a verified update and installs it on request", async () => {
    updateCheck.mockResolvedValue({ state: "available", version: "0.2.0", notes: "", file: "chartroom_0.2.0_amd64.deb" });
    updateInstall.mockResolvedValue("Installing Chartroom 0.2.0");
    await render();
    expect($("update-available")?.textContent).toContain("Chartroom 0.2.0 is available");
    ($("update-available")?.querySelector("button") as HTMLButtonElement).click();
    await vi.waitFor(() => expect(updateInstall).toHaveBeenCalledOnce());
    await Promise.resolve();
    flushSync();
    expect($("update-available")?.textContent).toContain("Installing Chartroom 0.2.0");
  });

  it("says when a release was refused, and nothing when up to date or unreachable", async () => {
    updateCheck.mockRejectedValue({ code: "update.wrong_key", message: "refused: signed with another key" });
    await render();
    expect($("update-refused")?.textContent).toContain("signed with another key");
    unmount(app!);
    updateCheck.mockRejectedValue({ code: "update.server", message: "cannot reach the server" });
    await render();
    expect($("update-refused")).toBeNull();
    unmount(app!);
    updateCheck.mockResolvedValue({ state: "up_to_date", installed: "0.1.0" });
    await render();
    expect(document.body.textContent?.trim()).toBe("");
  });
});
