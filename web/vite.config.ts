import { defineConfig } from "vitest/config";

// Preact through the JSX transform alone (tsconfig's jsxImportSource): no framework plugin needed.
export default defineConfig({
  build: {
    target: "es2022",
    // Hashed names under assets/: Envoy serves them with a year-long immutable cache.
    assetsDir: "assets",
    // No inline module-preload polyfill script: the CSP allows no inline scripts.
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    // `npm run dev`: the API through a running scripts/run.sh (Envoy on 8080), same origin as here.
    proxy: { "/wallwhale.v1.": "http://127.0.0.1:8080", "/v1/": "http://127.0.0.1:8080" },
  },
  test: { include: ["test/**/*.test.ts"] },
});
