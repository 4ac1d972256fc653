// Test prerequisites from Debian packages, installed by `node scripts/build.mjs test-tools` (run by
// `npm test`) so that a fresh Debian machine passes `npm install && npm test` (CI: `.ci/run`, as root,
// no stdin).
//
//   user-mode-linux     /usr/bin/linux.uml and its modules: test/uml boots Linux's own virtio
//                       drivers against kindling's vhost-user devices (no KVM needed)
//   qemu-utils          qemu-io, qemu-img: the image-lock tests; qemu-img for test images
//   qemu-system-common  qemu-storage-daemon: the peer vhost-user-blk backend (test/uml, bench:vhost-user)
//   qemu-system-x86     qemu-system-x86_64 (TCG here): QEMU as a vhost-user frontend of kindling's devices
//   e2fsprogs           mkfs.ext4, fsck.ext4, debugfs: the UML blk test makes and checks an ext4 image
//   iproute2            ip: the net tests' own network namespaces, taps and veths
//   iputils-ping        ping: the net tests (host → guest and, over hostfs, guest → host)
//   passt               the rootless network backend (--net passt) the UML net test drives
//   busybox             its udhcpc is the DHCP client the UML net test's guest leases from passt with
//
// Rules: a package is installed only when dpkg says it is not installed, only as root with apt-get
// on PATH, non-interactively (DEBIAN_FRONTEND=noninteractive, stdin closed, -y); when apt cannot find
// a package it runs `apt-get update` once and retries. Nothing here fails the build: on any failure
// (no apt, not root, no network) it prints one line and the tests that need the tool skip loudly.
// Output: one line per install (packages, seconds), or one line saying why nothing was installed.
import { spawnSync } from 'node:child_process';

/** Package → a file it installs (checked as well as dpkg's status, so a tool from elsewhere counts). */
export const TEST_PACKAGES = [
  { pkg: 'user-mode-linux', file: '/usr/bin/linux.uml' },
  { pkg: 'qemu-utils', file: '/usr/bin/qemu-io' },
  { pkg: 'qemu-system-common', file: '/usr/bin/qemu-storage-daemon' },
  { pkg: 'qemu-system-x86', file: '/usr/bin/qemu-system-x86_64' },
  { pkg: 'e2fsprogs', file: '/usr/sbin/debugfs' },
  { pkg: 'iproute2', file: '/usr/sbin/ip' },
  { pkg: 'iputils-ping', file: '/usr/bin/ping' },
  { pkg: 'passt', file: '/usr/bin/passt' },
  { pkg: 'busybox', file: '/usr/bin/busybox' },
];

const APT_ENV = { ...process.env, LC_ALL: 'C', LANG: 'C', DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a' };
// apt-get's own network timeouts bound each fetch; this bounds the whole run (a stuck mirror).
const APT_TIMEOUT_MS = 15 * 60_000;
const LISTS_MISSING = /Unable to locate package|has no installation candidate|Can't select candidate|No packages found|404\s+Not Found|Failed to fetch/i;

function sh(cmd, args, timeout) {
  const r = spawnSync(cmd, args, { env: APT_ENV, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout });
  return { error: r.error, code: r.status ?? 1, out: `${r.stdout ?? ''}\n${r.stderr ?? ''}` };
}

function lastError(out) {
  const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
  const errs = lines.filter((l) => /^E: /.test(l));
  return (errs.length ? errs[errs.length - 1] : lines[lines.length - 1]) ?? '(no output)';
}

function installed(pkg) {
  const r = sh('dpkg-query', ['-W', '-f=${Status}', pkg]);
  return r.code === 0 && /install ok installed/.test(r.out);
}

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/**
 * Install the missing test packages. `packages` defaults to TEST_PACKAGES; `log` receives each line.
 * Returns the packages still missing afterwards (never throws).
 */
export function installTestPackages({ packages = TEST_PACKAGES, log = (l) => console.log(l) } = {}) {
  const t0 = performance.now();
  const missing = packages.filter(({ pkg, file }) => !(installed(pkg) || (file && spawnSync('test', ['-x', file]).status === 0)));
  if (missing.length === 0) return [];
  const names = missing.map((m) => m.pkg);
  const skip = (why) => {
    log(`kindling build: not installing ${names.join(' ')} (${why}); the tests that need them will be skipped`);
    return names;
  };
  if (!onPath('apt-get') || !onPath('dpkg-query')) return skip('no apt-get/dpkg: not a Debian system');
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return skip('not root: run `apt-get install ' + names.join(' ') + '` as root');
  const install = () => sh('apt-get', ['-q', '-y', '-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold', '--no-install-recommends', 'install', ...names], APT_TIMEOUT_MS);
  let r = install();
  let updated = false;
  if (r.code !== 0 && !r.error && LISTS_MISSING.test(r.out)) {
    const u = sh('apt-get', ['-q', 'update'], APT_TIMEOUT_MS);
    updated = true;
    if (u.code !== 0) return skip(`apt-get update failed: ${u.error ? u.error.message : lastError(u.out)}`);
    r = install();
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (r.error) return skip(`apt-get install: ${r.error.message} after ${secs} s`);
  if (r.code !== 0) return skip(`apt-get install failed after ${secs} s: ${lastError(r.out)}`);
  log(`kindling build: installed ${names.join(' ')} with apt-get${updated ? ' (after apt-get update)' : ''} in ${secs} s (test prerequisites)`);
  return packages.filter(({ pkg }) => !installed(pkg)).map((m) => m.pkg);
}

// Run directly: node scripts/test-tools.mjs
if (import.meta.url === `file://${process.argv[1]}`) installTestPackages();
