#!/usr/bin/env node
// kindling CLI entry point; the implementation is src/main/cli.ts (compiled to dist/). The build also
// writes dist/main/cli.bundle.js (the same code as one module, faster to load); it is used when it is
// at least as new as dist/main/cli.js (KINDLING_NO_BUNDLE=1: never).
import { statSync } from 'node:fs';

const mtime = (rel) => {
  try {
    return statSync(new URL(rel, import.meta.url)).mtimeMs;
  } catch {
    return -1;
  }
};
// KINDLING_NO_BUNDLE=1 runs the separate modules (stack traces then name the source files).
const bundled = !process.env.KINDLING_NO_BUNDLE && mtime('../dist/main/cli.js') >= 0 && mtime('../dist/main/cli.bundle.js') >= mtime('../dist/main/cli.js');
const entry = bundled ? '../dist/main/cli.bundle.js' : '../dist/main/cli.js';
import(entry).then(
  (m) => m.main(process.argv.slice(2)),
  (e) => {
    console.error(`kindling: not built (${e.code ?? e.message}); run \`npm install\` in the kindling directory first`);
    process.exit(1);
  },
);
