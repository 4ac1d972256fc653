// `kindling serve` / Firecracker's command line as a process (bin/kindling.js, needs dist/: `node
// scripts/build.mjs ts`): usage errors are one line and exit 2, a Firecracker --config-file that is
// wrong in any field is one line naming it and exit 2, a right one boots at once (here: exit 1 with
// the /dev/kvm line), the API socket is served with mode 0600 and removed when a signal ends the
// process (128+N), and a path that is not a socket is refused and left alone.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../fuzz/tmp.js';
import { api } from './api-http.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin/kindling.js');
const built = existsSync(join(root, 'dist/cli/serve.js')) && existsSync(join(root, 'dist/api-server/server.js'));
if (!built) console.warn('api-cli: SKIPPED: dist/ has no API server (run `node scripts/build.mjs ts`)');
const HAS_KVM = existsSync('/dev/kvm');

const dir = tempDir('kindling-api-cli-');
const kernel = join(dir, 'vmlinux');
writeFileSync(kernel, testKernelImage());
const rootfs = join(dir, 'rootfs.ext4');
writeFileSync(rootfs, Buffer.alloc(64 * 1024));

function run(args: string[]): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

function oneLineError(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length && !/^\d{4}-\d\d-\d\dT/.test(l) && !l.startsWith('{"level"'));
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^kindling: /);
  return lines[0];
}

/** Firecracker's own vm_config.json shape (the getting-started example), pointing at our files. */
function fcConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'boot-source': { kernel_image_path: kernel, boot_args: 'console=ttyS0 reboot=k panic=1 pci=off', initrd_path: null },
    drives: [{ drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true, partuuid: null, is_read_only: false, cache_type: 'Unsafe', io_engine: 'Sync', rate_limiter: null }],
    'machine-config': { vcpu_count: 2, mem_size_mib: 64, smt: false, track_dirty_pages: false },
    'cpu-config': null,
    balloon: null,
    'network-interfaces': [],
    vsock: null,
    logger: null,
    metrics: null,
    'mmds-config': null,
    entropy: null,
    ...over,
  };
}

let n = 0;
function configFile(doc: unknown): string {
  const p = join(dir, `config-${++n}.json`);
  writeFileSync(p, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return p;
}

describe.skipIf(!built)('kindling serve / Firecracker flags (process)', () => {
  it('usage errors: one line, exit 2', () => {
    for (const [args, re] of [
      [['serve'], /--api-sock PATH is required/],
      [['serve', '--api-sock'], /--api-sock: unknown option or missing value/],
      [['--api-sock', join(dir, 's'), '--bogus'], /--bogus: unknown option/],
      [['--no-api'], /--no-api needs --config-file/],
      [['--no-api', '--api-sock', join(dir, 's'), '--config-file', 'x'], /--no-api and --api-sock exclude each other/],
      [['--id', 'bad id!', '--no-api', '--config-file', 'x'], /--id: must be 1 to 64 letters, digits or dashes/],
      [['--boot-timer', '--no-api', '--config-file', join(dir, 'missing.json')], /--config-file: cannot open .*missing\.json: ENOENT/],
      [['--no-api', '--config-file', join(dir, 'missing.json')], /--config-file: cannot open .*missing\.json: ENOENT/],
      [['--no-api', '--config-file', dir], /--config-file: .* is not a regular file/],
    ] as Array<[string[], RegExp]>) {
      const r = run(args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(oneLineError(r.stderr)).toMatch(re);
    }
  });

  it('--config-file: a wrong field is one line naming it, exit 2; malformed JSON likewise', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['{"boot-source": ', /--config-file: .*malformed JSON/],
      [[1], /config file: expected a JSON object/],
      [fcConfig({ 'machine-config': { vcpu_count: 'two', mem_size_mib: 64 } }), /config file: machine-config: vcpu_count: expected an integer, got "two"$/],
      [fcConfig({ 'boot-source': { kernel_image_path: join(dir, 'nope') } }), /config file: boot-source: kernel_image_path: cannot open .*nope: ENOENT$/],
      [fcConfig({ drives: [{ drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true, is_read_only: 'no' }] }), /config file: drives\/rootfs: is_read_only: expected a boolean, got "no"$/],
      [fcConfig({ drives: [{ path_on_host: rootfs, is_root_device: true }] }), /config file: drives\[0\]: missing field drive_id$/],
      [fcConfig({ vsock: { guest_cid: 1, uds_path: join(dir, 'v.sock') } }), /config file: vsock: guest_cid: must be at least 3, got 1$/],
      [fcConfig({ 'network-interfaces': [{ iface_id: 'eth0', host_dev_name: 'tap 0' }] }), /config file: network-interfaces\/eth0: host_dev_name: must be an interface name/],
      [fcConfig({ balloon: { amount_mib: 0, deflate_on_oom: false } }), /config file: balloon: not supported yet$/],
      [fcConfig({ 'boot-sauce': {} }), /config file: unknown section boot-sauce$/],
      [fcConfig({ 'machine-config': { vcpu_count: 1, mem_size_mib: 64, extra: 1 } }), /config file: machine-config: unknown field extra$/],
    ];
    for (const [doc, re] of cases) {
      const r = run(['--no-api', '--config-file', configFile(doc)]);
      expect(r.status, r.stderr).toBe(2);
      expect(oneLineError(r.stderr)).toMatch(re);
    }
  });

  it.skipIf(HAS_KVM)('--config-file that is right boots at once: without /dev/kvm, exit 1 with the /dev/kvm line', () => {
    const r = run(['--no-api', '--config-file', configFile(fcConfig())]);
    expect(r.status, r.stderr).toBe(1);
    expect(oneLineError(r.stderr)).toMatch(/InstanceStart: cannot start the microVM: \/dev\/kvm not found/);
  });

  it('--api-sock: served at mode 0600, logs to --log-path, removed when SIGTERM ends the process (exit 143)', async () => {
    const sock = join(dir, 'fc.sock');
    const log = join(dir, 'fc.log');
    const child = spawn(process.execPath, [bin, '--api-sock', sock, '--id', 'vm-cli', '--level', 'Info', '--log-path', log, '--show-level'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    for (let i = 0; i < 300 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(sock), stderr).toBe(true);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect((await api(sock, 'GET', '/')).json).toEqual({ id: 'vm-cli', state: 'Not started', vmm_version: expect.any(String), app_name: 'kindling' });
    expect((await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel })).status).toBe(204);
    // A second server on the same live socket is refused.
    const second = run(['--api-sock', sock]);
    expect(second.status).toBe(2);
    expect(oneLineError(second.stderr)).toMatch(/another process is serving on this socket/);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(existsSync(sock)).toBe(false);
    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} \[vm-cli:main:INFO\] /);
    expect(lines.some((l) => l.includes('Running kindling v'))).toBe(true);
  });

  it('--api-sock naming a regular file: refused, exit 2, the file untouched', () => {
    const file = join(dir, 'precious');
    writeFileSync(file, 'data');
    const r = run(['--api-sock', file]);
    expect(r.status).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(/exists and is not a socket \(not removed\)/);
    expect(readFileSync(file, 'utf8')).toBe('data');
  });
});
