// The end-to-end harness: starts, per test file, everything a real-window test needs in a temporary
// directory with free ports, and tears it all down again, also when a test fails or the run is
// interrupted.
//
//   startBackend()  a real chartroom-server with demo users and synthetic patients, serving HTTPS on
//                   127.0.0.1:0; `backend.enrollStation()` enrolls a station profile with it. Used by
//                   the UI tests and the benchmark alike (no display needed).
//   startApp()      Xvfb on a free display, a private D-Bus daemon acting as the *system* bus (so tests
//                   can emit logind signals), tauri-driver, and a WebDriver session on the app.
//   startStation()  both of the above: server, enrolled ICU station, the app on that station.
//
// Everything runs under the caller's environment, which must reach a Secret Service (the app and the
// station CLI keep the device secret in the OS keyring): run under
// `CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring`, as scripts/e2e does.

import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync, rmSync } from "node:fs";
import { mkdtemp, mkdir, readFile, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Session, waitForServer, waitUntil } from "./webdriver.mjs";

const execFileP = promisify(execFile);

/** The repository root (this file lives in `<root>/e2e/`). */
export const REPO_ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

/** Where the Chartroom binaries are: `$CHARTROOM_BIN_DIR`, else `${CARGO_TARGET_DIR:-target}/debug`. */
export const BIN_DIR =
  process.env.CHARTROOM_BIN_DIR ??
  resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR ?? "target", "debug");

/** Screenshots go here, one folder per suite: `out/e2e/<suite>/<NN>-<step>.png`. */
export const SHOT_DIR = process.env.CHARTROOM_E2E_OUT ?? join(REPO_ROOT, "out", "e2e");

/** Demo accounts (synthetic; the same as scripts/demo). */
export const USERS = Object.freeze({
  nurse: { username: "nurse.icu", password: "ward-nurse-pass-2026", role: "nurse", units: ["ICU"] },
  physician: {
    username: "doc.rounds",
    password: "rounds-doctor-pass-2026",
    role: "physician",
    units: ["ICU", "MED"],
  },
  auditor: { username: "audit.office", password: "privacy-office-pass-2026", role: "auditor", units: ["*"] },
});

// ---------------------------------------------------------------------------------------------
// Processes: every child runs in its own process group so that teardown also ends what it started
// (tauri-driver starts WebKitWebDriver, which starts the app and WebKit's helper processes).

const live = new Set();
const liveDirs = new Set();

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

// Last resort when the test process exits without running its teardown (crash, uncaught error).
process.on("exit", () => {
  for (const child of live) killGroup(child, "SIGKILL");
  if (process.env.CHARTROOM_E2E_KEEP !== "1") {
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  }
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(sig, () => {
    for (const child of live) killGroup(child, "SIGKILL");
    process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 })[sig]);
  });
}

/**
 * Spawns a long-running helper in its own process group; stdout and stderr go to `<logDir>/<name>.log`.
 * Returns `{ child, name, log, stop() }`; `stop()` sends SIGTERM to the group, then SIGKILL after 3 s.
 */
async function spawnService(name, cmd, args, { env = process.env, logDir, stdio } = {}) {
  const log = join(logDir, `${name}.log`);
  const fd = stdio ? null : openSync(log, "a");
  const child = spawn(cmd, args, {
    env,
    detached: true,
    stdio: stdio ?? ["ignore", fd, fd],
  });
  if (fd !== null) closeSync(fd);
  live.add(child);
  const exited = once(child, "exit").catch(() => {});
  child.once("error", () => {});
  const service = {
    name,
    child,
    log,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) {
        live.delete(child);
        return;
      }
      killGroup(child, "SIGTERM");
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
      // Grandchildren that ignored SIGTERM (WebKit helpers) must not outlive the run.
      killGroup(child, "SIGKILL");
      live.delete(child);
    },
  };
  return service;
}

/** The last lines of a log, for error messages. */
async function tail(file, lines = 20) {
  try {
    return (await readFile(file, "utf8")).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Runs a command to completion; `input` goes to stdin. Throws with stderr on a non-zero exit. */
export async function run(cmd, args, { input, env = process.env, cwd } = {}) {
  const child = spawn(cmd, args, { env, cwd, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  // A command that exits without reading its input (dbus-send) must not kill the test with EPIPE.
  child.stdin.on("error", () => {});
  child.stdin.end(input ?? "");
  const [code, signal] = await once(child, "exit");
  if (code !== 0) {
    const shown = [cmd, ...args].join(" ");
    throw new Error(`command failed (${signal ?? `exit ${code}`}): ${shown}\n${stderr.trim() || stdout.trim()}`);
  }
  return stdout;
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough for a test run). */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/** A fresh temporary directory for one run (removed by `cleanup` unless CHARTROOM_E2E_KEEP=1). */
export async function makeRunDir(prefix = "chartroom-e2e-") {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  liveDirs.add(dir);
  return {
    dir,
    async cleanup() {
      liveDirs.delete(dir);
      if (process.env.CHARTROOM_E2E_KEEP === "1") {
        console.log(`kept ${dir}`);
        return;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function requireKeyring() {
  if (!process.env.DBUS_SESSION_BUS_ADDRESS) {
    throw new Error(
      "no D-Bus session bus: run the end-to-end tests under `CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring` " +
        "(scripts/e2e does), the app keeps its device secret in the OS keyring",
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The central server.

/**
 * Starts a real chartroom-server in `<dir>/server`: init, the demo users, `seed --patients N`,
 * serve on 127.0.0.1:0 (`seedUnits` overrides the seed's units; `roster: false` skips reading the
 * roster). Returns a Backend:
 *   { url, fingerprint, dataDir, users, patients: [{ mrn, given, family, name, unit, bed }],
 *     enrollStation({ profileDir, name, units }), stationCli(profileDir), stop() }
 * `patients` is read from a FHIR export before serving: the names and MRNs that must never show up
 * outside a chart (see `assertNoPhi`).
 */
export async function startBackend({
  dir,
  bin = BIN_DIR,
  patients = 48,
  seed = 1,
  users = USERS,
  seedUnits,
  roster: readRoster = true,
} = {}) {
  const server = join(bin, "chartroom-server");
  const dataDir = join(dir, "server");
  const init = await run(server, ["init", "--data-dir", dataDir]);
  const fingerprint = /^fingerprint: (\S+)/m.exec(init)?.[1];
  if (!fingerprint) throw new Error(`chartroom-server init printed no fingerprint:\n${init}`);

  for (const u of Object.values(users)) {
    const args = ["user", "add", "--data-dir", dataDir, "--username", u.username, "--role", u.role, "--password-stdin"];
    for (const unit of u.units) args.push("--unit", unit);
    await run(server, args, { input: `${u.password}\n` });
  }
  const seedArgs = ["seed", "--data-dir", dataDir, "--patients", String(patients), "--seed", String(seed)];
  // `seedUnits: ["ICU"]` puts every patient on the ICU (the server's default spreads them over ICU and MED).
  if (seedUnits) seedArgs.push("--units", seedUnits.join(","));
  await run(server, seedArgs);
  // `roster: false` skips the FHIR export (slow at 10k patients); `patients` is then empty.
  const roster = readRoster ? await exportRoster(server, dataDir, join(dir, "fhir-export")) : [];

  const logDir = dir;
  // Debug logging, so that the PHI scan of the logs (startStation's teardown) reads the most there is.
  const svc = await spawnService("server", server, ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
    logDir,
    env: { ...process.env, CHARTROOM_LOG: process.env.CHARTROOM_LOG ?? "debug" },
  });
  let url;
  try {
    url = await waitUntil(
      "chartroom-server to print `listening on <url>`",
      async () => {
        if (svc.child.exitCode !== null) throw new Error(`the server exited:\n${await tail(svc.log)}`);
        return /^listening on (\S+)/m.exec(await readFile(svc.log, "utf8"))?.[1];
      },
      { timeoutMs: 15_000 },
    );
  } catch (e) {
    await svc.stop();
    throw e;
  }

  const stationBin = join(bin, "chartroom-station");
  return {
    url,
    fingerprint,
    dataDir,
    users,
    patients: roster,
    serverLog: svc.log,
    /** Runs the server CLI against this server's data directory (`--data-dir` is appended). */
    serverCli(args, opts) {
      return run(server, [...args, "--data-dir", dataDir], opts);
    },
    /** Enrolls a station profile (a one-time device token for `units`); returns the profile dir. */
    async enrollStation({ profileDir, name = "e2e-station", units = ["ICU"], profile = "station" }) {
      const tokenArgs = ["device", "token", "--data-dir", dataDir, "--name", name, "--profile", profile];
      for (const unit of units) tokenArgs.push("--unit", unit);
      const token = (await run(server, tokenArgs)).trim().split("\n").pop().trim();
      requireKeyring();
      await run(stationBin, [
        "--profile-dir", profileDir, "enroll", "--server", url, "--fingerprint", fingerprint, "--token", token,
      ]);
      return profileDir;
    },
    /** Runs the headless station CLI on a profile as `user` (password piped on stdin). */
    stationCli(profileDir, user, args, opts = {}) {
      const pre = ["--profile-dir", profileDir];
      if (user) pre.push("--username", user.username, "--password-stdin");
      return run(stationBin, [...pre, ...args], { ...opts, input: user ? `${user.password}\n${opts.input ?? ""}` : opts.input });
    },
    stop: () => svc.stop(),
  };
}

/** The seeded patients' names and MRNs, from `export-fhir` (run before `serve` holds the database). */
async function exportRoster(server, dataDir, outDir) {
  await run(server, ["export-fhir", "--data-dir", dataDir, "--out", outDir]);
  const lines = (await readFile(join(outDir, "Patient.ndjson"), "utf8")).split("\n").filter(Boolean);
  const ext = (p, suffix) => p.extension?.find((e) => e.url.endsWith(suffix))?.valueString;
  return lines.map((line) => {
    const p = JSON.parse(line);
    const name = p.name?.find((n) => n.use === "official") ?? p.name?.[0] ?? {};
    const given = (name.given ?? []).join(" ");
    return {
      id: p.id,
      mrn: p.identifier?.find((i) => i.system?.endsWith("/mrn"))?.value ?? p.identifier?.[0]?.value,
      given,
      family: name.family ?? "",
      name: `${given} ${name.family ?? ""}`.trim(),
      birthDate: p.birthDate,
      unit: ext(p, "/unit"),
      bed: ext(p, "/bed"),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Display, system bus, tauri-driver and the app.

/** Xvfb on a display it picks itself (`-displayfd`), so parallel runs never collide. */
async function startXvfb(logDir) {
  const fd = openSync(join(logDir, "xvfb.log"), "a");
  const svc = await spawnService("xvfb", "Xvfb", ["-displayfd", "3", "-screen", "0", "1280x800x24", "-nolisten", "tcp"], {
    logDir,
    stdio: ["ignore", fd, fd, "pipe"],
  });
  closeSync(fd);
  let out = "";
  svc.child.stdio[3].on("data", (d) => (out += d));
  try {
    const display = await waitUntil(
      "Xvfb to report its display number",
      async () => {
        if (svc.child.exitCode !== null) throw new Error(`Xvfb exited:\n${await tail(svc.log)}`);
        return /^(\d+)\n/.exec(out)?.[1];
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    svc.display = `:${display}`;
    return svc;
  } catch (e) {
    await svc.stop();
    throw e;
  }
}

/**
 * A private dbus-daemon standing in for the system bus (the app watches logind's PrepareForSleep and
 * session Lock signals on it). It uses the session bus policy, so any local process may emit on it.
 */
async function startSystemBus(dir) {
  const socket = join(dir, "system_bus_socket");
  const address = `unix:path=${socket}`;
  const svc = await spawnService(
    "system-bus",
    "dbus-daemon",
    ["--session", "--nofork", "--nopidfile", `--address=${address}`, "--print-address=1"],
    { logDir: dir },
  );
  try {
    await waitUntil(
      "the private system bus to print its address",
      async () => {
        if (svc.child.exitCode !== null) throw new Error(`dbus-daemon exited:\n${await tail(svc.log)}`);
        return (await readFile(svc.log, "utf8")).includes(socket);
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
  } catch (e) {
    await svc.stop();
    throw e;
  }
  svc.address = address;
  return svc;
}

/**
 * Starts the app on `profileDir` in a real window: Xvfb, a private system bus, tauri-driver and a
 * WebDriver session. Returns an App (see below). `suite` names the screenshot folder. The app gets
 * the caller's environment (locale included) plus `env`; a name mapped to `undefined` is removed.
 */
export async function startApp({ dir, profileDir, suite, bin = BIN_DIR, env = {}, knownPatients = [] }) {
  requireKeyring();
  const application = join(bin, "chartroom");
  const started = [];
  const stopAll = async () => {
    for (const svc of started.reverse()) await svc.stop();
  };
  try {
    const xvfb = await startXvfb(dir);
    started.push(xvfb);
    const bus = await startSystemBus(dir);
    started.push(bus);

    const port = await freePort();
    const nativePort = await freePort();
    const driverEnv = {
      ...process.env,
      DISPLAY: xvfb.display,
      DBUS_SYSTEM_BUS_ADDRESS: bus.address,
      CHARTROOM_PROFILE_DIR: profileDir,
      CHARTROOM_LOG: process.env.CHARTROOM_LOG ?? "debug",
      ...env,
    };
    // `env: { NAME: undefined }` removes NAME from the app's environment.
    for (const [k, v] of Object.entries(env)) if (v === undefined || v === null) delete driverEnv[k];
    delete driverEnv.WAYLAND_DISPLAY;
    // With compositing disabled, WebKitWebDriver's screenshot command never answers (WebKitGTK 2.50).
    if (!("WEBKIT_DISABLE_COMPOSITING_MODE" in env)) delete driverEnv.WEBKIT_DISABLE_COMPOSITING_MODE;
    const driver = await spawnService(
      "tauri-driver",
      process.env.TAURI_DRIVER ?? "tauri-driver",
      ["--port", String(port), "--native-port", String(nativePort)],
      { env: driverEnv, logDir: dir },
    );
    started.push(driver);
    const baseUrl = `http://127.0.0.1:${port}`;
    await waitForServer(baseUrl).catch(async (e) => {
      throw new Error(`${e.message}\ntauri-driver log:\n${await tail(driver.log)}`);
    });

    const t0 = Date.now();
    const session = await Session.create(baseUrl, {
      browserName: "wry",
      "tauri:options": { application },
    }).catch(async (e) => {
      throw new Error(`${e.message}\ntauri-driver log:\n${await tail(driver.log)}`);
    });
    const app = new App({ session, suite, display: xvfb.display, systemBus: bus.address, knownPatients, logDir: dir });
    // For the benchmark: when the new-session request was sent (epoch ms), the driver's process id
    // (the app and its WebKit processes descend from it) and what a new session on it needs.
    app.t0 = t0;
    app.driverPid = driver.child.pid;
    app.capabilities = { browserName: "wry", "tauri:options": { application } };
    app.sessionMs = Date.now() - t0;
    await waitUntil(
      "the app's page to finish loading",
      async () => (await session.execute("return document.readyState")) === "complete",
      { timeoutMs: 30_000 },
    );
    app.loadedMs = Date.now() - t0;
    app.stop = async () => {
      // `app.session` may have been replaced by a new session on the same driver (the benchmark).
      await app.session.delete();
      await stopAll();
    };
    await app.resetShots();
    return app;
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** CSS for an element by its `data-testid`, optionally with a fallback selector for today's UI. */
export function testIdCss(id, fallback) {
  const css = `[data-testid=${JSON.stringify(id)}]`;
  return fallback ? `${css}, ${fallback}` : css;
}

/** The app in its window: the WebDriver session plus the helpers story tests are written with. */
export class App {
  constructor({ session, suite, display, systemBus, knownPatients, logDir }) {
    this.session = session;
    this.suite = suite;
    this.display = display;
    this.systemBus = systemBus;
    this.knownPatients = knownPatients;
    this.logDir = logDir;
    this.shotCount = 0;
    this.shotDir = join(SHOT_DIR, suite);
  }

  async resetShots() {
    await rm(this.shotDir, { recursive: true, force: true });
    await mkdir(this.shotDir, { recursive: true });
  }

  /**
   * Waits for the element with `data-testid=id` (or, while the UI does not have it yet, `fallback`)
   * to be displayed and returns it.
   */
  byTestId(id, { fallback, timeoutMs = 10_000, displayed = true } = {}) {
    const what = `[data-testid=${id}]${fallback ? ` (or ${fallback})` : ""}${displayed ? " to be displayed" : ""}`;
    return this.session.waitFor(testIdCss(id, fallback), { timeoutMs, displayed, what });
  }

  /** Waits until no element with `data-testid=id` (or `fallback`) is displayed. */
  goneTestId(id, { fallback, timeoutMs = 10_000 } = {}) {
    return this.session.waitGone(testIdCss(id, fallback), {
      timeoutMs,
      what: `[data-testid=${id}]${fallback ? ` (or ${fallback})` : ""} to disappear`,
    });
  }

  /** Whether an element with `data-testid=id` (or `fallback`) is displayed right now. */
  async hasTestId(id, { fallback } = {}) {
    for (const el of await this.session.findAll(testIdCss(id, fallback))) {
      if (await el.isDisplayed()) return true;
    }
    return false;
  }

  /** Clears a field and types `text` into it. */
  async fill(id, text, { fallback } = {}) {
    const el = await this.byTestId(id, { fallback });
    await el.clear();
    await el.sendKeys(text);
    return el;
  }

  async click(id, { fallback } = {}) {
    const el = await this.byTestId(id, { fallback });
    await el.click();
    return el;
  }

  /** Waits until the text of `data-testid=id` satisfies `predicate` (a RegExp, string or function). */
  async waitText(id, predicate, { fallback, timeoutMs = 10_000 } = {}) {
    const test =
      typeof predicate === "function"
        ? predicate
        : predicate instanceof RegExp
          ? (t) => predicate.test(t)
          : (t) => t.includes(predicate);
    return waitUntil(
      `the text of [data-testid=${id}] to match ${predicate}`,
      async () => {
        const text = await (await this.session.find(testIdCss(id, fallback))).text();
        return test(text) ? text : null;
      },
      { timeoutMs },
    );
  }

  /**
   * Logs in on the lock screen: fills username and password and submits. It does not wait for the
   * result (a test asserts what should follow: the census, an error, the break-glass prompt).
   */
  async login(username, password) {
    if (typeof username === "object") ({ username, password } = username);
    await this.fill("login-username", username, { fallback: "#username" });
    await this.fill("login-password", password, { fallback: "#password" });
    await this.click("login-submit", { fallback: "form button[type=submit]" });
  }

  /** Unlocks the lock screen of the signed-in user (only the password field is shown). */
  async unlock(password) {
    if (typeof password === "object") ({ password } = password);
    await this.fill("login-password", password, { fallback: "#password" });
    await this.click("login-submit", { fallback: "form button[type=submit]" });
  }

  /** On the lock screen: ends the signed-in user's session and logs `user` in instead. */
  async switchUser(user) {
    await this.click("switch-user");
    await this.byTestId("login-username", { fallback: "#username" });
    await this.login(user);
  }

  /** Saves a screenshot as `out/e2e/<suite>/<NN>-<name>.png` and returns its path. */
  async shot(name) {
    this.shotCount += 1;
    const safe = name.replace(/[^A-Za-z0-9._-]+/g, "-");
    const file = join(this.shotDir, `${String(this.shotCount).padStart(2, "0")}-${safe}.png`);
    await this.session.screenshot(file);
    return file;
  }

  /** The titles of the app's top-level X windows (what a taskbar or window switcher shows). */
  async windowTitles() {
    const { stdout } = await execFileP("xwininfo", ["-root", "-children", "-display", this.display]);
    // Lines look like: `     0x200003 "Chartroom": ("chartroom" "Chartroom")  1280x800+0+0  +0+0`
    return [...stdout.matchAll(/^\s+0x[0-9a-f]+ "((?:[^"\\]|\\.)*)":/gm)].map((m) => m[1]);
  }

  /**
   * Asserts that no seeded patient's name or MRN appears in the page source, the document title
   * or any X window title: for screens that must show no PHI (lock screen, idle overlay, after
   * logout). `patients` defaults to the roster the harness read from the server.
   */
  async assertNoPhi(patients = this.knownPatients, { where = "the window" } = {}) {
    const needles = phiNeedles(patients);
    if (needles.length === 0) throw new Error("assertNoPhi: no known patients to look for");
    const haystacks = {
      "page source": await this.session.pageSource(),
      "document title": await this.session.title(),
      "X window titles": (await this.windowTitles()).join("\n"),
    };
    const found = [];
    for (const [place, text] of Object.entries(haystacks)) {
      for (const n of needles) {
        if (n.re.test(text)) found.push(`${n.label} in the ${place}`);
      }
    }
    if (found.length > 0) {
      const file = await this.shot("phi-leak");
      throw new Error(`PHI visible in ${where}: ${found.slice(0, 10).join("; ")} (screenshot: ${file})`);
    }
  }

  /** Emits logind's PrepareForSleep(true) (the machine is about to suspend) on the private system bus. */
  emitPrepareForSleep(start = true) {
    return run("dbus-send", [
      `--bus=${this.systemBus}`,
      "--type=signal",
      "/org/freedesktop/login1",
      "org.freedesktop.login1.Manager.PrepareForSleep",
      `boolean:${start}`,
    ]);
  }

  /** Emits logind's Session.Lock (what `loginctl lock-sessions` makes logind send) on the private system bus. */
  emitSessionLock(session = "/org/freedesktop/login1/session/auto") {
    return this.emitSignal(session, "org.freedesktop.login1.Session.Lock");
  }

  /**
   * Emits org.freedesktop.ScreenSaver.ActiveChanged(active) on the *session* bus (the one
   * scripts/with-keyring started; shared by the suites, which run one at a time).
   */
  emitScreenSaver(active = true) {
    return run("dbus-send", [
      "--session",
      "--type=signal",
      "/org/freedesktop/ScreenSaver",
      "org.freedesktop.ScreenSaver.ActiveChanged",
      `boolean:${active}`,
    ]);
  }

  /** Emits a D-Bus signal on the private system bus: `emitSignal(path, "iface.Member", "string:x", …)`. */
  emitSignal(path, member, ...args) {
    return run("dbus-send", [`--bus=${this.systemBus}`, "--type=signal", path, member, ...args]);
  }
}

/** Patterns for each patient's full name, family name and MRN (word-bounded, case-insensitive). */
function phiNeedles(patients) {
  const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const out = [];
  for (const p of patients) {
    if (p.mrn) out.push({ label: `MRN ${p.mrn}`, re: new RegExp(`\\b${esc(p.mrn)}\\b`) });
    // Family names alone are the strongest signal; a few may be ordinary words, but the seeded
    // ones are surnames, and a false alarm here is cheap compared with a leak.
    if (p.family) out.push({ label: `name "${p.family}" (${p.mrn})`, re: new RegExp(`\\b${esc(p.family)}\\b`, "i") });
    if (p.name && p.name !== p.family) out.push({ label: `name "${p.name}" (${p.mrn})`, re: new RegExp(esc(p.name), "i") });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Everything at once.

/**
 * The usual setup for a story test: a server with the demo users and 48 patients, a station
 * enrolled for ICU, and the app running on that station. Returns
 * `{ backend, app, profileDir, dir, teardown() }`; call `teardown()` in `after()`.
 */
export async function startStation({ suite, patients = 48, units = ["ICU"], env } = {}) {
  const t0 = Date.now();
  const tmp = await makeRunDir();
  let backend;
  let app;
  const teardown = async () => {
    await app?.stop();
    await backend?.stop();
    // Every log the run wrote (the server's and the app's, at debug level) is searched for patients.
    const leaks = backend ? await phiInLogs(tmp.dir, backend.patients) : [];
    await tmp.cleanup();
    if (leaks.length > 0) throw new Error(`patient data in the logs:\n${leaks.join("\n")}`);
  };
  try {
    backend = await startBackend({ dir: tmp.dir, patients });
    const profileDir = join(tmp.dir, "station");
    await backend.enrollStation({ profileDir, name: `e2e-${suite}`, units });
    const backendMs = Date.now() - t0;
    app = await startApp({ dir: tmp.dir, profileDir, suite, env, knownPatients: backend.patients });
    app.timings = { backendMs, appMs: Date.now() - t0 - backendMs };
    return { backend, app, profileDir, dir: tmp.dir, teardown };
  } catch (e) {
    // Keep the logs in the error: the directory is removed by teardown.
    const logs = await collectLogs(tmp.dir);
    // A leak found while tearing down is reported with, not instead of, the startup error.
    await teardown().catch((t) => {
      e.message += `\n--- teardown ---\n${t.message}`;
    });
    if (logs) e.message += `\n--- logs ---\n${logs}`;
    throw e;
  }
}

/** `file: label` for each patient name or MRN found in a `*.log` file under `dir`. */
async function phiInLogs(dir, patients) {
  const needles = phiNeedles(patients);
  const found = [];
  const walk = async (d) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith(".log")) {
        const text = await readFile(p, "utf8");
        for (const n of needles) if (n.re.test(text)) found.push(`${p}: ${n.label}`);
      }
    }
  };
  await walk(dir);
  return found;
}

async function collectLogs(dir) {
  let names = [];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".log"));
  } catch {
    return "";
  }
  const parts = [];
  for (const n of names) parts.push(`== ${n}\n${await tail(join(dir, n), 15)}`);
  return parts.join("\n");
}

