#!/usr/bin/env node
// Build steps run by `npm install` (addon, then ts + guests) and by `npm test` (ts + guests).
// guests also builds the tools that ship with them (the exec agent, kindling-jail-exec).
// Usage: node scripts/build.mjs [addon] [ts] [guests] [test-tools]
//   test-tools: installs the Debian packages the tests need when missing (user-mode-linux, qemu-utils,
//   qemu-system-common, e2fsprogs; as root with apt: scripts/test-tools.mjs), and puts iasl (Debian's
//   acpica-tools, used by the ACPI table checks) in build/tools/bin when it is not installed, from
//   Debian's archive with apt-get download (no system install).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

// node-gyp: the dev dependency in a checkout; installed as another project's dependency (no dev
// dependencies), the copy npm itself ships, which npm names in npm_config_node_gyp for lifecycle scripts.
function nodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const bundled = process.env.npm_config_node_gyp;
    if (bundled && existsSync(bundled)) return bundled;
    console.error('kindling build: node-gyp not found (neither the dev dependency nor npm\'s own); run the build through npm install');
    process.exit(1);
  }
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
  run(process.execPath, [nodeGyp(), 'rebuild', `--nodedir=${nodedir}`, '--jobs=max'], { cwd: src });
}

// A packed kindling (npm pack, a tarball or git dependency) ships dist/ (and its start-up bundles),
// built by prepack, and no TypeScript sources: the ts step has nothing to do there.
function packedDist() {
  return !existsSync(join(root, 'src')) && existsSync(join(root, 'dist', 'main', 'index.js'));
}

function buildTs() {
  const tsc = require.resolve('typescript/bin/tsc');
  run(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')]);
}

// Start-up bundles: the CLI and each worker entry as one ES module next to its entry point (same
// directory depth, so every import.meta.url-relative path still resolves). Loading one bundle instead
// of ~40 modules saves ~15 ms on each of the main thread and every worker. Which file runs is
// decided by src/main/bundle.ts: a bundle only when it is at least as new as its entry module.
const BUNDLES = [
  ['dist/cli/cli.js', 'dist/cli/cli.bundle.js'],
  ['dist/vcpu-worker/worker.js', 'dist/vcpu-worker/worker.bundle.js'],
  ['dist/io-worker/worker.js', 'dist/io-worker/worker.bundle.js'],
  // `kindling serve`'s API server with TypeBox inlined (a real require() in the module, for any
  // CommonJS dependency it bundles).
  ['dist/api-server/index.js', 'dist/api-server/index.bundle.js', { banner: { js: "import { createRequire as __kindlingRequire } from 'node:module'; const require = __kindlingRequire(import.meta.url);" } }],
];

async function buildBundles() {
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch {
    console.log('kindling build: esbuild is not installed; running from the unbundled modules (slower start-up)');
    for (const [, out] of BUNDLES) rmSync(join(root, out), { force: true });
    return;
  }
  for (const [entry, out, extra] of BUNDLES) {
    await esbuild.build({
      ...extra,
      entryPoints: [join(root, entry)],
      outfile: join(root, out),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      // pino is required lazily (src/main/log.ts) and stays a normal dependency.
      external: ['pino'],
      logLevel: 'warning',
    });
  }
}

function buildGuests() {
  run('make', ['-s', '-C', join(root, 'test', 'guests'), `OUT=${join(root, 'build', 'guests')}`]);
  buildAgent();
  buildJailExec();
}

// `kindling jail`'s namespace/pivot_root/credential step (native/jail/kindling-jail-exec.c →
// build/tools/kindling-jail-exec): a separate program because a multi-threaded Node process cannot
// unshare its mount namespace or change every thread's credentials.
function buildJailExec() {
  const src = join(root, 'native', 'jail', 'kindling-jail-exec.c');
  const out = join(root, 'build', 'tools', 'kindling-jail-exec');
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return;
  mkdirSync(dirname(out), { recursive: true });
  run('gcc', ['-O2', '-Wall', '-Wextra', '-o', out, src]);
}

// The exec agent for the default guest's initramfs (guest/agent/agent.c → build/guests/kindling-agent),
// static because the guest has no shared libc. Without gcc's static libc (Debian: libc6-dev) the
// default-guest builder reports the failure when it needs the agent.
function buildAgent() {
  const src = join(root, 'guest', 'agent', 'agent.c');
  const out = join(root, 'build', 'guests', 'kindling-agent');
  if (!existsSync(src)) return;
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return;
  mkdirSync(dirname(out), { recursive: true });
  const r = spawnSync('gcc', ['-static', '-Os', '-s', '-Wall', '-Wextra', '-o', out, src], { stdio: 'inherit', cwd: root });
  if (r.error || r.status !== 0) console.error(`kindling build: the exec agent (guest/agent/agent.c) did not build: ${r.error ? r.error.message : `gcc exit ${r.status}`}`);
}

function onPath(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * iasl for test/unit/acpi.test.ts, with the default-guest builder's apt helpers (so it needs the
 * `ts` step first). Best effort: without it those checks are skipped, loudly.
 */
async function fetchTestTools() {
  const dest = join(root, 'build', 'tools', 'bin', 'iasl');
  if (onPath('iasl') || existsSync(dest)) return;
  const skipped = (why) => console.log(`kindling build: no iasl (${why}); the ACPI disassembly checks will be skipped`);
  let apt;
  try {
    apt = await import(pathToFileURL(join(root, 'dist', 'guest-image', 'apt.js')).href);
  } catch {
    return skipped('run the ts step first: it fetches iasl with dist/guest-image/apt.js');
  }
  const tmp = mkdtempSync(join(tmpdir(), 'kindling-tools-'));
  try {
    try {
      await apt.aptDownload('acpica-tools', tmp, 'acpica-tools');
    } catch (e) {
      // Fresh machines may have no package lists yet (the guest builder retries the same way).
      if (!apt.isRoot() || !apt.LISTS_MISSING.test(e.stderr ?? e.message)) throw e;
      await apt.aptUpdate();
      await apt.aptDownload('acpica-tools', tmp, 'acpica-tools');
    }
    const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
    await apt.debExtract(join(tmp, deb), join(tmp, 'x'));
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(join(tmp, 'x', 'usr', 'bin', 'iasl'), dest);
    console.log(`kindling build: iasl from ${deb} → build/tools/bin/iasl (for the ACPI table checks)`);
  } catch (e) {
    skipped(e.message);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

for (const s of steps) {
  if (s === 'addon') buildAddon();
  else if (s === 'ts') {
    if (packedDist()) console.log('kindling build: prebuilt dist/ (packed package), nothing to compile');
    else {
      buildTs();
      await buildBundles();
    }
  }
  else if (s === 'guests') buildGuests();
  else if (s === 'test-tools') {
    const t0 = performance.now();
    const { installTestPackages } = await import('./test-tools.mjs');
    installTestPackages();
    await fetchTestTools();
    const secs = (performance.now() - t0) / 1000;
    if (secs >= 1) console.log(`kindling build: test-tools step took ${secs.toFixed(1)} s`);
  }
  else {
    console.error(`kindling build: unknown step ${s}`);
    process.exit(2);
  }
}
