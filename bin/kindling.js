#!/usr/bin/env node
// kindling CLI entry point; the implementation is src/cli/cli.ts (compiled to dist/). The build also
// writes dist/cli/cli.bundle.js (the same code as one module, faster to load); src/main/bundle.ts
// decides which one runs.
const notBuilt = (e) => {
  console.error(`kindling: not built (${e.code ?? e.message}); run \`npm install\` in the kindling directory first`);
  process.exit(1);
};
import('../dist/main/bundle.js').then(
  ({ freshBundle }) => import(freshBundle(new URL('../dist/cli/cli.js', import.meta.url)).href).then((m) => m.main(process.argv.slice(2)), notBuilt),
  notBuilt,
);
