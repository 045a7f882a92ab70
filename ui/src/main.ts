// Entry point: mounts the single-screen app. Loaded as an external module (CSP: script-src 'self').
import { mount } from "svelte";
import "./app.css";
import App from "./App.svelte";

const target = document.getElementById("app");
if (!target) {
  throw new Error("missing #app mount point");
}

export default mount(App, { target });
