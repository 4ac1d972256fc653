// Start-up bundles (scripts/build.mjs writes `<entry>.bundle.js` beside each entry point): which file
// to load for an entry module. Used by bin/kindling.js for the CLI and by ./workers.ts for the
// worker entry points. Imports nothing but node:fs, so loading it costs next to nothing.
import { statSync } from 'node:fs';

/**
 * `module`'s bundle when that exists and is at least as new as the module, i.e. was built from this
 * code; otherwise `module` itself (also when KINDLING_NO_BUNDLE is set: stack traces then name the
 * source files).
 */
export function freshBundle(module: URL): URL {
  const bundle = new URL(module.href.replace(/\.js$/, '.bundle.js'));
  if (process.env.KINDLING_NO_BUNDLE || bundle.href === module.href) return module;
  try {
    if (statSync(bundle).mtimeMs >= statSync(module).mtimeMs) return bundle;
  } catch {
    // no bundle (or no module: then loading it reports the missing file)
  }
  return module;
}
