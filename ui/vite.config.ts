// Vite config for the Chartroom UI. `npm run build` writes ui/dist, which tauri.conf.json embeds.
// `npm test` runs Vitest with the same config (pure-logic tests in Node; component tests opt into
// jsdom with a `@vitest-environment jsdom` comment).
/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

export default defineConfig(({ mode }) => ({
  plugins: [svelte()],
  // Component tests mount Svelte's client runtime, not the server renderer.
  resolve: mode === "test" ? { conditions: ["browser"] } : undefined,
  // Keep Tauri's/cargo's output visible in the same terminal.
  clearScreen: false,
  server: {
    port: 5173,
    strictPort: true,
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Never inline assets as data: URIs; everything is a same-origin file the CSP allows.
    assetsInlineLimit: 0,
    // Debuggable in dev; release packaging (later issue) may revisit.
    sourcemap: false,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
}));
