// A tiny W3C WebDriver client for the end-to-end tests: just the commands the tests use, over
// Node's built-in `fetch`, so the suite has no npm dependencies.
//
// Spec: https://www.w3.org/TR/webdriver2/. tauri-driver proxies these requests to WebKitWebDriver,
// which drives the app's WebKitGTK webview.

import { writeFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";

/** The W3C element reference key (an element is returned as `{ [ELEMENT_KEY]: id }`). */
export const ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf";

/** Key codes for `Session.pressKeys` (W3C WebDriver "normalised key values"). */
export const Key = Object.freeze({
  NULL: "\uE000",
  BACKSPACE: "\uE003",
  TAB: "\uE004",
  ENTER: "\uE007",
  SHIFT: "\uE008",
  CONTROL: "\uE009",
  ALT: "\uE00A",
  ESCAPE: "\uE00C",
});

/** An error answered by the WebDriver server (`error` is the W3C error code, e.g. "no such element"). */
export class WebDriverError extends Error {
  constructor(method, path, status, error, message) {
    super(`WebDriver ${method} ${path} -> ${status} ${error}: ${message}`);
    this.name = "WebDriverError";
    this.status = status;
    this.error = error;
  }
}

/** Thrown by `waitUntil` when the condition did not hold in time; the message names what was awaited. */
export class TimeoutError extends Error {
  constructor(what, timeoutMs, lastError) {
    const cause = lastError ? ` (last error: ${lastError.message})` : "";
    super(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    this.name = "TimeoutError";
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `condition` (sync or async) until it returns a truthy value, which is returned.
 * Errors thrown by the condition count as "not yet" (an element may not exist yet); the last one
 * is quoted in the timeout message.
 */
export async function waitUntil(what, condition, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) throw new TimeoutError(what, timeoutMs, lastError);
    // 0: back to back (a timing loop measures to the millisecond).
    if (intervalMs > 0) await sleep(intervalMs);
  }
}

/**
 * How long one WebDriver command may take before it is abandoned. A hung command (WebKitWebDriver
 * waiting on a renderer that never answers) must fail the test, not stall it for undici's default
 * five minutes. Override with CHARTROOM_WEBDRIVER_TIMEOUT_MS.
 */
export const COMMAND_TIMEOUT_MS = Number(process.env.CHARTROOM_WEBDRIVER_TIMEOUT_MS ?? 60_000);

/** Low-level: one WebDriver HTTP command against `baseUrl`; returns the `value` of the answer. */
async function command(baseUrl, method, path, body, { timeoutMs = COMMAND_TIMEOUT_MS } = {}) {
  let res;
  let text;
  try {
    res = await fetch(baseUrl + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json; charset=utf-8" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
  } catch (e) {
    const why = e.name === "TimeoutError" ? `no answer within ${timeoutMs} ms` : (e.cause?.message ?? e.message);
    throw new WebDriverError(method, path, 0, "transport error", why);
  }
  let json;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    throw new WebDriverError(method, path, res.status, "invalid response", text.slice(0, 500));
  }
  const value = json.value;
  if (!res.ok || (value && typeof value === "object" && typeof value.error === "string")) {
    throw new WebDriverError(method, path, res.status, value?.error ?? "unknown error", value?.message ?? text.slice(0, 500));
  }
  return value;
}

/** Waits until a WebDriver server answers `GET /status` (tauri-driver starts in a moment). */
export async function waitForServer(baseUrl, { timeoutMs = 15_000 } = {}) {
  await waitUntil(
    `the WebDriver server at ${baseUrl} to answer /status`,
    async () => {
      const res = await fetch(baseUrl + "/status");
      return res.ok;
    },
    { timeoutMs, intervalMs: 100 },
  );
}

/** One element of the page (a W3C web element reference). */
export class Element {
  constructor(session, id, description) {
    this.session = session;
    this.id = id;
    this.description = description;
  }

  #cmd(method, sub, body) {
    return this.session.cmd(method, `/element/${this.id}${sub}`, body);
  }

  click() {
    return this.#cmd("POST", "/click", {});
  }

  /** Types `text` into the element (the element is focused first by the driver). */
  sendKeys(text) {
    return this.#cmd("POST", "/value", { text: String(text) });
  }

  clear() {
    return this.#cmd("POST", "/clear", {});
  }

  /** The rendered (visible) text. */
  text() {
    return this.#cmd("GET", "/text");
  }

  attribute(name) {
    return this.#cmd("GET", `/attribute/${encodeURIComponent(name)}`);
  }

  /** A DOM property, e.g. `value` of an input. */
  property(name) {
    return this.#cmd("GET", `/property/${encodeURIComponent(name)}`);
  }

  tagName() {
    return this.#cmd("GET", "/name");
  }

  isDisplayed() {
    return this.#cmd("GET", "/displayed");
  }

  isEnabled() {
    return this.#cmd("GET", "/enabled");
  }

  find(css) {
    return this.session.find(css, this);
  }

  findAll(css) {
    return this.session.findAll(css, this);
  }

  async screenshot(file) {
    const b64 = await this.#cmd("GET", "/screenshot");
    await savePng(file, b64);
    return file;
  }
}

async function savePng(file, b64) {
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, Buffer.from(b64, "base64"));
}

/** A WebDriver session. Create with `Session.create(baseUrl, capabilities)`. */
export class Session {
  constructor(baseUrl, id, capabilities) {
    this.baseUrl = baseUrl;
    this.id = id;
    this.capabilities = capabilities;
  }

  /** `POST /session` with `{ capabilities: { alwaysMatch } }`. */
  static async create(baseUrl, alwaysMatch) {
    const value = await command(baseUrl, "POST", "/session", { capabilities: { alwaysMatch } });
    return new Session(baseUrl, value.sessionId, value.capabilities);
  }

  cmd(method, sub, body, opts) {
    return command(this.baseUrl, method, `/session/${this.id}${sub}`, body, opts);
  }

  /** Ends the session (the driver closes the app). Never throws: it runs during teardown. */
  async delete() {
    try {
      await this.cmd("DELETE", "");
    } catch {
      // The app may already be gone; teardown kills the driver anyway.
    }
  }

  title() {
    return this.cmd("GET", "/title");
  }

  pageSource() {
    return this.cmd("GET", "/source");
  }

  url() {
    return this.cmd("GET", "/url");
  }

  /** Runs `script` (a function body: use `return`) synchronously in the page with `args`. */
  execute(script, args = []) {
    return this.cmd("POST", "/execute/sync", { script, args });
  }

  /**
   * Runs `script` asynchronously: it gets a callback as its last argument and must call it with
   * the result (`const done = arguments[arguments.length - 1]`).
   */
  executeAsync(script, args = []) {
    return this.cmd("POST", "/execute/async", { script, args });
  }

  /** Finds the first element matching a CSS selector (under `parent` if given); throws if none. */
  async find(css, parent) {
    const sub = parent ? `/element/${parent.id}/element` : "/element";
    const value = await this.cmd("POST", sub, { using: "css selector", value: css });
    return new Element(this, value[ELEMENT_KEY], css);
  }

  /** All elements matching a CSS selector (possibly none). */
  async findAll(css, parent) {
    const sub = parent ? `/element/${parent.id}/elements` : "/elements";
    const value = await this.cmd("POST", sub, { using: "css selector", value: css });
    return value.map((v) => new Element(this, v[ELEMENT_KEY], css));
  }

  /** Waits until an element matching `css` exists (and, by default, is displayed); returns it. */
  async waitFor(css, { timeoutMs = 10_000, displayed = true, what } = {}) {
    return waitUntil(
      what ?? `an element matching ${JSON.stringify(css)}${displayed ? " to be displayed" : ""}`,
      async () => {
        const els = await this.findAll(css);
        for (const el of els) {
          if (!displayed || (await el.isDisplayed())) return el;
        }
        return null;
      },
      { timeoutMs },
    );
  }

  /** Waits until no element matching `css` is displayed. */
  async waitGone(css, { timeoutMs = 10_000, what } = {}) {
    await waitUntil(
      what ?? `no element matching ${JSON.stringify(css)} to be displayed`,
      async () => {
        for (const el of await this.findAll(css)) {
          if (await el.isDisplayed()) return false;
        }
        return true;
      },
      { timeoutMs },
    );
  }

  /**
   * Real keyboard input to whatever has focus (W3C actions): `pressKeys(Key.CONTROL, "l")` presses
   * the keys in order and releases them in reverse, like a person pressing a shortcut. The page sees
   * trusted key events (unlike `dispatchEvent`), so this also counts as user activity.
   */
  async pressKeys(...keys) {
    const down = keys.map((value) => ({ type: "keyDown", value }));
    const up = [...keys].reverse().map((value) => ({ type: "keyUp", value }));
    await this.cmd("POST", "/actions", { actions: [{ type: "key", id: "keyboard", actions: [...down, ...up] }] });
    await this.cmd("DELETE", "/actions");
  }

  /** Saves a PNG screenshot of the window's viewport to `file`. */
  async screenshot(file) {
    const b64 = await this.cmd("GET", "/screenshot");
    await savePng(file, b64);
    return file;
  }
}
