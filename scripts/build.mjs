#!/usr/bin/env node
// Build steps run by `npm install` (addon, then ts + guests) and by `npm test` (ts + guests).
// Usage: node scripts/build.mjs [addon] [ts] [guests]
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const steps = process.argv.slice(2);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.error) {
    console.error(`kindling build: cannot run ${cmd}: ${r.error.message}`);
    process.exit(1);
  }
  if (r.status !== 0) {
    console.error(`kindling build: ${cmd} ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}

function newestMtime(dir, filter) {
  let t = 0;
  for (const f of readdirSync(dir)) {
    if (!filter(f)) continue;
    t = Math.max(t, statSync(join(dir, f)).mtimeMs);
  }
  return t;
}

// Node's own headers: /usr/include/node for Debian/NodeSource installs, <prefix>/include/node otherwise.
// Passing --nodedir keeps node-gyp from downloading headers (the machine may have no route to nodejs.org).
function localNodeDir() {
  const candidates = [resolve(dirname(process.execPath), '..'), '/usr', '/usr/local'];
  if (process.env.npm_config_nodedir) candidates.unshift(process.env.npm_config_nodedir);
  for (const c of candidates) if (existsSync(join(c, 'include', 'node', 'node_api.h'))) return c;
  return undefined;
}

function buildAddon() {
  const out = join(root, 'native', 'build', 'Release', 'kindling.node');
  const src = join(root, 'native');
  if (existsSync(out) && statSync(out).mtimeMs > newestMtime(src, (f) => /\.(cc|h|gyp)$/.test(f))) {
    console.log('kindling build: addon is up to date');
    return;
  }
  const nodedir = localNodeDir();
  if (!nodedir) {
    console.error('kindling build: Node headers not found (looked for include/node/node_api.h); install nodejs headers');
    process.exit(1);
  }
  const gyp = require.resolve('node-gyp/bin/node-gyp.js');
  run(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=max'], { cwd: src });
}

function buildTs() {
  const tsc = require.resolve('typescript/bin/tsc');
  run(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')]);
}

function buildGuests() {
  run('make', ['-s', '-C', join(root, 'test', 'guests'), `OUT=${join(root, 'build', 'guests')}`]);
}

for (const s of steps) {
  if (s === 'addon') buildAddon();
  else if (s === 'ts') buildTs();
  else if (s === 'guests') buildGuests();
  else {
    console.error(`kindling build: unknown step ${s}`);
    process.exit(2);
  }
}
