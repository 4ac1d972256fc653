// Thin async wrappers around apt-cache / apt-get download / dpkg-deb, with one-line errors.
import { spawn } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const APT_ENV = { ...process.env, LC_ALL: 'C', LANG: 'C', DEBIAN_FRONTEND: 'noninteractive' };

/** Run a command to completion. `onStatus` receives lines written to fd 3 (apt's Status-Fd). */
export function run(cmd: string, args: string[], opts: { cwd?: string; onStatus?: (line: string) => void } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    if (opts.onStatus) stdio.push('pipe');
    let child;
    try {
      child = spawn(cmd, args, { cwd: opts.cwd, env: APT_ENV, stdio });
    } catch (e) {
      reject(e);
      return;
    }
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    if (opts.onStatus) {
      let buf = '';
      const fd3 = child.stdio[3] as NodeJS.ReadableStream;
      fd3.setEncoding('utf8');
      fd3.on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          opts.onStatus!(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
}

/** The most useful line of a tool's stderr: the last `E:` line, else the last non-empty line. */
export function lastErrorLine(stderr: string, stdout = ''): string {
  const lines = (stderr + '\n' + stdout).split('\n').map((l) => l.trim()).filter(Boolean);
  const errs = lines.filter((l) => /^E: /.test(l));
  const pick = errs.length ? errs[errs.length - 1] : lines[lines.length - 1];
  return pick ?? '(no output)';
}

/** stderr patterns meaning the package lists are missing or stale, so `apt-get update` may help. */
export const LISTS_MISSING =
  /Unable to locate package|has no installation candidate|Can't select candidate|Can't select versions|No packages found|404\s+Not Found|Version '.*' for '.*' was not found/i;

function notFound(cmd: string, e: unknown): Error {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
    return new Error(`kindling guest: ${cmd} not found: building the default guest needs Debian's apt and dpkg (or pass --kernel)`);
  }
  return new Error(`kindling guest: cannot run ${cmd}: ${(e as Error).message}`);
}

export async function runTool(cmd: string, args: string[], what: string, opts: { cwd?: string; onStatus?: (line: string) => void } = {}): Promise<RunResult> {
  let r: RunResult;
  try {
    r = await run(cmd, args, opts);
  } catch (e) {
    throw notFound(cmd, e);
  }
  if (r.code !== 0) {
    const err = new Error(`kindling guest: ${what} failed: ${lastErrorLine(r.stderr, r.stdout)}`) as Error & { stderr?: string };
    err.stderr = r.stderr + r.stdout;
    throw err;
  }
  return r;
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

function aptOpts(): string[] {
  // As root, apt drops to the _apt user to download, which cannot write into our 0700 temp dir.
  return isRoot() ? ['-o', 'APT::Sandbox::User=root'] : [];
}

export async function aptUpdate(): Promise<void> {
  if (!isRoot()) {
    throw new Error('kindling guest: the apt package lists are missing or stale and `apt-get update` needs root: run it as root, then retry');
  }
  await runTool('apt-get', ['-q', 'update'], 'apt-get update');
}

/** Candidate version and Depends of a package, from `apt-cache show --no-all-versions`. */
export async function aptShow(pkg: string): Promise<{ version: string; depends: string }> {
  const r = await runTool('apt-cache', ['show', '--no-all-versions', pkg], `apt-cache show ${pkg}`);
  const field = (name: string): string | undefined => r.stdout.match(new RegExp(`^${name}: (.*)$`, 'm'))?.[1]?.trim();
  const version = field('Version');
  if (!version) throw new Error(`kindling guest: apt-cache show ${pkg} failed: no Version field`);
  return { version, depends: field('Depends') ?? '' };
}

/** `apt-get download spec` into `dir`; `onFraction` gets 0..1 from apt's status fd. */
export async function aptDownload(spec: string, dir: string, what: string, onFraction?: (f: number) => void): Promise<void> {
  await runTool('apt-get', [...aptOpts(), '-q', '-o', 'APT::Status-Fd=3', 'download', spec], `apt-get download ${what}`, {
    cwd: dir,
    onStatus: (line) => {
      const m = line.match(/^dlstatus:[^:]*:([0-9.]+):/);
      if (m && onFraction) onFraction(Math.min(1, Number(m[1]) / 100));
    },
  });
}

/** Package and Version fields of a .deb. */
export async function debInfo(deb: string): Promise<{ pkg: string; version: string }> {
  const r = await runTool('dpkg-deb', ['-f', deb, 'Package', 'Version'], `dpkg-deb -f ${deb}`);
  const pkg = r.stdout.match(/^Package: (.*)$/m)?.[1]?.trim() ?? '';
  const version = r.stdout.match(/^Version: (.*)$/m)?.[1]?.trim() ?? '';
  return { pkg, version };
}

export async function debExtract(deb: string, dest: string): Promise<void> {
  await runTool('dpkg-deb', ['-x', deb, dest], `dpkg-deb -x ${deb}`);
}
