// The Firecracker-compatible API on a real Unix socket, driven with Node's HTTP client the way
// Firecracker's getting-started guide drives Firecracker with curl: pre-boot configuration, every
// validation failure a 400 naming the field, the state rules, the logger and metrics files line by
// line, the socket's mode and lifetime, and hostile clients (slow, half-open, many at once).
//
// InstanceStart uses the real VM here; without /dev/kvm it must fail with a 400 that says so, and
// the server must keep serving. The runtime rules (PATCH /vm, SendCtrlAltDel, FlushMetrics deltas)
// are checked against a stand-in VM in the "runtime" block; test/kvm/api.test.ts boots real guests.
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiController, type ControlledVm } from '../../src/api-server/controller.js';
import { ApiSocketError, MAX_BODY_BYTES, REQUEST_TIMEOUT_MS, serveApi, type ApiServer } from '../../src/api-server/server.js';
import type { BlockStats } from '../../src/devices/virtio/block/device.js';
import { NET_COUNTERS, type NetStats } from '../../src/devices/virtio/net/backend.js';
import type { VMConfig } from '../../src/main/config.js';
import type { RateLimiterConfig } from '../../src/devices/rate-limiter.js';
import type { VMExit, VMState } from '../../src/main/vm.js';
import { tempDir } from '../fuzz/tmp.js';
import { api, fault } from './api-http.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const dir = tempDir('kindling-api-');
const kernel = join(dir, 'vmlinux');
writeFileSync(kernel, testKernelImage());
const rootfs = join(dir, 'rootfs.ext4');
writeFileSync(rootfs, Buffer.alloc(64 * 1024));
const data = join(dir, 'data.img');
writeFileSync(data, Buffer.alloc(8192));
const HAS_KVM = existsSync('/dev/kvm');

let n = 0;
const sockPath = (): string => join(dir, `api-${++n}.sock`);

async function withServer(opts: Partial<ConstructorParameters<typeof ApiController>[0]>, f: (sock: string, c: ApiController, s: ApiServer) => Promise<void>): Promise<void> {
  const c = new ApiController({ vmmVersion: '0.1.0-test', logFallback: () => {}, serialOut: new (await import('node:stream')).PassThrough(), ...opts });
  const sock = sockPath();
  const s = await serveApi(c, sock);
  try {
    await f(sock, c, s);
  } finally {
    await c.close();
    await s.close();
  }
}

describe('getting started (curl sequence)', () => {
  it('configures boot-source, rootfs, machine-config; InstanceStart answers 400 naming /dev/kvm here and the server keeps serving', async () => {
    await withServer({}, async (sock) => {
      expect((await api(sock, 'GET', '/')).json).toEqual({ id: 'anonymous-instance', state: 'Not started', vmm_version: '0.1.0-test', app_name: 'kindling' });
      expect((await api(sock, 'GET', '/version')).json).toEqual({ firecracker_version: '0.1.0-test' });
      // Firecracker's defaults before any PUT.
      expect((await api(sock, 'GET', '/machine-config')).json).toMatchObject({ vcpu_count: 1, mem_size_mib: 128, smt: false });
      const boot = await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel, boot_args: 'console=ttyS0 reboot=k panic=1 pci=off' });
      expect(boot.status).toBe(204);
      expect(boot.text).toBe('');
      expect((await api(sock, 'PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true, is_read_only: false })).status).toBe(204);
      expect((await api(sock, 'PUT', '/drives/data', { drive_id: 'data', path_on_host: data, is_root_device: false, is_read_only: true })).status).toBe(204);
      expect((await api(sock, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64 })).status).toBe(204);
      expect((await api(sock, 'PATCH', '/machine-config', { mem_size_mib: 96 })).status).toBe(204);
      expect((await api(sock, 'GET', '/machine-config')).json).toEqual({ vcpu_count: 2, mem_size_mib: 96, smt: false, track_dirty_pages: false, huge_pages: 'None' });
      expect((await api(sock, 'PUT', '/entropy', {})).status).toBe(204);
      const cfg = (await api(sock, 'GET', '/vm/config')).json as Record<string, unknown>;
      expect(cfg['boot-source']).toEqual({ kernel_image_path: kernel, initrd_path: null, boot_args: 'console=ttyS0 reboot=k panic=1 pci=off' });
      expect((cfg.drives as Array<{ drive_id: string }>).map((d) => d.drive_id)).toEqual(['rootfs', 'data']);
      expect(cfg['machine-config']).toMatchObject({ vcpu_count: 2, mem_size_mib: 96 });
      expect(cfg.entropy).toEqual({ rate_limiter: null });
      if (HAS_KVM) {
        console.warn('api-server: /dev/kvm exists; the no-KVM InstanceStart answer is not checked here (test/kvm/api.test.ts boots guests)');
        return;
      }
      const start = await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
      expect(fault(start)).toMatch(/^InstanceStart: cannot start the microVM: \/dev\/kvm not found: KVM is not available/);
      // Still serving, still configurable, and a second InstanceStart gets the same clear answer.
      expect((await api(sock, 'GET', '/')).json).toMatchObject({ state: 'Not started' });
      expect((await api(sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status).toBe(204);
      expect(fault(await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' }))).toMatch(/\/dev\/kvm/);
    });
  });

  it('a config the VM refuses at InstanceStart is a 400 naming the API field (disk size, vsock socket that exists)', async () => {
    const odd = join(dir, 'odd.img');
    writeFileSync(odd, Buffer.alloc(1000));
    const taken = join(dir, 'taken.sock');
    writeFileSync(taken, '');
    const c = new ApiController({ vmmVersion: 'x', logFallback: () => {} });
    const put = (path: string, body: unknown) => c.handle('PUT', path, body);
    expect((await put('/boot-source', { kernel_image_path: kernel })).status).toBe(204);
    expect((await put('/drives/data', { drive_id: 'data', path_on_host: data, is_root_device: false })).status).toBe(204);
    expect((await put('/drives/odd', { drive_id: 'odd', path_on_host: odd, is_root_device: true })).status).toBe(204);
    const r = await put('/actions', { action_type: 'InstanceStart' });
    expect(r.status).toBe(400);
    expect((r.body as { fault_message: string }).fault_message).toMatch(/^InstanceStart: drives\/odd: path_on_host: disk image size 1000 bytes is not a multiple of 512: /);
    expect((await put('/drives/odd', { drive_id: 'odd', path_on_host: rootfs, is_root_device: true })).status).toBe(204);
    expect((await put('/vsock', { guest_cid: 3, uds_path: taken })).status).toBe(204);
    const v = await put('/actions', { action_type: 'InstanceStart' });
    expect((v.body as { fault_message: string }).fault_message).toMatch(/^InstanceStart: vsock: uds_path: /);
    expect((await c.handle('GET', '/', undefined)).body).toMatchObject({ state: 'Not started' });
    await c.close();
  });

  it('maps the configuration onto VMConfig: root drive first with root= and ro/rw, Firecracker defaults, entropy → rng', () => {
    const c = new ApiController({ vmmVersion: 'x', logFallback: () => {} });
    const put = (path: string, body: unknown) => c.handle('PUT', path, body);
    return (async () => {
      expect((await put('/boot-source', { kernel_image_path: kernel })).status).toBe(204);
      expect((await put('/drives/data', { drive_id: 'data', path_on_host: data, is_root_device: false })).status).toBe(204);
      expect((await put('/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true, is_read_only: true, partuuid: '1234-abcd' })).status).toBe(204);
      expect((await put('/vsock', { guest_cid: 3, uds_path: join(dir, 'v.sock') })).status).toBe(204);
      const cfg: VMConfig = c.vmConfig();
      expect(cfg).toMatchObject({
        kernel,
        vcpus: 1,
        memMiB: 128,
        rng: false,
        cmdlineExtra: ['root=PARTUUID=1234-abcd', 'ro'],
        disks: [
          { path: rootfs, readOnly: true },
          { path: data, readOnly: false },
        ],
        vsock: { cid: 3, udsPath: join(dir, 'v.sock') },
      });
      expect(cfg.cmdline).toMatch(/^console=ttyS0 /);
      // PUT /entropy with a rate_limiter: the virtio-rng device with that limiter; an invalid one is a 400.
      expect((await put('/entropy', { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 }, ops: { size: 0, refill_time: 0 } } })).status).toBe(204);
      expect(c.vmConfig().rng).toEqual({ rate: { bandwidth: { size: 1000, refillTimeMs: 100 } } });
      const bad = await put('/entropy', { rate_limiter: { bandwidth: { size: -1, refill_time: 100 } } });
      expect(bad.status).toBe(400);
      expect((bad.body as { fault_message: string }).fault_message).toMatch(/^entropy: rate_limiter\.bandwidth\.size: must be at least 0/);
      expect((await put('/entropy', {})).status).toBe(204);
      expect(c.vmConfig().rng).toBe(true);
      await c.close();
    })();
  });
});

describe('validation: every failure is a 400 naming the field', () => {
  const cases: Array<[string, string, unknown, RegExp]> = [
    ['PUT', '/machine-config', { vcpu_count: '2', mem_size_mib: 64 }, /^machine-config: vcpu_count: expected an integer, got "2"$/],
    ['PUT', '/machine-config', { mem_size_mib: 64 }, /^machine-config: missing field vcpu_count$/],
    ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64, vcpus: 2 }, /^machine-config: unknown field vcpus$/],
    ['PUT', '/machine-config', { vcpu_count: 0, mem_size_mib: 64 }, /vcpu_count: must be at least 1/],
    ['PUT', '/machine-config', { vcpu_count: 255, mem_size_mib: 64 }, /vcpu_count: must be at most 254/],
    ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 8 }, /mem_size_mib: kindling needs at least 16 MiB/],
    ['PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64, smt: true }, /smt: true is not supported/],
    ['PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64, cpu_template: 'T2' }, /cpu_template: CPU templates are not supported yet/],
    ['PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64, cpu_template: 'Z9' }, /cpu_template: expected one of "C3", "T2"/],
    ['PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64, huge_pages: '2M' }, /huge_pages: 2M is not supported yet/],
    ['PUT', '/machine-config', [1, 2], /^machine-config: body: expected an object/],
    ['PUT', '/boot-source', { kernel_image_path: join(dir, 'missing') }, /^boot-source: kernel_image_path: cannot open .*missing: ENOENT$/],
    ['PUT', '/boot-source', { kernel_image_path: dir }, /kernel_image_path: .* is not a regular file/],
    ['PUT', '/boot-source', { kernel_image_path: kernel, boot_args: 'a\nb' }, /boot_args: must not contain NUL or newline/],
    ['PUT', '/drives/rootfs', { drive_id: 'other', path_on_host: rootfs, is_root_device: true }, /drives\/rootfs: drive_id other in the body does not match/],
    ['PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs }, /drives\/rootfs: missing field is_root_device/],
    ['PUT', '/drives/rootfs', { drive_id: 'rootfs', is_root_device: true }, /drives\/rootfs: missing field path_on_host/],
    ['PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true, rate_limiter: { bandwidth: { size: -1, refill_time: 100 } } }, /rate_limiter\.bandwidth\.size: must be at least 0/],
    ['PUT', '/drives/rootfs', { drive_id: 'rootfs', socket: '/x', is_root_device: true }, /socket: vhost-user-blk drives are not supported yet/],
    ['PUT', '/drives/r%20s', { drive_id: 'r s', path_on_host: rootfs, is_root_device: false }, /drive_id: must be 1 to 64 letters/],
    ['PUT', '/network-interfaces/eth0', { iface_id: 'eth1', host_dev_name: 'tap0' }, /^network-interfaces\/eth0: iface_id eth1 in the body does not match the id in the path$/],
    ['PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'no/slash' }, /^network-interfaces\/eth0: host_dev_name: must be an interface name/],
    ['PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '01:00:00:00:00:01' }, /^network-interfaces\/eth0: guest_mac: must be a unicast MAC address/],
    ['PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', mtu: 9000 }, /mtu: only 1500 is supported yet/],
    ['PATCH', '/network-interfaces/eth0', { iface_id: 'eth0' }, /^network-interfaces\/eth0: The requested operation is not supported before starting the microVM\.$/],
    ['PUT', '/network-interfaces/eth0', { iface_id: 'eth0' }, /missing field host_dev_name/],
    ['PUT', '/vsock', { guest_cid: 2, uds_path: '/tmp/v' }, /^vsock: guest_cid: must be at least 3, got 2$/],
    ['PUT', '/vsock', { guest_cid: 2 ** 32, uds_path: '/tmp/v' }, /guest_cid: must be at most 4294967294/],
    ['PUT', '/logger', { level: 'Loud' }, /^logger: level: expected one of Error, Warning, Info, Debug, Trace, Off, got Loud$/],
    ['PUT', '/logger', { log_path: '/dev/null' }, /log_path: \/dev\/null is not a regular file or a named pipe/],
    ['PUT', '/metrics', {}, /^metrics: missing field metrics_path$/],
    ['PUT', '/actions', { action_type: 'Reboot' }, /^actions: action_type: expected one of "FlushMetrics", "InstanceStart", "SendCtrlAltDel", got "Reboot"$/],
    ['PUT', '/actions', { action_type: 'SendCtrlAltDel' }, /^SendCtrlAltDel: The requested operation is not supported before starting the microVM\.$/],
    ['PUT', '/actions', { action_type: 'FlushMetrics' }, /^FlushMetrics: the metrics system is not configured/],
    ['PUT', '/actions', { action_type: 'InstanceStart' }, /^InstanceStart: cannot start the microVM without a kernel: PUT \/boot-source first$/],
    ['PATCH', '/vm', { state: 'Paused' }, /^vm: The requested operation is not supported before starting the microVM\.$/],
    ['PATCH', '/vm', { state: 'Stopped' }, /^vm: state: expected one of "Paused", "Resumed"/],
    ['PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs }, /not supported before starting the microVM/],
    ['PUT', '/snapshot/create', { snapshot_path: 'a', mem_file_path: 'b' }, /^PUT \/snapshot\/create: snapshots are not supported yet$/],
    ['PUT', '/snapshot/load', { snapshot_path: 'a' }, /snapshots are not supported yet/],
    ['PUT', '/balloon', { amount_mib: 1 }, /\/balloon is not supported yet/],
    ['PUT', '/nonsense', {}, /^Invalid request method and\/or path: PUT \/nonsense\.$/],
    ['DELETE', '/machine-config', undefined, /^Invalid request method and\/or path: DELETE \/machine-config\.$/],
    ['POST', '/actions', { action_type: 'InstanceStart' }, /Invalid request method and\/or path: POST \/actions/],
    ['GET', '/drives/rootfs/extra', undefined, /Invalid request method and\/or path: GET/],
    ['PUT', '/machine-config', '{"vcpu_count": 1,', /^malformed JSON body: /],
    ['PUT', '/machine-config', '', /^machine-config: body: expected an object, got nothing$/],
    ['PUT', '/machine-config', '{"vcpu_count":1,"mem_size_mib":64,"__proto__":{"smt":true}}', /^machine-config: unknown field __proto__$/],
    ['PUT', '/machine-config', '{"vcpu_count":1,"mem_size_mib":64,"\\u001b[31m":1}', /^machine-config: unknown field "\\u001b\[31m"$/],
    ['PUT', '/machine-config', 'x'.repeat(MAX_BODY_BYTES + 1), new RegExp(`^request body is larger than ${MAX_BODY_BYTES} bytes$`)],
  ];
  it('each bad request gets its one-line fault_message and changes nothing', async () => {
    await withServer({}, async (sock) => {
      const before = (await api(sock, 'GET', '/vm/config')).text;
      for (const [method, path, body, re] of cases) {
        const r = await api(sock, method, path, body);
        const m = fault(r);
        expect(m, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)}`).toMatch(re);
        expect(m).not.toMatch(/[\n\r]/);
        expect(r.headers['content-type']).toMatch(/^application\/json/);
      }
      expect((await api(sock, 'GET', '/vm/config')).text).toBe(before);
    });
  });

  it('network interfaces: PUT in order, replaced by id, a tap used twice refused, listed by GET /vm/config', async () => {
    await withServer({}, async (sock) => {
      expect((await api(sock, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:AC:10:00:02' })).status).toBe(204);
      expect((await api(sock, 'PUT', '/network-interfaces/eth1', { iface_id: 'eth1', host_dev_name: 'tap1' })).status).toBe(204);
      expect(fault(await api(sock, 'PUT', '/network-interfaces/eth2', { iface_id: 'eth2', host_dev_name: 'tap0' }))).toMatch(/^network-interfaces\/eth2: host_dev_name tap0 is already used by network interface eth0$/);
      expect((await api(sock, 'PUT', '/network-interfaces/eth1', { iface_id: 'eth1', host_dev_name: 'tap2' })).status).toBe(204);
      // As in Firecracker, PATCH (rate limiter updates) is for the running VM only.
      expect(fault(await api(sock, 'PATCH', '/network-interfaces/eth1', { iface_id: 'eth1' }))).toMatch(/not supported before starting the microVM/);
      const nics = ((await api(sock, 'GET', '/vm/config')).json as { 'network-interfaces': Array<{ iface_id: string; host_dev_name: string; guest_mac: string | null }> })['network-interfaces'];
      expect(nics.map((n) => [n.iface_id, n.host_dev_name, n.guest_mac])).toEqual([
        ['eth0', 'tap0', '06:00:AC:10:00:02'],
        ['eth1', 'tap2', null],
      ]);
    });
  });

  it('a second root device is refused; the same id may be replaced; null optional fields mean absent; rate_limiter becomes the disk\'s limiter', async () => {
    await withServer({}, async (sock, c) => {
      expect((await api(sock, 'PUT', '/drives/a', { drive_id: 'a', path_on_host: rootfs, is_root_device: true })).status).toBe(204);
      expect(fault(await api(sock, 'PUT', '/drives/b', { drive_id: 'b', path_on_host: data, is_root_device: true }))).toMatch(/^drives\/b: is_root_device: a root block device already exists \(a\)$/);
      expect((await api(sock, 'PUT', '/drives/a', { drive_id: 'a', path_on_host: data, is_root_device: true, partuuid: null, rate_limiter: null })).status).toBe(204);
      const drives = ((await api(sock, 'GET', '/vm/config')).json as { drives: Array<{ path_on_host: string }> }).drives;
      expect(drives).toHaveLength(1);
      expect(drives[0].path_on_host).toBe(data);
      // A rate limiter that limits nothing (size 0) is accepted, as Firecracker disables such buckets.
      expect((await api(sock, 'PUT', '/drives/b', { drive_id: 'b', path_on_host: rootfs, is_root_device: false, rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } })).status).toBe(204);
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      expect(c.vmConfig().disks![1]).toEqual({ path: rootfs, readOnly: false });
      const rl = { bandwidth: { size: 2097152, refill_time: 1000, one_time_burst: 65536 }, ops: { size: 0, refill_time: 0 } };
      expect((await api(sock, 'PUT', '/drives/b', { drive_id: 'b', path_on_host: rootfs, is_root_device: false, rate_limiter: rl })).status).toBe(204);
      expect(c.vmConfig().disks![1]).toEqual({ path: rootfs, readOnly: false, rate: { bandwidth: { size: 2097152, refillTimeMs: 1000, oneTimeBurst: 65536 } } });
      expect(((await api(sock, 'GET', '/vm/config')).json as { drives: Array<{ rate_limiter: unknown }> }).drives[1].rate_limiter).toEqual(rl);
    });
  });
});

describe('logger and metrics files', () => {
  it('PUT /logger writes Firecracker-format lines (level shown), PUT /metrics JSON lines with per-flush deltas', async () => {
    const log = join(dir, 'fc.log');
    const metrics = join(dir, 'fc.metrics');
    await withServer({ id: 'vm-7' }, async (sock) => {
      expect((await api(sock, 'PUT', '/logger', { log_path: log, level: 'info', show_level: true, show_log_origin: true })).status).toBe(204);
      expect(fault(await api(sock, 'PUT', '/logger', { log_path: log }))).toBe('logger: the logger is already configured');
      expect((await api(sock, 'PUT', '/metrics', { metrics_path: metrics })).status).toBe(204);
      expect(statSync(metrics).mode & 0o777).toBe(0o600);
      await api(sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 });
      await api(sock, 'PUT', '/machine-config', { vcpu_count: 'x', mem_size_mib: 64 });
      await api(sock, 'GET', '/');
      expect((await api(sock, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status).toBe(204);
      expect((await api(sock, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status).toBe(204);
    });
    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} \[vm-7:main:(INFO|WARN|ERROR):[a-z_]+\] \S/);
    expect(lines.some((l) => /\[vm-7:main:ERROR:api_server\] Received Error\. Status code: 400\. Message: machine-config: vcpu_count: expected an integer, got "x"$/.test(l))).toBe(true);
    const m = readFileSync(metrics, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, Record<string, number>>);
    expect(m).toHaveLength(2);
    expect(typeof m[0].utc_timestamp_ms).toBe('number');
    expect(m[0].put_api_requests).toMatchObject({ machine_cfg_count: 2, machine_cfg_fails: 1, metrics_count: 1, logger_count: 2, logger_fails: 1, actions_count: 1 });
    expect(m[0].get_api_requests.instance_info_count).toBe(1);
    // Deltas: the second line counts only what came after the first.
    expect(m[1].put_api_requests).toMatchObject({ machine_cfg_count: 0, actions_count: 1 });
    expect(m[1].get_api_requests.instance_info_count).toBe(0);
    expect(m[1].block).toMatchObject({ read_count: 0, write_count: 0 });
  });

  it('a named pipe nobody reads never blocks the API (lines are dropped and counted)', async () => {
    const fifo = join(dir, 'log.fifo');
    execFileSync('mkfifo', [fifo]);
    await withServer({}, async (sock) => {
      expect((await api(sock, 'PUT', '/logger', { log_path: fifo, level: 'Trace' })).status).toBe(204);
      // Far more than a pipe buffer (64 KiB) of log lines: each request logs one.
      const big = { kernel_image_path: join(dir, 'x'.repeat(200)) };
      for (let i = 0; i < 600; i++) await api(sock, 'PUT', '/boot-source', big);
      expect((await api(sock, 'GET', '/')).status).toBe(200);
    });
  });
});

describe('the socket', () => {
  it('is mode 0600, removed on close; a live socket is refused, a stale one replaced, a non-socket never touched', async () => {
    const c = new ApiController({ vmmVersion: 'x', logFallback: () => {} });
    const sock = sockPath();
    const s = await serveApi(c, sock);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    // Live: our own server is accepting.
    await expect(serveApi(new ApiController({ vmmVersion: 'x' }), sock)).rejects.toThrow(ApiSocketError);
    await expect(serveApi(new ApiController({ vmmVersion: 'x' }), sock)).rejects.toThrow(/another process is serving on this socket/);
    expect((await api(sock, 'GET', '/')).status).toBe(200);
    await s.close();
    await c.close();
    expect(existsSync(sock)).toBe(false);
    // Stale: a socket file whose process is gone.
    const stale = sockPath();
    execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
    expect(statSync(stale).isSocket()).toBe(true);
    const c2 = new ApiController({ vmmVersion: 'x' });
    const s2 = await serveApi(c2, stale);
    expect((await api(stale, 'GET', '/version')).json).toEqual({ firecracker_version: 'x' });
    await s2.close();
    await c2.close();
    // Not a socket: refused, left as it was.
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    await expect(serveApi(new ApiController({ vmmVersion: 'x' }), file)).rejects.toThrow(/exists and is not a socket \(not removed\)/);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
    // A live socket of another server.
    const other = sockPath();
    const srv = createServer((conn) => conn.end());
    await new Promise<void>((r) => srv.listen(other, r));
    await expect(serveApi(new ApiController({ vmmVersion: 'x' }), other)).rejects.toThrow(/another process is serving/);
    await new Promise<void>((r) => srv.close(() => r()));
  });
});

describe('hostile clients', () => {
  it('200 half-open and slow connections and 100 concurrent requests: every well-formed request is answered promptly', async () => {
    await withServer({}, async (sock) => {
      const held: Socket[] = [];
      const opened = (s: Socket) => new Promise<void>((r, j) => s.once('connect', () => r()).once('error', j));
      for (let i = 0; i < 200; i++) {
        const s = connect(sock);
        s.on('error', () => {});
        held.push(s);
        await opened(s);
        if (i % 3 === 0) s.write('PUT /machine-config HTTP/1.1\r\nHost: x\r\n'); // headers never finished
        else if (i % 3 === 1) s.write('PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"vcpu'); // body never finished
        // else: connected, silent
      }
      const t0 = performance.now();
      const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? api(sock, 'GET', '/') : api(sock, 'PUT', '/machine-config', { vcpu_count: 1 + (i % 4), mem_size_mib: 64 }))));
      const ms = performance.now() - t0;
      for (const r of replies) expect([200, 204]).toContain(r.status);
      expect(ms).toBeLessThan(5000);
      for (const s of held) s.destroy();
    });
  });

  it(`a request that never completes is answered 408 and closed within REQUEST_TIMEOUT_MS (${REQUEST_TIMEOUT_MS} ms) + 2 s`, async () => {
    await withServer({}, async (sock) => {
      const s = connect(sock);
      s.on('error', () => {});
      await new Promise<void>((r) => s.once('connect', () => r()));
      let reply = '';
      s.on('data', (b: Buffer) => (reply += b.toString()));
      const t0 = performance.now();
      s.write('PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"vcpu_count"');
      await new Promise<void>((r) => s.once('close', () => r()));
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThan(REQUEST_TIMEOUT_MS - 100);
      expect(ms).toBeLessThan(REQUEST_TIMEOUT_MS + 2000);
      expect(reply).toMatch(/^HTTP\/1\.1 408 /);
    });
  });

  it('a client that sends a request byte by byte is served; one that disconnects mid-body changes nothing', async () => {
    await withServer({}, async (sock) => {
      const body = JSON.stringify({ vcpu_count: 3, mem_size_mib: 64 });
      const req = `PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
      const s = connect(sock);
      await new Promise<void>((r) => s.once('connect', () => r()));
      let reply = '';
      s.on('data', (b: Buffer) => (reply += b.toString()));
      for (const ch of req) {
        s.write(ch);
        await new Promise((r) => setTimeout(r, 1));
      }
      // The whole reply (a 204 has no body: the head ends the reply).
      for (let i = 0; i < 500 && !reply.includes('\r\n\r\n'); i++) await new Promise((r) => setTimeout(r, 10));
      s.destroy();
      expect(reply).toMatch(/^HTTP\/1\.1 204 /);
      const cut = connect(sock);
      await new Promise<void>((r) => cut.once('connect', () => r()));
      cut.end(`PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n{"vcpu_count": 9`);
      await new Promise((r) => setTimeout(r, 50));
      expect((await api(sock, 'GET', '/machine-config')).json).toMatchObject({ vcpu_count: 3 });
    });
  });
});

/** A stand-in VM for the runtime rules (pause/resume, Ctrl-Alt-Del, metrics), recording what it was asked. */
class FakeVm extends EventEmitter implements ControlledVm {
  state: VMState = 'created';
  readonly serial = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  keys = 0;
  keyRoom = true;
  stats: BlockStats[] = [];
  private resolveExit!: (e: VMExit) => void;
  private readonly exited = new Promise<VMExit>((r) => (this.resolveExit = r));
  constructor(readonly config: VMConfig) {
    super();
  }
  async start() {
    this.state = 'running';
  }
  wait() {
    return this.exited;
  }
  async stop() {
    this.end({ reason: 'stopped', exitCode: 0 });
    return this.exited;
  }
  end(e: VMExit) {
    this.state = 'stopped';
    this.resolveExit(e);
  }
  async pause() {
    this.state = 'paused';
  }
  resume() {
    this.state = 'running';
  }
  sendCtrlAltDel() {
    if (!this.keyRoom) return false;
    this.keys++;
    return true;
  }
  blockStats() {
    return this.stats;
  }
  nets: NetStats[] = [];
  netStats() {
    return this.nets;
  }
  limiters: Array<[number, RateLimiterConfig | null]> = [];
  nicLimiters: Array<[number, unknown]> = [];
  async setNetRateLimiters(index: number, rates: { rx?: RateLimiterConfig | null; tx?: RateLimiterConfig | null }) {
    this.nicLimiters.push([index, rates]);
  }
  swaps: Array<[number, string]> = [];
  swapError: string | undefined;
  async swapDisk(index: number, path: string) {
    if (this.swapError) throw new Error(this.swapError);
    this.swaps.push([index, path]);
  }
  limiterError: string | undefined;
  async setDiskRateLimiter(index: number, rate: RateLimiterConfig | null) {
    if (this.limiterError) throw new Error(this.limiterError);
    this.limiters.push([index, rate]);
  }
}

const zeroNet = (): NetStats => ({
  ...(Object.fromEntries(NET_COUNTERS.map((n) => [n, 0])) as Record<(typeof NET_COUNTERS)[number], number>),
  wakeups: 0,
  interrupts: 0,
  needsReset: 0,
});
const zeroStats = (): BlockStats => ({ requests: 0, reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, errors: 0, unsupported: 0, badChains: 0, wakeups: 0, interrupts: 0, batches: 0, needsReset: 0, bytesRead: 0, bytesWritten: 0 });

describe('runtime rules (stand-in VM)', () => {
  let vm: FakeVm | undefined;
  let exits: VMExit[] = [];
  const metrics = join(dir, 'runtime.metrics');
  let serialOut = '';
  beforeAll(() => {
    exits = [];
  });
  afterAll(() => {
    vm = undefined;
  });
  it('after InstanceStart: pre-boot resources refused, PATCH /vm pauses and resumes, SendCtrlAltDel reaches the VM, FlushMetrics has block deltas, the VM exit is reported', async () => {
    const { PassThrough } = await import('node:stream');
    const out = new PassThrough();
    out.on('data', (b: Buffer) => (serialOut += b.toString()));
    await withServer(
      {
        createVm: async (cfg) => (vm = new FakeVm(cfg)),
        serialOut: out,
        onExit: (e) => exits.push(e),
      },
      async (sock) => {
        await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel, boot_args: 'console=ttyS0' });
        await api(sock, 'PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true });
        await api(sock, 'PUT', '/metrics', { metrics_path: metrics });
        await api(sock, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0' });
        await api(sock, 'PUT', '/network-interfaces/eth1', { iface_id: 'eth1', host_dev_name: 'tap1', tx_rate_limiter: { ops: { size: 100, refill_time: 1000 } } });
        expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
        expect(vm!.config.net).toEqual([{ tap: 'tap0' }, { tap: 'tap1', txRate: { ops: { size: 100, refillTimeMs: 1000 } } }]);
        // PATCH /network-interfaces: each direction updated as PATCH /drives updates rate_limiter; an absent one is kept.
        expect((await api(sock, 'PATCH', '/network-interfaces/eth0', { iface_id: 'eth0' })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/network-interfaces/eth1', { iface_id: 'eth1', tx_rate_limiter: { bandwidth: { size: 5000, refill_time: 10 } } })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/network-interfaces/eth1', { iface_id: 'eth1', rx_rate_limiter: { ops: { size: 7, refill_time: 1 } }, tx_rate_limiter: { ops: { size: 0, refill_time: 0 } } })).status).toBe(204);
        expect(vm!.nicLimiters).toEqual([
          [1, { tx: { ops: { size: 100, refillTimeMs: 1000 }, bandwidth: { size: 5000, refillTimeMs: 10 } } }],
          [1, { rx: { ops: { size: 7, refillTimeMs: 1 } }, tx: { bandwidth: { size: 5000, refillTimeMs: 10 } } }],
        ]);
        const nic1 = ((await api(sock, 'GET', '/vm/config')).json as { 'network-interfaces': Array<Record<string, unknown>> })['network-interfaces'][1];
        expect(nic1).toMatchObject({ rx_rate_limiter: { ops: { size: 7, refill_time: 1 } }, tx_rate_limiter: { bandwidth: { size: 5000, refill_time: 10 } } });
        expect(fault(await api(sock, 'PATCH', '/network-interfaces/eth9', { iface_id: 'eth9' }))).toMatch(/^network-interfaces\/eth9: no such network interface$/);
        expect(vm!.config).toMatchObject({ cmdline: 'console=ttyS0', cmdlineExtra: ['root=/dev/vda', 'rw'], disks: [{ path: rootfs, readOnly: false }] });
        expect(vm!.config.disks![0]).not.toHaveProperty('rate');
        expect((await api(sock, 'GET', '/')).json).toMatchObject({ state: 'Running' });
        vm!.serial.push(Buffer.from('hello from guest\n'));
        for (const [path, body] of [
          ['/boot-source', { kernel_image_path: kernel }],
          ['/machine-config', { vcpu_count: 1, mem_size_mib: 64 }],
          ['/drives/rootfs', { drive_id: 'rootfs', path_on_host: rootfs, is_root_device: true }],
          ['/vsock', { guest_cid: 3, uds_path: '/tmp/x' }],
          ['/entropy', {}],
          ['/logger', {}],
          ['/serial', {}],
          ['/actions', { action_type: 'InstanceStart' }],
        ] as const) {
          expect(fault(await api(sock, 'PUT', path, body))).toMatch(/The requested operation is not supported after starting the microVM\.$/);
        }
        expect((await api(sock, 'PATCH', '/vm', { state: 'Paused' })).status).toBe(204);
        expect((await api(sock, 'GET', '/')).json).toMatchObject({ state: 'Paused' });
        expect((await api(sock, 'PATCH', '/vm', { state: 'Paused' })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/vm', { state: 'Resumed' })).status).toBe(204);
        expect(vm!.state).toBe('running');
        expect((await api(sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' })).status).toBe(204);
        expect(vm!.keys).toBe(1);
        vm!.keyRoom = false;
        expect(fault(await api(sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' }))).toMatch(/keyboard buffer is full/);
        // path_on_host: the hot swap (vm.swapDisk, by placement index); a refusal is a 400 naming the field.
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: data })).status).toBe(204);
        expect(vm!.swaps).toEqual([[0, data]]);
        expect(((await api(sock, 'GET', '/vm/config')).json as { drives: Array<{ drive_id: string; path_on_host: string }> }).drives.find((d) => d.drive_id === 'rootfs')!.path_on_host).toBe(data);
        vm!.swapError = 'disk image not found: /nope.img';
        expect(fault(await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: '/nope.img' }))).toBe('drives/rootfs: path_on_host: disk image not found: /nope.img');
        vm!.swapError = undefined;
        expect(((await api(sock, 'GET', '/vm/config')).json as { drives: Array<{ drive_id: string; path_on_host: string }> }).drives.find((d) => d.drive_id === 'rootfs')!.path_on_host).toBe(data);
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs' })).status).toBe(204);
        // rate_limiter: Firecracker's update rules (a given bucket replaces, size 0 removes, a missing one stays).
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { bandwidth: { size: 1000, refill_time: 100 } } })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { ops: { size: 10, refill_time: 1000, one_time_burst: 5 } } })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } })).status).toBe(204);
        expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { ops: { size: 0, refill_time: 100 } } })).status).toBe(204);
        expect(vm!.limiters).toEqual([
          [0, { bandwidth: { size: 1000, refillTimeMs: 100 } }],
          [0, { bandwidth: { size: 1000, refillTimeMs: 100 }, ops: { size: 10, refillTimeMs: 1000, oneTimeBurst: 5 } }],
          [0, { ops: { size: 10, refillTimeMs: 1000, oneTimeBurst: 5 } }],
          [0, null],
        ]);
        expect(fault(await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { bandwidth: { size: -3, refill_time: 100 } } }))).toMatch(/rate_limiter\.bandwidth\.size: must be at least 0/);
        vm!.limiterError = 'its I/O worker is not running';
        expect(fault(await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', rate_limiter: { ops: { size: 1, refill_time: 1 } } }))).toBe('drives/rootfs: rate_limiter: its I/O worker is not running');
        vm!.limiterError = undefined;
        expect(fault(await api(sock, 'PATCH', '/drives/nope', { drive_id: 'nope' }))).toMatch(/no drive with this id/);
        vm!.stats = [{ ...zeroStats(), reads: 5, bytesRead: 2560, writes: 1, bytesWritten: 512 }];
        vm!.nets = [{ ...zeroNet(), rxFrames: 3, rxBytes: 300, txFrames: 2, txBytes: 120, txPolled: 1, txQueueEvents: 2, portRxEvents: 3 }, { ...zeroNet(), txThrottled: 4, rxDropped: 1, rxBadBuffers: 2 }];
        expect((await api(sock, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status).toBe(204);
        vm!.stats = [{ ...zeroStats(), reads: 7, bytesRead: 3584, writes: 1, bytesWritten: 512, flushes: 1 }];
        vm!.nets = [{ ...zeroNet(), rxFrames: 10, rxBytes: 1000, txFrames: 2, txBytes: 120, txPolled: 1, needsReset: 1 }, { ...zeroNet(), txThrottled: 5, rxDropped: 1, rxBadBuffers: 2, txErrors: 1 }];
        expect((await api(sock, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status).toBe(204);
        vm!.end({ reason: 'reboot', exitCode: 0 });
        await new Promise((r) => setTimeout(r, 20));
        expect(exits).toEqual([{ reason: 'reboot', exitCode: 0 }]);
      },
    );
    expect(serialOut).toBe('hello from guest\n');
    const m = readFileSync(metrics, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, Record<string, number>>);
    expect(m.length).toBe(3); // two FlushMetrics and the one written when the VM ended
    expect(m[0].block_rootfs).toMatchObject({ read_count: 5, read_bytes: 2560, write_count: 1, write_bytes: 512 });
    expect(m[1].block_rootfs).toMatchObject({ read_count: 2, read_bytes: 1024, write_count: 0, flush_count: 1 });
    expect(m[1].block).toMatchObject({ read_count: 2, flush_count: 1 });
    // net_<iface_id> in PUT order, deltas like the block groups; net is their sum.
    expect(m[0].net_eth0).toMatchObject({ rx_packets_count: 3, rx_bytes_count: 300, tx_packets_count: 2, tx_bytes_count: 120, tx_busy_poll_count: 1, tx_queue_event_count: 2, rx_queue_event_count: 0, rx_tap_event_count: 3, event_fails: 0 });
    expect(m[0].net_eth1).toMatchObject({ tx_rate_limiter_throttled: 4, rx_fails: 3, tap_write_fails: 0 });
    expect(m[0].net).toMatchObject({ rx_packets_count: 3, rx_fails: 3, tx_rate_limiter_throttled: 4 });
    expect(m[1].net_eth0).toMatchObject({ rx_packets_count: 7, rx_bytes_count: 700, tx_packets_count: 0, tx_busy_poll_count: 0, event_fails: 1 });
    expect(m[1].net_eth1).toMatchObject({ tx_rate_limiter_throttled: 1, rx_fails: 0, tap_write_fails: 1 });
    expect(m[1].net).toMatchObject({ rx_packets_count: 7, event_fails: 1, tx_rate_limiter_throttled: 1, tap_write_fails: 1 });
  });

  it('metrics are flushed periodically while the VM runs (period shortened from 60 s), each line a JSON object', async () => {
    const periodic = join(dir, 'periodic.metrics');
    let fake: FakeVm | undefined;
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)), metricsPeriodMs: 40 }, async (sock) => {
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      await api(sock, 'PUT', '/metrics', { metrics_path: periodic });
      await new Promise((r) => setTimeout(r, 150));
      expect(existsSync(periodic) ? readFileSync(periodic, 'utf8') : '').toBe(''); // nothing before InstanceStart
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      await new Promise((r) => setTimeout(r, 300));
      fake!.end({ reason: 'poweroff', exitCode: 0 });
      await new Promise((r) => setTimeout(r, 20));
    });
    const lines = readFileSync(periodic, 'utf8').trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(Object.keys(JSON.parse(l) as object)).toEqual(expect.arrayContaining(['utc_timestamp_ms', 'api_server', 'block', 'logger', 'put_api_requests']));
  });

  it('PUT /serial: COM1 output goes to the named file instead of stdout', async () => {
    const serialFile = join(dir, 'serial.out');
    const stdout = new (await import('node:stream')).PassThrough();
    let onStdout = '';
    stdout.on('data', (b: Buffer) => (onStdout += b.toString()));
    let fake: FakeVm | undefined;
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)), serialOut: stdout }, async (sock) => {
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      expect(fault(await api(sock, 'PUT', '/serial', { serial_out_path: dir }))).toMatch(/serial: serial_out_path: .* is not a regular file or a named pipe/);
      expect((await api(sock, 'PUT', '/serial', { serial_out_path: serialFile })).status).toBe(204);
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      fake!.serial.push(Buffer.from('boot line 1\nboot line 2\n'));
      await new Promise((r) => setTimeout(r, 20));
      expect(((await api(sock, 'GET', '/vm/config')).json as { serial: unknown }).serial).toEqual({ serial_out_path: serialFile });
    });
    expect(readFileSync(serialFile, 'utf8')).toBe('boot line 1\nboot line 2\n');
    expect(onStdout).toBe('');
  });

  it('PUT /serial rate_limiter: output beyond the bucket is dropped, to the file and to stdout; uart metrics count both', async () => {
    const serialFile = join(dir, 'serial-limited.out');
    const metricsFile = join(dir, 'serial-limited.metrics');
    let fake: FakeVm | undefined;
    const bucket = { size: 10, refill_time: 100_000 }; // 10 bytes, refilled over 100 s: nothing refills during the test
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)) }, async (sock) => {
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      await api(sock, 'PUT', '/metrics', { metrics_path: metricsFile });
      expect(fault(await api(sock, 'PUT', '/serial', { serial_out_path: serialFile, rate_limiter: { size: 10, refill_time: 2 ** 60 } }))).toMatch(/^serial: rate_limiter: /);
      expect((await api(sock, 'PUT', '/serial', { serial_out_path: serialFile, rate_limiter: bucket })).status).toBe(204);
      expect(((await api(sock, 'GET', '/vm/config')).json as { serial: unknown }).serial).toEqual({ serial_out_path: serialFile, rate_limiter: bucket });
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      fake!.serial.push(Buffer.from('0123456'));
      fake!.serial.push(Buffer.from('789abcdef'));
      await new Promise((r) => setTimeout(r, 20));
      expect((await api(sock, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status).toBe(204);
    });
    expect(readFileSync(serialFile, 'utf8')).toBe('0123456789');
    const lines = readFileSync(metricsFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { uart: { write_count: number; missed_write_count: number } });
    expect(lines[0].uart).toEqual({ write_count: 10, missed_write_count: 6 });
    expect(lines.slice(1).every((l) => l.uart.write_count === 0 && l.uart.missed_write_count === 0)).toBe(true);

    const stdout = new (await import('node:stream')).PassThrough();
    let onStdout = '';
    stdout.on('data', (b: Buffer) => (onStdout += b.toString()));
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)), serialOut: stdout }, async (sock) => {
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      expect((await api(sock, 'PUT', '/serial', { rate_limiter: { size: 4, one_time_burst: 2, refill_time: 100_000 } })).status).toBe(204);
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      fake!.serial.push(Buffer.from('abcdefghij'));
      await new Promise((r) => setTimeout(r, 20));
    });
    expect(onStdout).toBe('abcdef');
  });

  it("the VM's host warnings and device failures become log lines", async () => {
    const logFile = join(dir, 'vm-events.log');
    let fake: FakeVm | undefined;
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)) }, async (sock) => {
      await api(sock, 'PUT', '/logger', { log_path: logFile, level: 'Warning', show_level: true, show_log_origin: true });
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      fake!.emit('warning', 'kindling: warning: /dev/kvm is KVM-PVM');
      fake!.emit('device-error', { device: 'blk0', error: new Error('worker exited') });
    });
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
    expect(lines.some((l) => l.endsWith('[anonymous-instance:main:WARN:vmm] kindling: warning: /dev/kvm is KVM-PVM'))).toBe(true);
    expect(lines.some((l) => l.endsWith('[anonymous-instance:main:ERROR:vmm] device blk0 failed: worker exited'))).toBe(true);
    expect(lines.some((l) => l.includes(':INFO:'))).toBe(false); // level Warning: no Info lines
  });

  it('--boot-timer: the VM gets a boot timer and its Guest-boot-time line is logged at Info', async () => {
    const logFile = join(dir, 'boot-timer.log');
    let fake: FakeVm | undefined;
    await withServer({ createVm: async (cfg) => (fake = new FakeVm(cfg)), bootTimer: true }, async (sock) => {
      await api(sock, 'PUT', '/logger', { log_path: logFile, level: 'Info', show_level: true, show_log_origin: true });
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
      expect(fake!.config.bootTimer).toBe(true);
      fake!.emit('boot-time', { wallUs: 123456, cpuUs: 7890 });
    });
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
    expect(lines.filter((l) => l.endsWith('[anonymous-instance:main:INFO:boot_timer] Guest-boot-time = 123456 us 123 ms,   7890 CPU us 7 CPU ms'))).toHaveLength(1);
    let plain: FakeVm | undefined;
    await withServer({ createVm: async (cfg) => (plain = new FakeVm(cfg)) }, async (sock) => {
      await api(sock, 'PUT', '/boot-source', { kernel_image_path: kernel });
      await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    });
    expect(plain!.config.bootTimer).toBeUndefined();
  });

  it.skipIf(HAS_KVM)('a failed InstanceStart undoes onVmStarting (serve: the terminal back to cooked mode) and unpipes the input', async () => {
    const calls: string[] = [];
    const input = new (await import('node:stream')).PassThrough();
    const c = new ApiController({
      vmmVersion: 'x',
      logFallback: () => {},
      serialIn: input,
      onVmStarting: () => {
        calls.push('raw');
        return () => calls.push('cooked');
      },
    });
    expect((await c.handle('PUT', '/boot-source', { kernel_image_path: kernel })).status).toBe(204);
    expect((await c.handle('PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(400);
    expect(calls).toEqual(['raw', 'cooked']);
    expect(input.listenerCount('data')).toBe(0);
    await c.close();
  });
});
