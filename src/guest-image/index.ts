// The default guest: Debian's linux-image-cloud-amd64 kernel and a busybox-static initramfs with the
// virtio modules, built once into a cache directory (~/.cache/kindling/guest, or $KINDLING_HOME/guest).
//
// Outputs: vmlinuz (the package's bzImage), vmlinux (the ELF inside it, with a PVH note: what
// kindling boots by default), initramfs.cpio.gz, and manifest.json (package versions, sizes and
// sha256 of the outputs). Everything is built in a temp dir inside the cache dir and renamed into
// place; the manifest is written last, so a guest dir with a manifest whose sizes match is complete.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rename, rm, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { aptDownload, aptShow, aptUpdate, debExtract, debInfo, LISTS_MISSING } from './apt.js';
import { extractVmlinux, findPvhEntry } from './bzimage.js';
import { type CpioEntry, writeCpio } from './cpio.js';
import { agentBinary } from './agent-binary.js';
import { exitHelperElf, GUEST_AGENT_PORT, initScript } from './init-script.js';
import { modulesDep, moduleName, parseModinfo, resolveModuleOrder } from './modinfo.js';
import { barProgress, lineProgress, type Progress, silentProgress } from './progress.js';

export { extractVmlinux, findPvhEntry, bzImagePayload } from './bzimage.js';
export { lz4DecompressLegacy, lz4DecompressBlock } from './lz4.js';
export { writeCpio, parseCpio, type CpioEntry, type CpioRecord } from './cpio.js';
export { parseModinfo, resolveModuleOrder, type ModInfo } from './modinfo.js';
export { encodeGuestCommand, decodeGuestCommand, shellQuote, initScript, exitHelperElf, MAX_ENCODED_COMMAND, GUEST_AGENT_PORT } from './init-script.js';

export interface GuestImage {
  /** The uncompressed vmlinux ELF (PVH entry): what kindling boots by default. */
  kernel: string;
  /** The package's bzImage. */
  vmlinuz: string;
  initrd: string;
  dir: string;
  kernelVersion: string;
}

export interface EnsureGuestOptions {
  /** The guest directory itself (default: guestHome()). */
  home?: string;
  /**
   * false: silent. true: a bar on stderr if it is a TTY, else one line per step to `log` (default:
   * stderr). Unset: lines to `log` if given, else as for true.
   */
  progress?: boolean;
  /** Receives one line per step (when no bar is drawn). */
  log?: (line: string) => void;
  /** Re-hash the outputs of an existing build against the manifest instead of only checking sizes. */
  verify?: boolean;
  /** Rebuild even if a complete build exists. */
  force?: boolean;
}

/** Top-level modules; their dependencies are added in load order. */
export const DEFAULT_MODULES = ['virtio_mmio', 'virtio_blk', 'virtio_net', 'virtio_console', 'virtio_rng', 'vmw_vsock_virtio_transport'];
export const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
export const BUSYBOX_PACKAGE = 'busybox-static';
const MANIFEST_FORMAT = 1;
const OUTPUTS = ['vmlinuz', 'vmlinux', 'initramfs.cpio.gz'] as const;
type OutputName = (typeof OUTPUTS)[number];

export interface GuestManifest {
  format: number;
  kernelVersion: string;
  packages: Record<string, string>;
  modules: string[];
  pvhEntry: string;
  sourceDateEpoch: number;
  files: Record<OutputName, { size: number; sha256: string }>;
  /** The exec agent in the initramfs (/bin/kindling-agent) and its vsock port; absent in guests built before it. */
  agent?: { port: number; size: number; sha256: string };
  builtAt: string;
  buildMs: number;
}

/** The default guest directory: $KINDLING_HOME/guest, else ~/.cache/kindling/guest. */
export function guestHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KINDLING_HOME) return join(resolve(env.KINDLING_HOME), 'guest');
  return join(env.HOME || homedir(), '.cache', 'kindling', 'guest');
}

function imageOf(dir: string, kernelVersion: string): GuestImage {
  return {
    kernel: join(dir, 'vmlinux'),
    vmlinuz: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initramfs.cpio.gz'),
    dir,
    kernelVersion,
  };
}

function readManifest(dir: string): GuestManifest | undefined {
  try {
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as GuestManifest;
    if (m.format !== MANIFEST_FORMAT || typeof m.kernelVersion !== 'string' || !m.files) return undefined;
    for (const f of OUTPUTS) if (!m.files[f] || typeof m.files[f].size !== 'number') return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/**
 * The complete build in `home` (the guest directory, default guestHome()), or undefined. Cheap: checks
 * the manifest and that every output exists with the recorded size (no hashing).
 */
export function findBuiltGuest(home: string = guestHome()): GuestImage | undefined {
  const m = readManifest(home);
  if (!m) return undefined;
  for (const f of OUTPUTS) {
    try {
      const st = statSync(join(home, f));
      if (!st.isFile() || st.size !== m.files[f].size) return undefined;
    } catch {
      return undefined;
    }
  }
  return imageOf(home, m.kernelVersion);
}

function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')));
  });
}

async function verifyHashes(dir: string): Promise<boolean> {
  const m = readManifest(dir);
  if (!m) return false;
  for (const f of OUTPUTS) {
    if ((await sha256File(join(dir, f)).catch(() => '')) !== m.files[f].sha256) return false;
  }
  return true;
}

function makeProgress(opts: EnsureGuestOptions, steps: number): Progress {
  if (opts.progress === false) return silentProgress;
  if (opts.progress === true && process.stderr.isTTY) return barProgress(steps, process.stderr);
  if (opts.log) return lineProgress(steps, opts.log);
  if (process.stderr.isTTY) return barProgress(steps, process.stderr);
  return lineProgress(steps, (l) => process.stderr.write(l + '\n'));
}

/**
 * Return the default guest, building it first if `home` holds no complete build. Throws an Error
 * with a one-line message (`kindling guest: …`) when the build fails.
 */
export async function ensureDefaultGuest(opts: EnsureGuestOptions = {}): Promise<GuestImage> {
  const dir = resolve(opts.home ?? guestHome());
  if (!opts.force) {
    const found = findBuiltGuest(dir);
    if (found && (!opts.verify || (await verifyHashes(dir)))) return found;
  }
  const progress = makeProgress(opts, 6);
  try {
    return await build(dir, progress);
  } catch (e) {
    progress.fail();
    const msg = (e as Error).message ?? String(e);
    if (msg.startsWith('kindling guest:')) throw e;
    throw new Error(`kindling guest: ${msg}`);
  }
}

// ---------------------------------------------------------------------------------------------------

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove `.build-<pid>-*` dirs left by builds whose process is gone. */
async function cleanStaleBuilds(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const m = name.match(/^\.build-(\d+)-/);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
      await rm(join(dir, name), { recursive: true, force: true }).catch(() => {});
    }
  }
}

/** apt operation that runs `apt-get update` once and retries when the package lists are missing. */
async function withListsRetry<T>(fn: () => Promise<T>, progress: Progress, state: { updated: boolean }): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const text = (e as { stderr?: string }).stderr ?? (e as Error).message;
    if (state.updated || !LISTS_MISSING.test(text)) throw e;
    progress.note('package lists missing or stale: running apt-get update');
    state.updated = true;
    await aptUpdate();
    return await fn();
  }
}

async function singleDeb(dir: string): Promise<string> {
  const debs = (await readdir(dir)).filter((f) => f.endsWith('.deb'));
  if (debs.length !== 1) throw new Error(`kindling guest: expected one .deb in ${dir}, found ${debs.length}`);
  return join(dir, debs[0]);
}

async function writeDurable(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(root);
  return out;
}

function readModule(path: string): Uint8Array {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const [tool, pkg] = path.endsWith('.ko.xz') ? ['xz', 'xz-utils'] : ['zstd', 'zstd'];
  const r = spawnSync(tool, ['-dcq', path], { maxBuffer: 1 << 28 });
  if (r.error) {
    throw new Error(
      (r.error as NodeJS.ErrnoException).code === 'ENOENT'
        ? `kindling guest: module ${path} is ${tool}-compressed and \`${tool}\` is not installed (apt-get install ${pkg})`
        : `kindling guest: ${tool}: ${r.error.message}`,
    );
  }
  if (r.status !== 0) throw new Error(`kindling guest: ${tool} failed on ${path}: ${r.stderr.toString().trim().split('\n').pop()}`);
  return r.stdout;
}

interface ModuleSet {
  order: string[];
  files: Map<string, { rel: string; data: Uint8Array }>;
  dep: string;
}

/** Resolve DEFAULT_MODULES and their dependencies from an extracted /lib/modules/<kver> tree. */
function collectModules(modRoot: string, kver: string, top: readonly string[]): ModuleSet {
  const index = new Map<string, string>(); // name -> absolute path
  for (const p of listFiles(modRoot)) {
    if (/\.ko(\.(xz|zst|gz))?$/.test(p)) index.set(moduleName(p), p);
  }
  const builtin = new Set<string>();
  if (existsSync(join(modRoot, 'modules.builtin'))) {
    for (const l of readFileSync(join(modRoot, 'modules.builtin'), 'utf8').split('\n')) if (l.trim()) builtin.add(moduleName(l.trim()));
  }
  const data = new Map<string, Uint8Array>();
  const deps = new Map<string, string[]>();
  const depsOf = (name: string): string[] | undefined => {
    if (deps.has(name)) return deps.get(name);
    if (builtin.has(name)) return [];
    const p = index.get(name);
    if (!p) return undefined;
    const ko = readModule(p);
    let info;
    try {
      info = parseModinfo(ko);
    } catch (e) {
      throw new Error(`kindling guest: ${relative(modRoot, p)}: ${(e as Error).message}`);
    }
    const vm = info.vermagic?.split(' ')[0];
    if (vm && vm !== kver) throw new Error(`kindling guest: module ${name} has vermagic ${vm}, kernel is ${kver}`);
    data.set(name, ko);
    deps.set(name, info.depends);
    return info.depends;
  };
  let order: string[];
  try {
    order = resolveModuleOrder(top, depsOf).filter((n) => !builtin.has(n));
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(msg.startsWith('kindling guest:') ? msg : `kindling guest: ${msg} in ${KERNEL_METAPACKAGE}`);
  }
  const files = new Map<string, { rel: string; data: Uint8Array }>();
  for (const n of order) {
    const rel = relative(modRoot, index.get(n)!).replace(/\.(xz|zst|gz)$/, '');
    files.set(n, { rel, data: data.get(n)! });
  }
  const dep = modulesDep(
    order,
    (n) => files.get(n)!.rel,
    (n) => (deps.get(n) ?? []).filter((d) => !builtin.has(d)),
  );
  return { order, files, dep };
}

/** Applet paths (e.g. "bin/sh", "sbin/insmod") from `busybox --list-full`, or just bin/sh if it cannot run here. */
function busyboxApplets(busybox: string): string[] {
  const r = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' });
  const list = r.status === 0 ? r.stdout.split('\n').map((s) => s.trim().replace(/^\/+/, '')).filter(Boolean) : [];
  const set = new Set(list.filter((p) => p !== 'bin/busybox' && p !== 'init' && !p.includes('..')));
  set.add('bin/sh');
  return [...set].sort();
}

function sourceDateEpoch(): number {
  const v = process.env.SOURCE_DATE_EPOCH;
  return v && /^\d+$/.test(v) ? Number(v) : 0;
}

async function build(dir: string, progress: Progress): Promise<GuestImage> {
  const t0 = Date.now();
  mkdirSync(dir, { recursive: true });
  await cleanStaleBuilds(dir);
  const tmp = await mkdtemp(join(dir, `.build-${process.pid}-`));
  try {
    const lists = { updated: false };

    // 1. kernel: resolve the metapackage to the versioned image package, download that.
    progress.step('download kernel', KERNEL_METAPACKAGE);
    const meta = await withListsRetry(() => aptShow(KERNEL_METAPACKAGE), progress, lists);
    const dep = meta.depends.match(/(linux-image-[^\s,(]+)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?/);
    if (!dep) throw new Error(`kindling guest: ${KERNEL_METAPACKAGE} ${meta.version} does not depend on a linux-image package (Depends: ${meta.depends})`);
    const imagePkg = dep[1];
    const imageSpec = dep[2] ? `${imagePkg}=${dep[2]}` : imagePkg;
    const kdl = join(tmp, 'dl-kernel');
    mkdirSync(kdl);
    await withListsRetry(() => aptDownload(imageSpec, kdl, KERNEL_METAPACKAGE, (f) => progress.fraction(f)), progress, lists);
    const kernelDeb = await singleDeb(kdl);

    // 2. busybox-static
    progress.step('download busybox', BUSYBOX_PACKAGE);
    const bdl = join(tmp, 'dl-busybox');
    mkdirSync(bdl);
    await withListsRetry(() => aptDownload(BUSYBOX_PACKAGE, bdl, BUSYBOX_PACKAGE, (f) => progress.fraction(f)), progress, lists);
    const busyboxDeb = await singleDeb(bdl);

    // 3. extract both
    progress.step('extract');
    const kroot = join(tmp, 'kernel');
    const broot = join(tmp, 'busybox');
    const [kinfo, binfo] = await Promise.all([debInfo(kernelDeb), debInfo(busyboxDeb)]);
    await Promise.all([debExtract(kernelDeb, kroot), debExtract(busyboxDeb, broot)]);
    const kvers = existsSync(join(kroot, 'lib/modules')) ? readdirSync(join(kroot, 'lib/modules')) : [];
    if (kvers.length !== 1) throw new Error(`kindling guest: expected one kernel version in ${imagePkg}'s /lib/modules, found ${kvers.length}`);
    const kver = kvers[0];
    const vmlinuzSrc = join(kroot, 'boot', `vmlinuz-${kver}`);
    if (!existsSync(vmlinuzSrc)) throw new Error(`kindling guest: ${imagePkg} has no /boot/vmlinuz-${kver}`);
    const busyboxBin = join(broot, 'bin', 'busybox');
    if (!existsSync(busyboxBin)) throw new Error(`kindling guest: ${BUSYBOX_PACKAGE} has no /bin/busybox`);

    // 4. modules
    progress.step('modules');
    const modRoot = join(kroot, 'lib', 'modules', kver);
    const mods = collectModules(modRoot, kver, DEFAULT_MODULES);

    // 5. initramfs
    progress.step('initramfs');
    const epoch = sourceDateEpoch();
    const guestModDir = `/lib/modules/${kver}`;
    const agent = agentBinary(tmp);
    const entries: CpioEntry[] = [
      { type: 'file', path: 'init', data: initScript('/etc/modules.list'), mode: 0o755 },
      { type: 'file', path: 'bin/busybox', data: readFileSync(busyboxBin), mode: 0o755 },
      { type: 'file', path: 'bin/kindling-exit', data: exitHelperElf(), mode: 0o755 },
      { type: 'file', path: 'bin/kindling-agent', data: agent, mode: 0o755 },
      { type: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
      { type: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
      { type: 'dir', path: 'dev' },
      { type: 'dir', path: 'proc', mode: 0o555 },
      { type: 'dir', path: 'sys', mode: 0o555 },
      { type: 'dir', path: 'tmp', mode: 0o1777 },
      { type: 'dir', path: 'run' },
      { type: 'dir', path: 'mnt' },
      { type: 'dir', path: 'root', mode: 0o700 },
      { type: 'dir', path: 'sbin' },
      { type: 'dir', path: 'usr/bin' },
      { type: 'dir', path: 'usr/sbin' },
      { type: 'file', path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\n' },
      { type: 'file', path: 'etc/group', data: 'root:x:0:\n' },
      { type: 'file', path: 'etc/modules.list', data: mods.order.map((n) => `${guestModDir}/${mods.files.get(n)!.rel}`).join('\n') + '\n' },
      { type: 'file', path: `lib/modules/${kver}/modules.dep`, data: mods.dep },
    ];
    for (const n of mods.order) {
      const f = mods.files.get(n)!;
      entries.push({ type: 'file', path: `lib/modules/${kver}/${f.rel}`, data: f.data });
    }
    const taken = new Set(entries.map((e) => e.path));
    for (const a of busyboxApplets(busyboxBin)) {
      if (!taken.has(a)) entries.push({ type: 'symlink', path: a, target: '/bin/busybox' });
    }
    const initramfs = gzipSync(writeCpio(entries, { mtime: epoch }), { level: 9 });
    await writeDurable(join(tmp, 'initramfs.cpio.gz'), initramfs);

    // 6. vmlinux out of the bzImage
    progress.step('vmlinux');
    const bz = await readFile(vmlinuzSrc);
    const elf = extractVmlinux(bz);
    const pvh = findPvhEntry(elf);
    if (pvh === undefined) throw new Error(`kindling guest: the vmlinux in ${imagePkg} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)`);
    await writeDurable(join(tmp, 'vmlinux'), elf);
    await writeDurable(join(tmp, 'vmlinuz'), bz);

    const files = {} as GuestManifest['files'];
    const hash = (d: Uint8Array): string => createHash('sha256').update(d).digest('hex');
    files.vmlinuz = { size: bz.length, sha256: hash(bz) };
    files.vmlinux = { size: elf.length, sha256: hash(elf) };
    files['initramfs.cpio.gz'] = { size: initramfs.length, sha256: hash(initramfs) };
    const manifest: GuestManifest = {
      format: MANIFEST_FORMAT,
      kernelVersion: kver,
      packages: { [KERNEL_METAPACKAGE]: meta.version, [kinfo.pkg]: kinfo.version, [binfo.pkg]: binfo.version },
      modules: mods.order,
      pvhEntry: '0x' + pvh.toString(16),
      sourceDateEpoch: epoch,
      files,
      agent: { port: GUEST_AGENT_PORT, size: agent.length, sha256: hash(agent) },
      builtAt: new Date().toISOString(),
      buildMs: Date.now() - t0,
    };
    await writeDurable(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

    // Commit: drop the old manifest first so a crash mid-way never leaves a manifest over mixed files.
    await unlink(join(dir, 'manifest.json')).catch(() => {});
    for (const f of OUTPUTS) await rename(join(tmp, f), join(dir, f));
    await rename(join(tmp, 'manifest.json'), join(dir, 'manifest.json'));

    const size = (n: number): string => `${(n / (1 << 20)).toFixed(1)} MiB`;
    progress.done(
      `built ${kver} guest in ${((Date.now() - t0) / 1000).toFixed(1)} s: vmlinux ${size(elf.length)}, initramfs ${size(initramfs.length)} (${dir})`,
    );
    return imageOf(dir, kver);
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
  }
}

/** Size and hash check of a directory's outputs against its manifest (for `kindling guest --verify`). */
export async function verifyGuest(home: string = guestHome()): Promise<boolean> {
  if (!findBuiltGuest(home)) return false;
  return verifyHashes(home);
}

/** The manifest of a built guest, if any. */
export function readGuestManifest(home: string = guestHome()): GuestManifest | undefined {
  return readManifest(home);
}
