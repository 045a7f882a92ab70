// Smoke test of the real desktop app: it starts in a window on an enrolled station, the title is
// "Chartroom" and nothing else, the lock screen asks for a login, and no patient data is visible.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startApp, startStation } from "./harness.mjs";
import { waitUntil } from "./webdriver.mjs";

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
  const lock = await app.byTestId("lock-screen");
  assert.match(await lock.text(), /Log in/);
  const username = await app.byTestId("login-username");
  const password = await app.byTestId("login-password");
  await app.byTestId("login-submit");
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

// Debian containers and CI run with LANG=C.UTF-8, where WebKitGTK would report navigator.language
// "C" (not a language tag: `Intl` throws and the UI never mounts, a blank window). The app switches
// such a station to English itself (src-tauri/src/main.rs); this test pins the bare C locale, whatever
// the machine's, and checks the window renders with a valid page language.
test("the lock screen also renders under the C locale", async () => {
  const dir = join(env.dir, "c-locale");
  await mkdir(dir, { recursive: true });
  const profileDir = await env.backend.enrollStation({ profileDir: join(dir, "station"), name: "e2e-c-locale" });
  const app = await startApp({
    dir,
    profileDir,
    suite: "smoke-c-locale",
    env: { LANG: "C.UTF-8", LC_ALL: undefined, LC_MESSAGES: undefined, LANGUAGE: undefined },
    knownPatients: env.backend.patients,
  });
  try {
    await app.byTestId("lock-screen", { timeoutMs: 6000 }).catch(async (e) => {
      await app.shot("blank");
      throw e;
    });
    await app.byTestId("login-username");
    const lang = await app.session.execute("return navigator.language");
    const canonical = await app.session.execute(
      "try { return Intl.getCanonicalLocales(navigator.language)[0]; } catch (e) { return null; }",
    );
    assert.ok(canonical, `navigator.language ${JSON.stringify(lang)} is not a valid language tag`);
    assert.match(canonical, /^en\b/, `the C locale should give English, got ${JSON.stringify(lang)}`);
    await app.shot("lock-screen");
    await app.assertNoPhi(env.backend.patients, { where: "the lock screen (C locale)" });
  } finally {
    await app.stop();
  }
});

// IT's machine policy: a file that exists but is wrong stops the app at a screen that names the
// file and the bad key; nothing can be logged into (never a fallback to defaults).
test("an invalid machine policy stops the app and names the bad key", async () => {
  const dir = join(env.dir, "bad-policy");
  await mkdir(dir, { recursive: true });
  const policy = join(dir, "policy.toml");
  await writeFile(policy, 'idle_timeout = "5m"\nidle_timout = "10m"\n');
  const profileDir = await env.backend.enrollStation({ profileDir: join(dir, "station"), name: "e2e-bad-policy" });
  const app = await startApp({
    dir,
    profileDir,
    suite: "smoke-bad-policy",
    env: { CHARTROOM_POLICY_FILE: policy },
    knownPatients: env.backend.patients,
  });
  try {
    const error = await app.byTestId("error", { timeoutMs: 6000 });
    const text = await error.text();
    assert.match(text, /Chartroom cannot start/);
    assert.match(text, /`idle_timout` is not a policy key/);
    assert.match(text, /policy\.invalid/);
    assert.equal((await app.session.findAll('[data-testid="login-form"]')).length, 0);
    await app.shot("policy-invalid");
  } finally {
    await app.stop();
  }
});

// A lost laptop: IT revokes it, and at its next contact with the server the station wipes its
// profile (database, key slots, keyring entry) and says so on the enrollment screen.
test("a revoked station wipes itself at its next login and says so", async () => {
  const dir = join(env.dir, "revoked");
  await mkdir(dir, { recursive: true });
  const profileDir = await env.backend.enrollStation({ profileDir: join(dir, "station"), name: "e2e-revoked" });
  const nurse = env.backend.users.nurse;
  await env.backend.stationCli(profileDir, nurse, ["sync"]);
  assert.ok((await readdir(profileDir)).includes("cache.db"));
  await env.backend.serverCli(["device", "revoke", "--name", "e2e-revoked"]);
  const app = await startApp({ dir, profileDir, suite: "smoke-revoked", knownPatients: env.backend.patients });
  try {
    await app.login(nurse);
    const notice = await app.byTestId("revoked", { timeoutMs: 15_000 });
    assert.match(await notice.text(), /IT revoked this station's enrollment/);
    await app.byTestId("enroll-form");
    assert.deepEqual(await readdir(profileDir), [], "the profile directory is empty");
    await app.assertNoPhi(env.backend.patients, { where: "the revoked station" });
    await app.shot("revoked");
  } finally {
    await app.stop();
  }
});

// The webview's own defences, probed from inside the page as an injected script would: the content
// security policy refuses inline script, remote script and eval; the IPC bridge answers only the
// commands Chartroom declares (no plugins, no window control); a note whose text is HTML and script
// (written at another station and synced here) is shown as text and runs nothing.
// hipaa (a)(1) (c)(1): in the real webview, CSP blocks inline and remote script and eval, only
//   declared commands are callable, and a note holding HTML and script renders as inert text
test("the webview blocks injected script, undeclared commands and HTML in notes", async () => {
  const { app, backend } = env;
  const nurse = backend.users.nurse;
  const patient = backend.patients.find((p) => p.unit === "ICU");
  const crafted =
    `<img src=x onerror="window.__xss='img'"><b id="xss-bold">bold</b>` +
    `<script>window.__xss='script'</script><a href="javascript:window.__xss='link'">link</a>`;
  // Another station writes and signs the note; this one pulls it at login.
  const profileDir = await backend.enrollStation({ profileDir: join(env.dir, "xss-writer"), name: "e2e-xss-writer" });
  await backend.stationCli(profileDir, nurse, ["sync"]);
  await backend.stationCli(profileDir, nurse, ["note", "--mrn", patient.mrn, "--text-stdin", "--sign"], { input: `${crafted}\n` });
  await backend.stationCli(profileDir, nurse, ["sync"]);

  // CSP, before login (the page is the same document throughout).
  const csp = await app.session.executeAsync(`
    const done = arguments[arguments.length - 1];
    const violations = [];
    document.addEventListener("securitypolicyviolation", (e) => violations.push(e.effectiveDirective || e.violatedDirective));
    const inline = document.createElement("script");
    inline.textContent = "window.__inline = 'ran'";
    document.head.appendChild(inline);
    const remote = document.createElement("script");
    remote.src = "https://cdn.chartroom.invalid/x.js";
    document.head.appendChild(remote);
    let evaluated = "ran";
    try { evaluated = eval("'ran'"); } catch (e) { evaluated = e.name; }
    let fn = "ran";
    try { fn = new Function("return 'ran'")(); } catch (e) { fn = e.name; }
    setTimeout(() => done({ inline: window.__inline ?? null, evaluated, fn, violations }), 500);
  `);
  assert.equal(csp.inline, null, "an inline script ran");
  assert.equal(csp.evaluated, "EvalError", "eval ran");
  assert.equal(csp.fn, "EvalError", "new Function ran");
  assert.ok(csp.violations.filter((d) => d.startsWith("script-src")).length >= 2, `violations: ${JSON.stringify(csp.violations)}`);

  // The IPC bridge: declared commands answer, anything else is refused before it reaches Rust code.
  const ipc = await app.session.executeAsync(`
    const done = arguments[arguments.length - 1];
    const invoke = window.__TAURI_INTERNALS__.invoke;
    const attempt = (cmd, args) => invoke(cmd, args ?? {}).then((v) => ({ ok: true, v }), (e) => ({ ok: false, e: String(e?.message ?? e) }));
    Promise.all([
      attempt("vital_ranges"),
      attempt("not_a_chartroom_command"),
      attempt("plugin:fs|read_text_file", { path: "/etc/passwd" }),
      attempt("plugin:shell|execute", { program: "sh", args: ["-c", "id"] }),
      attempt("plugin:window|close"),
      attempt("plugin:webview|create_webview_window", { options: { label: "evil", url: "https://chartroom.invalid" } }),
    ]).then(done);
  `);
  assert.equal(ipc[0].ok, true, `a declared command failed: ${JSON.stringify(ipc[0])}`);
  assert.ok(Array.isArray(ipc[0].v) && ipc[0].v.length > 0);
  for (const r of ipc.slice(1)) assert.equal(r.ok, false, `an undeclared command answered: ${JSON.stringify(r)}`);

  // The crafted note, on the chart.
  await app.login(nurse);
  await app.byTestId("topbar-user", { timeoutMs: 15_000 });
  if (!(await app.hasTestId("census"))) await app.click("nav-census");
  // The first sync brings the note: wait for the whole ward.
  const icuCount = backend.patients.filter((p) => p.unit === "ICU").length;
  await waitUntil(`${icuCount} census rows`, async () =>
    (await app.session.findAll('[data-testid="census-row"]')).length === icuCount, { timeoutMs: 20_000 });
  await app.fill("census-search", patient.mrn);
  const open = await app.byTestId("census-open", { timeoutMs: 15_000 });
  await open.click();
  await app.byTestId("chart");
  await app.click("tab-notes");
  const shown = await waitUntil("the crafted note on the chart", async () => {
    const texts = await app.session.execute(
      `return [...document.querySelectorAll('[data-testid="note-item"]')].map((n) => n.textContent)`,
    );
    return texts.find((t) => t.includes('<b id="xss-bold">')) ?? null;
  }, { timeoutMs: 20_000 });
  assert.ok(shown.includes("<script>window.__xss='script'</script>"), shown);
  const dom = await app.session.execute(`return {
    bold: document.querySelector("#xss-bold") !== null,
    img: [...document.images].some((i) => i.getAttribute("src") === "x"),
    link: [...document.links].some((a) => a.href.startsWith("javascript:")),
    xss: window.__xss ?? null,
  }`);
  assert.deepEqual(dom, { bold: false, img: false, link: false, xss: null });
  await app.session.execute(
    `[...document.querySelectorAll('[data-testid="note-item"]')].find((n) => n.textContent.includes("xss-bold"))?.scrollIntoView({ block: "center" })`,
  );
  await new Promise((r) => setTimeout(r, 300));
  await app.shot("note-as-text");
  await app.click("lock-button");
  await app.byTestId("lock-screen");
});
