#!/usr/bin/env node
// kindling CLI entry point; the implementation is src/main/cli.ts (compiled to dist/).
import('../dist/main/cli.js').then(
  (m) => m.main(process.argv.slice(2)),
  (e) => {
    console.error(`kindling: not built (${e.code ?? e.message}); run \`npm install\` in the kindling directory first`);
    process.exit(1);
  },
);
