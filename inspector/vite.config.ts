// The inspector's build (docs/INSPECTOR.md): one page, its hashed assets under /inspect/assets/,
// written into the Python package (crdt_state/inspector_dist/, not committed) that serves it.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/inspect/",
  publicDir: false,
  build: {
    outDir: fileURLToPath(new URL("../crdt_state/inspector_dist", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    assetsInlineLimit: 0, // no data: URLs (the page's CSP allows this origin only)
    target: "es2022",
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
});
