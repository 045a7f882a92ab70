// Svelte config: TypeScript in components via Vite's preprocessor. CSS stays external (the Svelte 5
// default with vite-plugin-svelte), which the strict CSP (`style-src 'self'`) requires.
import { vitePreprocess } from "@sveltejs/vite-plugin-svelte";

export default {
  preprocess: vitePreprocess(),
};
