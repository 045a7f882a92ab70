// Smoke test of the real desktop app: it starts in a window on an enrolled station, the title is
// "Chartroom" and nothing else, the lock screen asks for a login, and no patient data is visible.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { startApp, startStation } from "./harness.mjs";

let env;

before(async () => {
  env = await startStation({ suite: "smoke" });
  const { backendMs, appMs } = env.app.timings;
  console.log(`server + station ready in ${backendMs} ms; app window + WebDriver session in ${appMs} ms`);
});

after(async () => {
  await env?.teardown();
});

test("the window title is exactly Chartroom", async () => {
  const { app } = env;
  assert.equal(await app.session.title(), "Chartroom");
  const titles = await app.windowTitles();
  assert.ok(titles.includes("Chartroom"), `no X window titled "Chartroom" among ${JSON.stringify(titles)}`);
  for (const t of titles.filter((t) => t.toLowerCase().startsWith("chartroom"))) {
    assert.match(t, /^chartroom$/i, `a window title carries more than the app name: ${JSON.stringify(t)}`);
  }
});

test("an enrolled station shows the lock screen with a login form", async () => {
  const { app } = env;
  const lock = await app.byTestId("lock-screen", { fallback: "form[aria-labelledby=login-heading]" });
  assert.match(await lock.text(), /Log in/);
  const username = await app.byTestId("login-username", { fallback: "#username" });
  const password = await app.byTestId("login-password", { fallback: "#password" });
  await app.byTestId("login-submit", { fallback: "form button[type=submit]" });
  assert.equal(await password.attribute("type"), "password");
  assert.equal(await username.property("value"), "");
  // The field is focusable and editable; what is typed stays in it.
  await username.sendKeys("nurse.icu");
  assert.equal(await username.property("value"), "nurse.icu");
  await username.clear();
  const file = await app.shot("lock-screen");
  console.log(`screenshot: ${file}`);
});

test("the lock screen shows no patient data", async () => {
  const { app, backend } = env;
  assert.equal(backend.patients.length, 48);
  await app.assertNoPhi(backend.patients, { where: "the lock screen" });
});

// Debian containers and CI run with LANG=C.UTF-8, where WebKitGTK reports navigator.language "C";
// uPlot builds `new Intl.NumberFormat(navigator.language)` when its module loads, which throws
// "RangeError: invalid language tag: C" and the UI never mounts (a blank window). The harness pins
// LANG=en_US.UTF-8 for the other tests; this one keeps the C locale to catch the blank window.
test("the lock screen also renders under the C locale", { todo: "the UI is blank under LANG=C.UTF-8 (uPlot's Intl.NumberFormat('C'))" }, async () => {
  const dir = join(env.dir, "c-locale");
  await mkdir(dir, { recursive: true });
  const profileDir = await env.backend.enrollStation({ profileDir: join(dir, "station"), name: "e2e-c-locale" });
  const app = await startApp({
    dir,
    profileDir,
    suite: "smoke-c-locale",
    env: { LANG: "C.UTF-8" },
    knownPatients: env.backend.patients,
  });
  try {
    await app.byTestId("lock-screen", { fallback: "form[aria-labelledby=login-heading]", timeoutMs: 6000 }).catch(async (e) => {
      await app.shot("blank");
      throw e;
    });
  } finally {
    await app.stop();
  }
});
