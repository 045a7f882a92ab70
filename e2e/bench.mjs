#!/usr/bin/env node
// Real-window UI benchmark of the desktop app: cold start, chart open, census search at 10,000
// patients, and memory (PSS of the app and its WebKit processes). Numbers are reported, never
// asserted: the targets below are printed next to them.
//
//   CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring node e2e/bench.mjs --json           # full (~15 min)
//   CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring node e2e/bench.mjs --quick --json   # smoke (~1–2 min)
//
// Same environment as scripts/e2e (Xvfb, webkit2gtk-driver, tauri-driver on PATH, binaries in
// $CHARTROOM_BIN_DIR or target/debug; build them first). Progress goes to stderr; with --json,
// stdout is one JSON object. How each number is taken: docs/benchmarks.md, "UI (real window)".
//
// Timings inside the page come from User Timing marks the UI sets (ui/src/lib/perf.ts):
//   chart-open      App.openChart (the census row's click/Enter handler) → the chart's data in
//                   the DOM (after `tick()`), then the first task after the next animation frame
//   census-search   the search field's `input` event → the filtered list in the DOM, same end
//   lock-screen:painted  the lock screen's first frame after mount (cold start, page-side)

import { readFile, readdir, writeFile } from "node:fs/promises";
import { closeSync, existsSync, openSync } from "node:fs";
import { execFileSync, spawn } from "node:child_process";
import os from "node:os";
import { join } from "node:path";
import { BIN_DIR, REPO_ROOT, USERS, makeRunDir, run, startApp, startBackend, testIdCss } from "./harness.mjs";
import { Key, Session, waitUntil } from "./webdriver.mjs";

const args = process.argv.slice(2);
const argv = new Set(args);
if (argv.has("--help") || argv.has("-h")) {
  console.log("usage: node e2e/bench.mjs [--quick] [--json] [--out FILE]   (under CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring)");
  process.exit(0);
}
const OUT_FILE = args.includes("--out") ? args[args.indexOf("--out") + 1] : null;
const QUICK = argv.has("--quick");
const JSON_OUT = argv.has("--json");

const CFG = QUICK
  ? { patients: 1000, coldStarts: 1, searchQueries: 6, opens: 40, memAt: 20, lockEvery: 20, settleMs: 2000, blankWaitMs: 3000 }
  : { patients: 10_000, coldStarts: 5, searchQueries: 30, opens: 1000, memAt: 50, lockEvery: 50, settleMs: 3000, blankWaitMs: 5000 };
// Overrides: --patients N, --opens N, --lock-every N, --mem-at N (e.g. a shorter full run: --opens 400),
// --max-open-minutes M (stop opening charts after M minutes; memory is then read at that point).
for (const [flag, key] of [
  ["--patients", "patients"],
  ["--opens", "opens"],
  ["--lock-every", "lockEvery"],
  ["--mem-at", "memAt"],
  ["--max-open-minutes", "maxOpenMinutes"],
]) {
  const i = args.indexOf(flag);
  if (i >= 0) CFG[key] = Number(args[i + 1]);
}

const TARGETS = {
  cold_start_to_login_ms: "<= 1000",
  chart_open_p99_ms: "<= 150",
  census_search_p99_ms: "<= 50 (at 10,000 patients)",
  memory_ratio: "<= 1.5",
  memory_growth_ratio: "<= 1.1",
};

const NURSE = USERS.nurse;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...a);
const round = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

/** Nearest-rank percentile of a numeric array. */
function pct(values, p) {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const median = (v) => pct(v, 50);

function summary(prefix, values) {
  return {
    [`${prefix}_p50_ms`]: round(pct(values, 50)),
    [`${prefix}_p95_ms`]: round(pct(values, 95)),
    [`${prefix}_p99_ms`]: round(pct(values, 99)),
    [`${prefix}_max_ms`]: round(values.length ? Math.max(...values) : null),
    [`${prefix}_count`]: values.length,
  };
}

/** A small deterministic PRNG (mulberry32), so every run picks the same patients and queries. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle(items, rand) {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Processes and memory.

/** pid → parent pid for every process we can read. */
async function processTable() {
  const table = new Map();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      // The command name may contain spaces and parentheses: the fields start after the last ")".
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      table.set(Number(name), { ppid: Number(rest[1]), comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) });
    } catch {
      // Gone meanwhile.
    }
  }
  return table;
}

function descendants(table, root) {
  const children = new Map();
  for (const [pid, { ppid }] of table) {
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  const out = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}

/** The app process (`chartroom`) started under this run's tauri-driver, or null. */
async function appPid(driverPid) {
  const table = await processTable();
  for (const pid of descendants(table, driverPid)) {
    if (table.get(pid)?.comm === "chartroom") return pid;
  }
  return null;
}

/** Pss, Rss and USS (Private_Clean + Private_Dirty) of one process, in KiB. */
async function memKiB(pid) {
  try {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
    const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return { pss: field("Pss"), rss: field("Rss"), uss: field("Private_Clean") + field("Private_Dirty") };
  } catch {
    return { pss: 0, rss: 0, uss: 0 };
  }
}

/**
 * Where a process's PSS lies, by mapping (CHARTROOM_BENCH_DEBUG only): anonymous memory, the heap,
 * shared memory, each library or file; the largest `top` groups, in MiB.
 */
async function smapsByMapping(pid, top = 10) {
  const text = await readFile(`/proc/${pid}/smaps`, "utf8").catch(() => "");
  const groups = new Map();
  let name = "?";
  for (const line of text.split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      name = head[1] === "" ? "[anon]" : head[1].replace(/^.*\//, "");
      continue;
    }
    const pss = /^Pss:\s+(\d+) kB/.exec(line);
    if (pss) groups.set(name, (groups.get(name) ?? 0) + Number(pss[1]));
  }
  return [...groups].sort((a, b) => b[1] - a[1]).slice(0, top).map(([n, kib]) => [n, round(kib / 1024)]);
}

/** WebKit web processes on this machine that are not ours (other test runs share library pages with us). */
function foreignWebProcesses(table, ours) {
  let n = 0;
  for (const [pid, { comm }] of table) if (comm.startsWith("WebKitWebProces") && !ours.has(pid)) n++;
  return n;
}

/** Total PSS of the app and all its descendants (WebKitWebProcess, WebKitNetworkProcess, …). */
async function appTreePss(driverPid) {
  const pid = await appPid(driverPid);
  if (!pid) throw new Error("the app process was not found under tauri-driver");
  const table = await processTable();
  const pids = [pid, ...descendants(table, pid)];
  const parts = [];
  const total = { pss: 0, rss: 0, uss: 0 };
  for (const p of pids) {
    const m = await memKiB(p);
    for (const k of Object.keys(total)) total[k] += m[k];
    const part = { pid: p, comm: table.get(p)?.comm ?? "?", pss_mib: round(m.pss / 1024), uss_mib: round(m.uss / 1024) };
    if (process.env.CHARTROOM_BENCH_DEBUG) part.by_mapping = await smapsByMapping(p);
    parts.push(part);
  }
  return {
    pss_mib: round(total.pss / 1024),
    uss_mib: round(total.uss / 1024),
    rss_mib: round(total.rss / 1024),
    other_webkit_web_processes_running: foreignWebProcesses(table, new Set(pids)),
    processes: parts,
  };
}

// ---------------------------------------------------------------------------------------------
// The window.

/** `waitUntil`, polling every 5 ms unless told otherwise (tighter than the harness's 100 ms). */
const poll = (what, fn, { timeoutMs = 10_000, intervalMs = 5 } = {}) => waitUntil(what, fn, { timeoutMs, intervalMs });

async function displayed(session, css) {
  for (const el of await session.findAll(css)) if (await el.isDisplayed()) return el;
  return null;
}

/** Reads and clears the page's measures of `name` (durations in ms). */
function takeMeasures(session, name) {
  return session.execute(
    `const n = arguments[0];
     const d = performance.getEntriesByName(n, "measure").map((e) => e.duration);
     performance.clearMeasures(n);
     return d;`,
    [name],
  );
}

function clearMeasures(session, name) {
  return session.execute("performance.clearMeasures(arguments[0]); return true;", [name]);
}

/** Waits for one new measure of `name` and returns its duration. */
async function nextMeasure(session, name, what, timeoutMs = 15_000) {
  const d = await poll(what, async () => {
    const got = await takeMeasures(session, name);
    return got.length > 0 ? got : null;
  }, { timeoutMs, intervalMs: 2 });
  return d[d.length - 1];
}

/** When the lock screen was first painted (epoch ms, page clock), or null. */
function lockScreenPaintedAt(session) {
  return session.execute(
    `const e = performance.getEntriesByName("lock-screen:painted", "mark")[0];
     return e ? performance.timeOrigin + e.startTime : null;`,
  );
}

const LOGIN_USERNAME = testIdCss("login-username");

/**
 * One cold start: ends the current session (the driver closes the app), waits until the app
 * process is gone, then times a new-session request until the login form is displayed.
 */
async function coldStart(app) {
  await app.session.delete();
  await poll("the previous app process to exit", async () => (await appPid(app.driverPid)) === null, {
    timeoutMs: 15_000,
    intervalMs: 50,
  });
  await sleep(500);
  const t0 = Date.now();
  app.session = await Session.create(app.session.baseUrl, app.capabilities);
  const sessionMs = Date.now() - t0;
  await poll("[data-testid=login-username] to be displayed", () => displayed(app.session, LOGIN_USERNAME), {
    timeoutMs: 30_000,
    intervalMs: 0,
  });
  const displayedMs = Date.now() - t0;
  const paintedAt = await poll("the lock-screen:painted mark", () => lockScreenPaintedAt(app.session), { timeoutMs: 5000 });
  return { displayedMs, paintedMs: Math.round(paintedAt - t0), sessionMs };
}

async function censusTotal(session) {
  const text = await session.execute(`return document.getElementById("census-count")?.textContent ?? ""`);
  const m = /of (\d+)/.exec(text) ?? /(\d+) patients?/.exec(text);
  return m ? Number(m[1]) : null;
}

async function waitCensusLoaded(app, want, timeoutMs = 120_000) {
  await app.byTestId("census", { timeoutMs: 30_000 });
  return poll(`the census to list ${want} patients`, async () => ((await censusTotal(app.session)) === want ? true : null), {
    timeoutMs,
    intervalMs: 50,
  });
}

async function lockAndUnlock(app, want) {
  await (await displayed(app.session, testIdCss("lock-button"))).click();
  await app.byTestId("lock-screen", { timeoutMs: 20_000 });
  await app.unlock(NURSE);
  await waitCensusLoaded(app, want);
}

// ---------------------------------------------------------------------------------------------

/**
 * GTK asks the session bus for the accessibility bus; if the bus daemon of scripts/with-keyring
 * starts it, its registry prints a line on *our* stdout (the daemon's), breaking `--json`. Start
 * the launcher ourselves, with its output in the run's log, unless one is already there.
 */
async function startA11yBus(dir) {
  const launcher = "/usr/libexec/at-spi-bus-launcher";
  if (!existsSync(launcher) || !process.env.DBUS_SESSION_BUS_ADDRESS) return null;
  const owned = async () =>
    (
      await run("dbus-send", [
        "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus.NameHasOwner", "string:org.a11y.Bus",
      ]).catch(() => "")
    ).includes("boolean true");
  if (await owned()) return null;
  const fd = openSync(join(dir, "a11y-bus.log"), "a");
  const child = spawn(launcher, [], { detached: true, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  child.once("error", () => {});
  await poll("the accessibility bus launcher", owned, { timeoutMs: 5000, intervalMs: 50 }).catch(() => {});
  return child;
}

function stopA11yBus(child) {
  if (!child || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    // Gone.
  }
}

function machineFacts() {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return null;
    }
  };
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpu_model: cpus[0]?.model ?? null,
    mem_gib: round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    os: sh("sh", ["-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    webkitgtk: sh("dpkg-query", ["-W", "-f=${Version}", "libwebkit2gtk-4.1-0"]),
    node: process.version,
    git_commit: sh("git", ["-C", REPO_ROOT, "rev-parse", "--short", "HEAD"]),
    git_dirty: (sh("git", ["-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"]) ?? "") !== "",
    build: "debug (target/debug; crypto and SQLite crates at opt-level 3, see Cargo.toml)",
    bin_dir: BIN_DIR,
  };
}

async function main() {
  const started = Date.now();
  const out = {
    mode: QUICK ? "quick" : "full",
    date: new Date().toISOString(),
    config: CFG,
    targets: TARGETS,
    machine: machineFacts(),
  };
  out.machine.loadavg_start = os.loadavg().map((x) => round(x, 2));
  const tmp = await makeRunDir("chartroom-bench-");
  let backend;
  let app;
  let a11y;
  try {
    a11y = await startA11yBus(tmp.dir);
    // --- Server with N patients all on ICU; station enrolled for ICU and synced headless.
    let t = Date.now();
    log(`seeding a server with ${CFG.patients} patients on ICU…`);
    backend = await startBackend({ dir: tmp.dir, patients: CFG.patients, seedUnits: ["ICU"], roster: false });
    out.setup = { seed_s: round((Date.now() - t) / 1000) };
    const profileDir = join(tmp.dir, "station");
    await backend.enrollStation({ profileDir, name: "bench-station", units: ["ICU"] });
    t = Date.now();
    log("first sync of the station profile (chartroom-station sync)…");
    await backend.stationCli(profileDir, NURSE, ["sync", "--json"]);
    out.setup.station_sync_s = round((Date.now() - t) / 1000);
    const rows = JSON.parse(await backend.stationCli(profileDir, NURSE, ["census", "--json"]));
    const censusRows = Array.isArray(rows) ? rows : (rows.rows ?? []);
    if (censusRows.length !== CFG.patients) throw new Error(`the station census has ${censusRows.length} rows, not ${CFG.patients}`);
    out.setup.station_census_rows = censusRows.length;
    log(`station synced in ${out.setup.station_sync_s} s (${censusRows.length} patients)`);

    // --- First launch (disk caches cold for this binary in this run) and the empty-window baseline.
    app = await startApp({ dir: tmp.dir, profileDir, suite: "bench" });
    await poll("[data-testid=login-username] to be displayed", () => displayed(app.session, LOGIN_USERNAME), {
      timeoutMs: 30_000,
      intervalMs: 0,
    });
    out.cold_start_first_launch_ms = Date.now() - app.t0;
    log(`first launch: login form after ${out.cold_start_first_launch_ms} ms`);

    await sleep(CFG.settleMs);
    const lockScreenMem = await appTreePss(app.driverPid);
    await app.session.cmd("POST", "/url", { url: "about:blank" });
    const blankUrl = await app.session.url();
    await sleep(CFG.blankWaitMs);
    const baseline = await appTreePss(app.driverPid);
    out.memory_baseline = {
      what:
        `the app freshly started at its lock screen, then WebDriver "navigate to about:blank" (document URL ` +
        `afterwards: ${blankUrl}), ${CFG.blankWaitMs / 1000} s wait, PSS of the app process and all its descendants`,
      ...baseline,
    };
    out.memory_lock_screen_pss_mib = lockScreenMem.pss_mib;
    out.memory_lock_screen_uss_mib = lockScreenMem.uss_mib;
    log(`memory: lock screen ${lockScreenMem.pss_mib} MiB, empty window ${baseline.pss_mib} MiB`);

    // --- Cold starts: each a fresh app process on the same driver and profile.
    const cold = [];
    for (let i = 0; i < CFG.coldStarts; i++) {
      const c = await coldStart(app);
      cold.push(c);
      log(`cold start ${i + 1}/${CFG.coldStarts}: displayed ${c.displayedMs} ms (page painted ${c.paintedMs} ms, new session ${c.sessionMs} ms)`);
    }
    out.cold_start_to_login_ms = median(cold.map((c) => c.displayedMs));
    out.cold_start_to_login_samples_ms = cold.map((c) => c.displayedMs);
    out.cold_start_to_login_painted_ms = median(cold.map((c) => c.paintedMs));
    out.cold_start_new_session_ms = median(cold.map((c) => c.sessionMs));

    // --- Log in; the census must list every patient.
    t = Date.now();
    await app.login(NURSE);
    await waitCensusLoaded(app, CFG.patients);
    out.login_to_census_ms = Date.now() - t;
    log(`logged in; census lists ${CFG.patients} patients after ${out.login_to_census_ms} ms`);
    await sleep(CFG.settleMs);
    out.memory_after_login = await appTreePss(app.driverPid);

    // --- Census search: realistic queries typed one key at a time, one measure per keystroke.
    const rand = prng(20261127);
    const picks = shuffle(censusRows, rand);
    const queries = [];
    for (let i = 0; queries.length < CFG.searchQueries; i++) {
      const r = picks[i];
      // Census names are "Family, Given".
      const [family, given = ""] = r.name.split(",").map((x) => x.trim());
      switch (i % 5) {
        case 0: queries.push(family.toLowerCase()); break;                        // a surname
        case 1: queries.push(`${family}, ${given.slice(0, 3)}`.toLowerCase()); break; // "okafor, ama"
        case 2: queries.push(r.mrn.slice(0, 6)); break;                          // an MRN prefix
        case 3: queries.push(r.bed); break;                                      // a bed
        default: queries.push(r.mrn); break;                                     // a whole MRN
      }
    }
    const search = await app.byTestId("census-search");
    const shownRows = () =>
      app.session.execute(`return Array.from(document.querySelectorAll('[data-testid="census-row"]'), (r) => r.dataset.mrn)`);
    const fewNew = [];
    const manyNew = [];
    const searchMs = [];
    const searchLog = [];
    const byKind = { surname: [], name: [], mrn_prefix: [], bed: [], mrn: [] };
    const kinds = Object.keys(byKind);
    for (const [qi, q] of queries.entries()) {
      await search.sendKeys(Key.ESCAPE); // the field clears itself (no input event from the UI's handler)
      await sleep(150);
      await clearMeasures(app.session, "census-search");
      let before = new Set(await shownRows());
      for (const ch of q) {
        await search.sendKeys(ch);
        const d = await nextMeasure(app.session, "census-search", `the census-search measure after typing ${JSON.stringify(ch)}`);
        searchMs.push(d);
        const now = await shownRows();
        const added = now.filter((m) => !before.has(m)).length;
        before = new Set(now);
        (added <= 10 ? fewNew : manyNew).push(d);
        searchLog.push([q, ch, round(d), added, now.length]);
        byKind[kinds[qi % 5]].push(d);
      }
    }
    await search.sendKeys(Key.ESCAPE);
    Object.assign(out, summary("census_search", searchMs));
    // Split at the backend's answer (the UI marks it): the search command, and drawing the rows.
    const searchBackend = await takeMeasures(app.session, "census-search:backend");
    const searchRender = await takeMeasures(app.session, "census-search:render");
    out.census_search_backend_p50_ms = round(pct(searchBackend, 50));
    out.census_search_backend_p99_ms = round(pct(searchBackend, 99));
    out.census_search_render_p50_ms = round(pct(searchRender, 50));
    out.census_search_render_p99_ms = round(pct(searchRender, 99));
    out.census_search_patients = CFG.patients;
    if (process.env.CHARTROOM_BENCH_DEBUG) out.census_search_log = searchLog;
    out.census_search_queries = queries.length;
    out.census_search_rows_drawn_max = 50;
    out.census_search_by_new_rows = {
      at_most_10_new_rows: { count: fewNew.length, p50_ms: round(pct(fewNew, 50)), p95_ms: round(pct(fewNew, 95)) },
      more_than_10_new_rows: { count: manyNew.length, p50_ms: round(pct(manyNew, 50)), p95_ms: round(pct(manyNew, 95)) },
    };
    out.census_search_p95_by_kind_ms = Object.fromEntries(Object.entries(byKind).map(([k, v]) => [k, round(pct(v, 95))]));
    log(`census search: ${searchMs.length} keystrokes, p50 ${out.census_search_p50_ms} p99 ${out.census_search_p99_ms} ms`);
    // Where the memory goes: after login, and after the census searches (no chart opened yet).
    await sleep(CFG.settleMs);
    out.memory_after_census = await appTreePss(app.driverPid);

    // --- Chart opens: a different patient each time, found by MRN, opened by clicking its row.
    const targets = picks.slice(queries.length, queries.length + CFG.opens);
    while (targets.length < CFG.opens) targets.push(picks[targets.length % picks.length]);
    const openMs = [];
    const backendMs = [];
    const renderMs = [];
    const firstAfterReload = [];
    const returnMs = [];
    const lockCycleMs = [];
    const series = [];
    let fresh = true;
    let opened = 0;
    const openDeadline = CFG.maxOpenMinutes ? Date.now() + CFG.maxOpenMinutes * 60_000 : Infinity;
    try {
      for (let i = 1; i <= CFG.opens; i++) {
        const { mrn } = targets[i - 1];
        if (Date.now() > openDeadline && i > CFG.memAt) throw new Error(`--max-open-minutes ${CFG.maxOpenMinutes} reached`);
        const back = Date.now();
        if (i > 1) {
          await (await displayed(app.session, testIdCss("nav-census"))).click();
        }
        await poll("the census search field", () => displayed(app.session, testIdCss("census-search")), { timeoutMs: 30_000 });
        // The MRN goes in as one input event (typing was timed above); the census reloads meanwhile.
        await app.session.execute(
          `const el = document.querySelector('[data-testid="census-search"]');
           el.value = arguments[0];
           el.dispatchEvent(new Event("input", { bubbles: true }));
           return true;`,
          [mrn],
        );
        // The row's name button (what a user clicks; the row's own click handler does the same).
        const rowCss = `[data-testid="census-row"][data-mrn="${mrn}"]`;
        const row = await poll(`the census row of ${mrn}`, () => displayed(app.session, `${rowCss} [data-testid="census-open"], ${rowCss} button`), {
          timeoutMs: 30_000,
          intervalMs: 10,
        });
        if (i > 1 && !fresh) returnMs.push(Date.now() - back);
        await app.session.execute(
          `for (const n of ["chart-open", "chart-open:backend", "chart-open:render"]) performance.clearMeasures(n); return true;`,
        );
        await row.click();
        const d = await nextMeasure(app.session, "chart-open", `the chart of ${mrn} to be painted`);
        openMs.push(d);
        opened = i;
        backendMs.push(...(await takeMeasures(app.session, "chart-open:backend")));
        renderMs.push(...(await takeMeasures(app.session, "chart-open:render")));
        if (fresh) firstAfterReload.push(d);
        fresh = false;
        if (i % 50 === 0 || i === CFG.opens) log(`chart opens: ${i}/${CFG.opens} (last ${round(d)} ms, p99 so far ${round(pct(openMs, 99))} ms)`);

        if (i === CFG.memAt || i === CFG.opens || i % CFG.lockEvery === 0) {
          const point = i === CFG.memAt || i === CFG.opens;
          if (point) await sleep(CFG.settleMs);
          const m = await appTreePss(app.driverPid);
          series.push({ opens: i, pss_mib: m.pss_mib, uss_mib: m.uss_mib });
          if (i === CFG.memAt) out.memory_after_first = { opens: i, ...m };
          if (i === CFG.opens) out.memory_after_all = { opens: i, ...m };
        }
        if (i % CFG.lockEvery === 0 && i < CFG.opens) {
          const tl = Date.now();
          await lockAndUnlock(app, CFG.patients);
          lockCycleMs.push(Date.now() - tl);
          fresh = true;
        }
      }
    } catch (e) {
      // Keep what was measured: a failure late in a long run should not lose it.
      log(`chart opens stopped after ${opened}: ${e.message}`);
      out.error = `chart opens stopped after ${opened}: ${e.message.split("\n")[0]}`;
      if (!out.memory_after_all && opened > CFG.memAt) {
        await sleep(CFG.settleMs);
        const m = await appTreePss(app.driverPid).catch(() => ({}));
        out.memory_after_all = { opens: opened, ...m };
        series.push({ opens: opened, pss_mib: m.pss_mib, uss_mib: m.uss_mib });
      }
    }
    Object.assign(out, summary("chart_open", openMs));
    out.census_return_p50_ms = round(pct(returnMs, 50));
    out.census_return_p95_ms = round(pct(returnMs, 95));
    out.lock_unlock_cycle_p50_ms = round(pct(lockCycleMs, 50));
    out.chart_open_backend_p50_ms = round(pct(backendMs, 50));
    out.chart_open_backend_p99_ms = round(pct(backendMs, 99));
    out.chart_open_render_p50_ms = round(pct(renderMs, 50));
    out.chart_open_render_p99_ms = round(pct(renderMs, 99));
    out.chart_open_distinct_patients = new Set(targets.slice(0, opened).map((r) => r.mrn)).size;
    out.chart_open_first_after_reload_p50_ms = round(median(firstAfterReload));
    out.chart_open_lock_cycles = lockCycleMs.length;

    out.memory_after_first_pss_mib = out.memory_after_first?.pss_mib ?? null;
    out.memory_after_all_pss_mib = out.memory_after_all?.pss_mib ?? null;
    out.memory_ratio = round(out.memory_after_first_pss_mib / out.memory_baseline.pss_mib, 2);
    out.memory_growth_ratio = round(out.memory_after_all_pss_mib / out.memory_after_first_pss_mib, 2);
    // The same ratios on private memory (USS), which other processes mapping the same libraries
    // (another WebKit app, a parallel test run) cannot move.
    out.memory_ratio_uss = round(out.memory_after_first?.uss_mib / baseline.uss_mib, 2);
    out.memory_growth_ratio_uss = round(out.memory_after_all?.uss_mib / out.memory_after_first?.uss_mib, 2);
    out.memory_series = series;
    out.machine.loadavg_end = os.loadavg().map((x) => round(x, 2));
    out.total_s = round((Date.now() - started) / 1000);
    return out;
  } finally {
    await app?.stop();
    await backend?.stop();
    stopA11yBus(a11y);
    await tmp.cleanup();
  }
}

const KEYS = [
  ["cold_start_to_login_ms", "cold_start_to_login_ms"],
  ["chart_open_p99_ms", "chart_open_p99_ms"],
  ["census_search_p99_ms", "census_search_p99_ms"],
  ["memory_ratio", "memory_ratio"],
  ["memory_growth_ratio", "memory_growth_ratio"],
];

main().then(
  async (out) => {
    if (OUT_FILE) await writeFile(OUT_FILE, `${JSON.stringify(out, null, 2)}\n`);
    if (JSON_OUT) {
      console.log(JSON.stringify(out, null, 2));
    } else {
      for (const [k] of KEYS) console.log(`${k.padEnd(26)} ${String(out[k]).padStart(8)}   target ${TARGETS[k]}`);
      console.log(`chart_open p50/p95 ${out.chart_open_p50_ms}/${out.chart_open_p95_ms} ms over ${out.chart_open_count}`);
      console.log(`census_search p50/p95 ${out.census_search_p50_ms}/${out.census_search_p95_ms} ms over ${out.census_search_count} keystrokes`);
    }
    process.exit(0);
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
