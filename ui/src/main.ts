// Entry point: mounts the app. Loaded as an external module (CSP: script-src 'self').
// In `vite --mode mock` a fake backend is installed first; the condition is a build-time
// constant, so production builds drop the import and never contain the mock.
import { mount } from "svelte";
import "./app.css";
import App from "./App.svelte";

const target = document.getElementById("app");
if (!target) {
  throw new Error("missing #app mount point");
}

const ready: Promise<unknown> = import.meta.env.MODE === "mock" ? import("./dev/mock").then((m) => m.install()) : Promise.resolve();

void ready.then(() => mount(App, { target }));
