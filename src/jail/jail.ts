// `kindling jail`: Firecracker's jailer for kindling. Run as root, it builds a jail for one VM (or one
// vhost-user device) and starts kindling inside it as an unprivileged user:
//
//   kindling jail --id ID --uid UID --gid GID [--chroot-base-dir DIR] [--netns PATH] [--new-pid-ns]
//                 [--cgroup-version 1|2] [--cgroup FILE=VALUE]... [--resource-limit no-file=N,fsize=N]
//                 [--daemonize] [--keep-jail] -- run|vhost-user ARGS...
//
//   1. The jail root is <chroot-base-dir>/kindling/<id>/root (default base /srv/jailer, as
//      Firecracker's); it must not exist yet. Its parent directories are created (0755, root).
//   2. The files the inner command names (run: --kernel, --initrd, --disk; vhost-user: --device
//      blk=) appear at /images/<name> inside the jail through bind mounts: read-only for the kernel,
//      the initrd and ,ro disks, read-write for the other disks (a guest's writes land in the user's
//      image; the jail never writes, chowns or copies it). The inner command's arguments are rewritten
//      to those paths. Socket paths (--vsock uds=, vhost-user --socket, serve --api-sock) are paths
//      inside the jail. With `serve` (or Firecracker's `--api-sock …` spelling) the --config-file is
//      bound read-only likewise; the paths in it and in API requests are paths inside the jail, as with
//      Firecracker's jailer: an orchestrator links the files into <jail>/root, which is the jail's /.
//   3. Inside: /dev with null, zero, random, urandom and (when the host has it) kvm as fresh device
//      nodes owned by UID:GID, and /dev/net/tun when the inner command may attach a tap (usesTap);
//      the Node runtime (/usr, the host's /bin, /lib, /lib64 links or read-only binds,
//      /etc/ld.so.cache) and the installed kindling (its package directory, at the same path)
//      read-only; /run and /tmp writable by UID only. Nothing else of the host exists there.
//   4. cgroups: each --cgroup FILE=VALUE is written into kindling/<id> of FILE's controller
//      (v1: /sys/fs/cgroup/<controller>/kindling/<id>/FILE; v2: /sys/fs/cgroup/kindling/<id>/FILE, the
//      controller enabled in the parents' cgroup.subtree_control), and the jailed process joins it
//      before anything runs.
//   5. build/tools/kindling-jail-exec then enters the network namespace (--netns), a new mount
//      namespace (and PID namespace with --new-pid-ns), makes the binds and nodes, pivot_roots into
//      the jail, applies the rlimits, drops to UID:GID with no capabilities and no_new_privs, and execs
//      `node kindling.js <inner command>` — whose own seccomp filters then apply as everywhere.
//      The environment is cleared to PATH, HOME=/tmp, TMPDIR=/tmp, LANG and KINDLING_* variables.
//   6. When it exits, the jail directory (empty mount points only: the mounts lived in the jail's own
//      mount namespace) and the cgroups are removed unless --keep-jail or --daemonize; a removal never
//      deletes a non-empty regular file. The exit status is the jailed kindling's.
import { spawn, spawnSync } from 'node:child_process';
import { syscallName } from '../seccomp/syscalls-x86_64.js';
import { existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../main/config-error.js';
import { parseDiskArg } from '../cli/cli-args.js';

/** Whether the inner command may open /dev/net/tun: a tap NIC on its command line, or `serve` (the API adds NICs). */
export function usesTap(inner: readonly string[]): boolean {
  if (inner[0] === 'serve' || inner[0]?.startsWith('--')) return true;
  return inner.some((a, i) => /^(--net=)?tap=|^(--device=)?net=tap=/.test(a) && (a.startsWith('--') || ['--net', '--device'].includes(inner[i - 1] ?? '')));
}

/** `--dev PATH MAJOR MINOR` for kindling-jail-exec when the host has the character device PATH, else nothing. */
function hostCharDev(path: string): string[] {
  try {
    const st = statSync(path);
    if (!st.isCharacterDevice()) return [];
    // Linux's dev_t encoding (glibc major()/minor()).
    return ['--dev', path, String(Math.floor(st.rdev / 256) & 0xfff), String((st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00))];
  } catch {
    return [];
  }
}

export class JailUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface JailCommand {
  kind: 'jail';
  id: string;
  uid: number;
  gid: number;
  chrootBaseDir: string;
  netns?: string;
  newPidNs: boolean;
  cgroupVersion?: 1 | 2;
  cgroups: Array<{ file: string; value: string }>;
  rlimits: { nofile?: number; fsize?: number };
  daemonize: boolean;
  keepJail: boolean;
  /** The kindling command run inside (`run …` or `vhost-user …`). */
  inner: string[];
}

export const JAIL_USAGE = `usage: kindling jail --id ID --uid UID --gid GID [options] -- run|vhost-user|serve ARGS...
  --id ID                 the jail's name: 1..64 of [A-Za-z0-9-] (jail root <base>/kindling/ID/root)
  --uid UID, --gid GID    the unprivileged user and group kindling runs as (not 0)
  --chroot-base-dir DIR   where jails are made (default /srv/jailer)
  --netns PATH            join this network namespace (e.g. /var/run/netns/NAME)
  --new-pid-ns            run in a new PID namespace (kindling is PID 1 there)
  --cgroup-version 1|2    the cgroup hierarchy to use (default: the one mounted at /sys/fs/cgroup)
  --cgroup FILE=VALUE     write VALUE into the jail's cgroup FILE (repeatable), e.g.
                          memory.max=512M cpu.max="50000 100000" (v2), memory.limit_in_bytes=536870912 (v1)
  --resource-limit no-file=N,fsize=N
                          rlimits for the jailed process (RLIMIT_NOFILE, RLIMIT_FSIZE)
  --daemonize             detach (new session, stdio to /dev/null); the jail is then kept
  --keep-jail             do not remove the jail directory and cgroups on exit`;

const ID_RE = /^[A-Za-z0-9-]{1,64}$/;
const CGROUP_FILE_RE = /^[a-z_]+\.[a-z_.]+$/;
const DEFAULT_BASE = '/srv/jailer';

function num(flag: string, v: string, min: number): number {
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > 0xffffffff) throw new JailUsageError(`${flag} must be a whole number ≥ ${min} (got ${JSON.stringify(v)})`);
  return Number(v);
}

/** argv after `jail` → the command, or a JailUsageError (exit 2). Pure. */
export function parseJailArgs(args: readonly string[]): JailCommand | { kind: 'jail-help' } {
  const dd = args.indexOf('--');
  const own = dd >= 0 ? args.slice(0, dd) : [...args];
  const inner = dd >= 0 ? args.slice(dd + 1) : [];
  const o: Partial<JailCommand> & { cgroups: JailCommand['cgroups']; rlimits: JailCommand['rlimits'] } = { cgroups: [], rlimits: {}, newPidNs: false, daemonize: false, keepJail: false };
  for (let i = 0; i < own.length; i++) {
    const a = own[i];
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const takes = ['--id', '--uid', '--gid', '--chroot-base-dir', '--netns', '--cgroup-version', '--cgroup', '--resource-limit'].includes(flag);
    let v = '';
    if (takes) {
      if (eq > 0 && a.startsWith('--')) v = a.slice(eq + 1);
      else if (i + 1 < own.length) v = own[++i];
      else throw new JailUsageError(`${flag} needs a value`);
    }
    switch (flag) {
      case '-h':
      case '--help':
        return { kind: 'jail-help' };
      case '--id':
        if (!ID_RE.test(v)) throw new JailUsageError(`--id must be 1..64 characters of A-Z, a-z, 0-9 and - (got ${JSON.stringify(v)})`);
        o.id = v;
        break;
      case '--uid':
        o.uid = num('--uid', v, 1);
        break;
      case '--gid':
        o.gid = num('--gid', v, 1);
        break;
      case '--chroot-base-dir':
        if (!isAbsolute(v)) throw new JailUsageError(`--chroot-base-dir must be an absolute path (got ${JSON.stringify(v)})`);
        o.chrootBaseDir = v;
        break;
      case '--netns':
        o.netns = v;
        break;
      case '--cgroup-version':
        if (v !== '1' && v !== '2') throw new JailUsageError(`--cgroup-version must be 1 or 2 (got ${JSON.stringify(v)})`);
        o.cgroupVersion = Number(v) as 1 | 2;
        break;
      case '--cgroup': {
        const k = v.indexOf('=');
        const file = k > 0 ? v.slice(0, k) : '';
        const value = k > 0 ? v.slice(k + 1) : '';
        if (!CGROUP_FILE_RE.test(file) || value === '' || /[\n\0]/.test(value)) throw new JailUsageError(`--cgroup must be FILE=VALUE with FILE like memory.max (got ${JSON.stringify(v)})`);
        o.cgroups.push({ file, value });
        break;
      }
      case '--resource-limit':
        for (const part of v.split(',')) {
          const m = /^(no-file|fsize)=([0-9]+)$/.exec(part);
          if (!m) throw new JailUsageError(`--resource-limit must be no-file=N and/or fsize=N, comma-separated (got ${JSON.stringify(v)})`);
          if (m[1] === 'no-file') o.rlimits.nofile = num('--resource-limit no-file', m[2], 16);
          else o.rlimits.fsize = num('--resource-limit fsize', m[2], 0);
        }
        break;
      case '--new-pid-ns':
        o.newPidNs = true;
        break;
      case '--daemonize':
        o.daemonize = true;
        break;
      case '--keep-jail':
        o.keepJail = true;
        break;
      default:
        throw new JailUsageError(`jail: unknown option ${JSON.stringify(a)}`);
    }
  }
  if (o.id === undefined) throw new JailUsageError('jail needs --id ID');
  if (o.uid === undefined || o.gid === undefined) throw new JailUsageError('jail needs --uid UID and --gid GID (not 0)');
  const firecrackerSpelling = inner[0] !== undefined && ['--api-sock', '--config-file', '--no-api'].some((f) => inner[0] === f || inner[0].startsWith(`${f}=`));
  if (inner[0] !== 'run' && inner[0] !== 'vhost-user' && inner[0] !== 'serve' && !firecrackerSpelling) {
    throw new JailUsageError('jail needs the command to run after --: run ARGS..., vhost-user ARGS..., serve ARGS... or Firecracker\'s --api-sock PATH ...');
  }
  const innerOwn = inner.indexOf('--') >= 0 ? inner.slice(0, inner.indexOf('--')) : inner;
  if (inner[0] === 'run' && !innerOwn.some((w) => w === '--kernel' || w.startsWith('--kernel='))) {
    throw new JailUsageError('jail -- run needs --kernel (the default guest is not built inside a jail: build it with `kindling guest` and pass its kernel and initrd)');
  }
  return {
    kind: 'jail',
    id: o.id,
    uid: o.uid,
    gid: o.gid,
    chrootBaseDir: o.chrootBaseDir ?? DEFAULT_BASE,
    ...(o.netns !== undefined ? { netns: o.netns } : {}),
    newPidNs: o.newPidNs === true,
    ...(o.cgroupVersion !== undefined ? { cgroupVersion: o.cgroupVersion } : {}),
    cgroups: o.cgroups,
    rlimits: o.rlimits,
    daemonize: o.daemonize === true,
    keepJail: o.keepJail === true,
    inner,
  };
}

/** A file the jail shows inside: a bind mount of the host path at `jailPath`. */
export interface JailFile {
  host: string;
  jailPath: string;
  readOnly: boolean;
}

/**
 * The inner command with every image path replaced by its path inside the jail, and the files to
 * bind. Pure: paths are resolved against `cwd`. Handles `--flag VALUE` and `--flag=VALUE`; words after
 * the inner command's own `--` (guest arguments) are left alone.
 */
export function rewriteInner(inner: readonly string[], cwd: string): { argv: string[]; files: JailFile[] } {
  const files: JailFile[] = [];
  const used = new Set<string>();
  const place = (host: string, readOnly: boolean): string => {
    const abs = resolve(cwd, host);
    const same = files.find((f) => f.host === abs);
    if (same) {
      same.readOnly &&= readOnly;
      return same.jailPath;
    }
    let name = basename(abs) || 'file';
    for (let n = 2; used.has(name); n++) name = `${n}-${basename(abs)}`;
    used.add(name);
    const jailPath = `/images/${name}`;
    files.push({ host: abs, jailPath, readOnly });
    return jailPath;
  };
  const pathOf = (flag: string, v: string): string => {
    if (flag === '--kernel' || flag === '--initrd' || flag === '--config-file') return place(v, true);
    // A disk's path is the part before its options (,ro ,rw ,bw= ,ops=, taken off the end as `run`
    // parses them); the options stay as given.
    if (flag === '--disk') {
      const d = parseDiskArg(v);
      return place(d.path, d.readOnly) + v.slice(d.path.length);
    }
    if (flag === '--device' && v.startsWith('blk=')) {
      const d = parseDiskArg(v.slice(4), '--device blk=');
      return `blk=${place(d.path, d.readOnly)}${v.slice(4 + d.path.length)}`;
    }
    return v;
  };
  const FLAGS = ['--kernel', '--initrd', '--disk', '--device', '--config-file'];
  // `serve`/`run`/`vhost-user` first, or Firecracker's spelling where the first word is already a flag.
  const start = inner[0]?.startsWith('--') ? 0 : 1;
  const out: string[] = inner.slice(0, start);
  for (let i = start; i < inner.length; i++) {
    const a = inner[i];
    if (a === '--') {
      out.push(...inner.slice(i));
      break;
    }
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    if (!FLAGS.includes(flag)) {
      out.push(a);
      continue;
    }
    if (eq > 0) out.push(`${flag}=${pathOf(flag, a.slice(eq + 1))}`);
    else if (i + 1 < inner.length) {
      out.push(flag, pathOf(flag, inner[++i]));
    } else out.push(a);
  }
  return { argv: out, files };
}

/** The package root of this kindling installation (dist/jail/jail.js or src/jail/jail.ts → two up). */
export const KINDLING_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const JAIL_EXEC = join(KINDLING_ROOT, 'build', 'tools', 'kindling-jail-exec');

interface CgroupDir {
  dir: string;
  procs: string;
}

function hostCgroupVersion(): 1 | 2 {
  return existsSync('/sys/fs/cgroup/cgroup.controllers') ? 2 : 1;
}

/** Create the jail's cgroups and write the limits; the directories and cgroup.procs files to join. */
function setUpCgroups(cmd: JailCommand, version: 1 | 2): CgroupDir[] {
  const dirs = new Map<string, CgroupDir>();
  for (const { file, value } of cmd.cgroups) {
    const controller = file.slice(0, file.indexOf('.'));
    let dir: string;
    if (version === 1) {
      const top = `/sys/fs/cgroup/${controller}`;
      if (!existsSync(top)) throw new ConfigError(`--cgroup ${file}: the cgroup v1 controller ${controller} is not mounted at ${top}`);
      dir = join(top, 'kindling', cmd.id);
    } else {
      dir = join('/sys/fs/cgroup', 'kindling', cmd.id);
      mkdirSync(dirname(dir), { recursive: true });
      for (const parent of ['/sys/fs/cgroup', dirname(dir)]) {
        try {
          writeFileSync(join(parent, 'cgroup.subtree_control'), `+${controller}`);
        } catch (e) {
          throw new ConfigError(`--cgroup ${file}: cannot enable the ${controller} controller in ${parent} (${(e as Error).message})`);
        }
      }
    }
    mkdirSync(dir, { recursive: true });
    try {
      writeFileSync(join(dir, file), value);
    } catch (e) {
      throw new ConfigError(`--cgroup ${file}=${value}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} writing ${join(dir, file)}`);
    }
    dirs.set(dir, { dir, procs: join(dir, 'cgroup.procs') });
  }
  return [...dirs.values()];
}

/**
 * Remove what the jail setup made under `dir`: directories, empty regular files (mount points),
 * device nodes, sockets and symlinks. A non-empty regular file is left where it is (and reported):
 * removal must never delete data, even if a mount unexpectedly survived.
 */
export function removeJailTree(dir: string): string[] {
  const kept: string[] = [];
  const walk = (p: string): boolean => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return true;
    }
    if (st.isDirectory()) {
      let empty = true;
      for (const e of readdirSync(p)) empty = walk(join(p, e)) && empty;
      if (!empty) return false;
      try {
        rmdirSync(p);
        return true;
      } catch {
        kept.push(p);
        return false;
      }
    }
    if (st.isFile() && st.size > 0) {
      kept.push(p);
      return false;
    }
    unlinkSync(p);
    return true;
  };
  walk(dir);
  return kept;
}

/** What the runtime needs inside the jail: the host's top-level links or read-only binds, and the node binary. */
function runtimeEntries(): { binds: JailFile[]; symlinks: Array<{ target: string; path: string }> } {
  const binds: JailFile[] = [];
  const symlinks: Array<{ target: string; path: string }> = [];
  for (const top of ['/usr', '/bin', '/lib', '/lib64']) {
    let st;
    try {
      st = lstatSync(top);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) symlinks.push({ target: readlinkSync(top), path: top });
    else if (st.isDirectory()) binds.push({ host: top, jailPath: top, readOnly: true });
  }
  if (existsSync('/etc/ld.so.cache')) binds.push({ host: '/etc/ld.so.cache', jailPath: '/etc/ld.so.cache', readOnly: true });
  const nodeDir = dirname(process.execPath);
  if (!binds.some((b) => nodeDir === b.host || nodeDir.startsWith(`${b.host}/`))) binds.push({ host: nodeDir, jailPath: nodeDir, readOnly: true });
  binds.push({ host: KINDLING_ROOT, jailPath: KINDLING_ROOT, readOnly: true });
  return { binds, symlinks };
}

/** Build the jail, run the inner command in it, clean up; resolves with the exit status. */
export async function runJail(cmd: JailCommand, onSignalForward?: (forward: ((sig: NodeJS.Signals) => void) | undefined) => void): Promise<number> {
  if (process.getuid?.() !== 0) throw new ConfigError('kindling jail needs root: it creates namespaces, mounts and device nodes, then drops to --uid (run it as root; `kindling run` itself needs no root, only access to /dev/kvm)');
  if (!existsSync(JAIL_EXEC)) throw new Error(`${JAIL_EXEC} is missing (npm install builds it)`);
  const version = cmd.cgroupVersion ?? hostCgroupVersion();
  if (cmd.cgroups.length && version !== hostCgroupVersion()) throw new ConfigError(`--cgroup-version ${version}: this host has cgroup v${hostCgroupVersion()} at /sys/fs/cgroup`);
  if (cmd.netns !== undefined && !existsSync(cmd.netns)) throw new ConfigError(`--netns ${cmd.netns}: not found`);
  const jailDir = join(cmd.chrootBaseDir, 'kindling', cmd.id);
  const root = join(jailDir, 'root');
  if (existsSync(jailDir)) throw new ConfigError(`jail ${jailDir} already exists (another jail with --id ${cmd.id}, or one kept with --keep-jail: remove it first)`);
  if (KINDLING_ROOT === root || KINDLING_ROOT.startsWith(`${root}/`)) throw new ConfigError('--chroot-base-dir must not contain the kindling installation');

  const { argv: innerArgv, files } = rewriteInner(cmd.inner, process.cwd());
  for (const f of files) {
    let st;
    try {
      st = statSync(f.host);
    } catch {
      throw new ConfigError(`${f.host}: not found (named by the jailed command)`);
    }
    if (!st.isFile() && !st.isBlockDevice()) throw new ConfigError(`${f.host}: not a regular file or block device (named by the jailed command)`);
  }
  mkdirSync(root, { recursive: true, mode: 0o755 });
  let cgroups: CgroupDir[] = [];
  const cleanup = (): void => {
    if (cmd.keepJail || cmd.daemonize) return;
    const kept = removeJailTree(jailDir);
    if (kept.length) process.stderr.write(`kindling: jail: kept ${kept.join(', ')} (not empty)\n`);
    for (const c of cgroups) {
      try {
        rmdirSync(c.dir);
      } catch {
        // still busy or already gone
      }
    }
  };
  try {
    cgroups = setUpCgroups(cmd, version);
    const rt = runtimeEntries();
    const args: string[] = ['--root', root, '--uid', String(cmd.uid), '--gid', String(cmd.gid)];
    if (cmd.netns !== undefined) args.push('--netns', cmd.netns);
    if (cmd.newPidNs) args.push('--new-pid-ns');
    if (cmd.daemonize) args.push('--daemonize');
    for (const c of cgroups) args.push('--cgroup-procs', c.procs);
    args.push('--dir', '/dev', '755', '--dir', '/run', '700', '--dir', '/tmp', '700', '--dir', '/images', '755');
    for (const [name, maj, min] of [['null', 1, 3], ['zero', 1, 5], ['random', 1, 8], ['urandom', 1, 9]] as const) args.push('--dev', `/dev/${name}`, String(maj), String(min));
    // The host's own device nodes, made afresh inside when the host has them (otherwise the jailed
    // kindling reports their absence as it would outside): /dev/kvm, and /dev/net/tun when a tap NIC
    // (`--net tap=`, vhost-user's `--device net=tap=`, or any NIC an API client may add to `serve`)
    // may be attached. The tap itself must already exist in the jail's network namespace and belong
    // to UID (`ip tuntap add NAME mode tap user UID`): without capabilities the jailed kindling can
    // attach a tap, not create one.
    args.push(...hostCharDev('/dev/kvm'));
    if (usesTap(cmd.inner)) {
      const tun = hostCharDev('/dev/net/tun');
      if (tun.length) args.push('--dir', '/dev/net', '755', ...tun);
    }
    for (const b of [...rt.binds, ...files]) args.push('--bind', b.host, b.jailPath, b.readOnly ? 'ro' : 'rw');
    for (const l of rt.symlinks) args.push('--symlink', l.target, l.path);
    if (cmd.rlimits.nofile !== undefined) args.push('--rlimit', 'nofile', String(cmd.rlimits.nofile));
    if (cmd.rlimits.fsize !== undefined) args.push('--rlimit', 'fsize', String(cmd.rlimits.fsize));
    args.push('--', process.execPath, join(KINDLING_ROOT, 'bin', 'kindling.js'), ...innerArgv);

    // A clean environment: nothing of the caller's (paths to files the jail does not have, credentials)
    // except the locale and kindling's own switches.
    const env: NodeJS.ProcessEnv = { PATH: '/usr/bin:/bin', HOME: '/tmp', TMPDIR: '/tmp', LANG: process.env.LANG ?? 'C.UTF-8' };
    for (const [k, v] of Object.entries(process.env)) if (k.startsWith('KINDLING_')) env[k] = v;
    const child = spawn(JAIL_EXEC, args, { stdio: cmd.daemonize ? 'ignore' : 'inherit', detached: cmd.daemonize, env });
    if (cmd.daemonize) {
      await new Promise<void>((res, rej) => {
        child.once('spawn', () => res());
        child.once('error', rej);
      });
      process.stdout.write(`kindling: jail ${cmd.id}: pid ${child.pid}, root ${root}\n`);
      child.unref();
      return 0;
    }
    onSignalForward?.((sig) => child.kill(sig));
    const status = await new Promise<number>((res, rej) => {
      child.once('error', rej);
      child.once('exit', (code, signal) => res(code ?? 128 + (signal ? signalNumber(signal) : 0)));
    });
    onSignalForward?.(undefined);
    if (status === 128 + 31) process.stderr.write(`kindling: jail ${cmd.id}: ${explainSeccompKill(child.pid, cmd.newPidNs)}\n`);
    return status;
  } finally {
    cleanup();
  }
}

/**
 * The kernel's audit record (type 1326) of the seccomp kill that ended the jailed kindling, as one
 * line naming the thread and the syscall; or where to look when the kernel log is not readable. With a
 * new PID namespace the record carries the host pid of the helper's child, so the latest record is used.
 */
export function explainSeccompKill(pid: number | undefined, anyPid: boolean, dmesg: () => string | undefined = readKernelLog): string {
  const log = dmesg();
  const records = (log ?? '').split('\n').filter((l) => l.includes('type=1326') && / sig=31 /.test(l));
  const rec = anyPid ? records.at(-1) : records.reverse().find((l) => l.includes(`pid=${pid} `));
  const m = rec ? /comm="([^"]*)".* syscall=(\d+) /.exec(rec) : null;
  if (!m) return 'killed by its seccomp filter (SIGSYS); the kernel log (dmesg, audit type=1326) names the thread and the syscall';
  return `killed by its seccomp filter: thread ${m[1]} made syscall ${m[2]} (${syscallName(Number(m[2]))}), which its role does not allow`;
}

function readKernelLog(): string | undefined {
  const r = spawnSync('dmesg', [], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? r.stdout : undefined;
}

function signalNumber(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 0;
}
