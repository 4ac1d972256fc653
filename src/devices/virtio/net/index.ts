// virtio-net (virtio 1.2 §5.1, device id 1): the device type. What the parts do is in backend.ts's
// header; this file is what the registry lists:
//   prepare   main thread: checks the MAC (or derives a stable one), opens the tap (creating it and
//             bringing it up when it does not exist and kindling may) or starts passt on a socketpair;
//             every refusal is one ConfigError line in the user's terms
//   describe  features (MAC, STATUS, MTU, MRG_RXBUF; the tap's offloads), receiveq1/transmitq1, config
//   validateFeatures  the feature dependencies of §5.1.3.1 (TSO needs the matching checksum offload)
//   createBackend  I/O worker: NetBackend over a TapPort or a StreamPort
// release() closes the fd (which ends passt: it serves one connection) and stops passt if it has not.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { delimiter, join } from 'node:path';
import { ConfigError } from '../../../main/config-error.js';
import { shown } from '../../../main/config.js';
import { VIRTIO_ID_NET, featureBit } from '../constants.js';
import type { VirtioDeviceType } from '../device.js';
import type { RateLimiterConfig } from '../../rate-limiter.js';
import {
  NET_CONFIG_SIZE,
  NET_COUNTERS,
  NET_DEFAULT_MTU,
  NET_QUEUE_SIZE,
  NetBackend,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
} from './backend.js';
import { StreamPort } from './passt.js';
import { TapPort } from './tap.js';
import { parseMac, validTapName } from './names.js';

export * from './backend.js';
export * from './names.js';

export type NetOptions = ({ tap: string; passt?: undefined } | { passt: true; tap?: undefined }) & {
  /** The guest's MAC, `aa:bb:cc:dd:ee:ff` (unicast); by default one derived from the backend. */
  mac?: string;
  /** Where the option came from in messages (`net[0]`, `--net`). */
  option?: string;
  rxRate?: RateLimiterConfig;
  txRate?: RateLimiterConfig;
  /** The longest transmit busy-poll window in µs (NET_DEFAULT_POLL_US by default; 0: none). */
  pollUs?: number;
};

export interface NetParams {
  backend: 'tap' | 'passt';
  /** The tap's name, or 'passt'. */
  name: string;
  fd: number;
  mac: Uint8Array;
  mtu: number;
  counters: SharedArrayBuffer;
  rxRate?: RateLimiterConfig;
  txRate?: RateLimiterConfig;
  pollUs?: number;
  /** passt's pid (backend 'passt'), for the process filter of `kindling vhost-user`. */
  passtPid?: number;
}

/** Stable per backend name and its rank among the NICs of this process with that name: 02:4b:4e:xx:xx:xx (locally administered). */
const macRanks = new Map<string, number>();
function derivedMac(name: string): Uint8Array {
  const rank = macRanks.get(name) ?? 0;
  macRanks.set(name, rank + 1);
  const h = createHash('sha256').update(`kindling-net:${name}:${rank}`).digest();
  return Uint8Array.from([0x02, 0x4b, 0x4e, h[0], h[1], h[2]]);
}

export function netConfigSpace(mac: Uint8Array, mtu: number): Uint8Array {
  const b = new Uint8Array(NET_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  b.set(mac, 0);
  v.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
  v.setUint16(8, 1, true); // max_virtqueue_pairs
  v.setUint16(10, mtu, true);
  return b;
}

const TAP_OFFLOADS = [VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6];

export function netDeviceFeatures(backend: NetParams['backend']): bigint {
  let f = featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS) | featureBit(VIRTIO_NET_F_MTU) | featureBit(VIRTIO_NET_F_MRG_RXBUF);
  if (backend === 'tap') for (const b of TAP_OFFLOADS) f |= featureBit(b);
  return f;
}

/** §5.1.3.1: the driver MUST NOT accept a TSO feature without the checksum offload it builds on. */
export function netFeaturesConsistent(f: bigint): boolean {
  const has = (b: number): boolean => (f & featureBit(b)) !== 0n;
  if ((has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6)) && !has(VIRTIO_NET_F_GUEST_CSUM)) return false;
  if ((has(VIRTIO_NET_F_HOST_TSO4) || has(VIRTIO_NET_F_HOST_TSO6)) && !has(VIRTIO_NET_F_CSUM)) return false;
  return true;
}

/** The passt executable on PATH, or undefined. */
export function findPasst(path = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): string | undefined {
  for (const dir of [...path.split(delimiter), '/usr/bin', '/usr/sbin']) {
    if (!dir) continue;
    const p = join(dir, 'passt');
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function tapError(option: string, name: string, e: unknown): ConfigError {
  const code = (e as { code?: string }).code;
  const syscall = (e as { syscall?: string }).syscall ?? '';
  const n = shown(name);
  const why =
    syscall.startsWith('open')
      ? code === 'ENOENT' || code === 'ENODEV'
        ? 'cannot be opened: /dev/net/tun is missing (modprobe tun)'
        : `cannot be opened: /dev/net/tun: ${code ?? (e as Error).message}`
      : code === 'EPERM' || code === 'EACCES'
        ? existsSync(`/sys/class/net/${name}`)
          ? 'is not yours to attach to (create it for your user: ip tuntap add NAME mode tap user $USER)'
          : 'does not exist and creating it needs root or CAP_NET_ADMIN (or: ip tuntap add NAME mode tap user $USER)'
        : code === 'EBUSY'
          ? 'is in use by another process'
          : code === 'EINVAL'
            ? 'is not a tap interface'
            : `cannot be attached (${code ?? (e as Error).message})`;
  return new ConfigError(`${option} tap ${n} ${why.replace('NAME', name)}`, option, `tap ${n} ${why}`);
}

function startPasst(option: string, host: { addon: import('../../../kvm/addon.js').KvmAddon }): { fd: number; child: ChildProcess } {
  const exe = findPasst();
  if (!exe) throw new ConfigError(`${option} passt: the passt program is not installed (apt-get install passt)`, option, 'passt is not installed');
  const [mine, theirs] = host.addon.socketpair();
  let child: ChildProcess;
  try {
    // --fd: serve this connected socket (and exit when it closes); --foreground, so it is our child
    // and stops with us; --quiet: passt logs to syslog or stderr, and only its errors are of use.
    child = spawn(exe, ['--foreground', '--quiet', '--fd', '3'], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
  } catch (e) {
    host.addon.close(mine);
    host.addon.close(theirs);
    throw new ConfigError(`${option} passt could not be started: ${(e as Error).message}`, option);
  }
  host.addon.close(theirs);
  host.addon.setNonblocking(mine, true);
  let err = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (t: string) => {
    if (err.length < 4096) err += t;
  });
  child.on('error', () => undefined);
  child.on('exit', (code, signal) => {
    if (code !== 0 && code !== null) {
      const lines = err.split('\n').filter((l) => l && !l.startsWith('Failed to send'));
      process.stderr.write(`kindling: ${option} passt exited with status ${code}${lines.length ? `: ${lines.slice(-2).join(' / ')}` : ''}\n`);
    }
    void signal;
  });
  child.unref();
  (child.stderr as import('node:net').Socket | null)?.unref();
  return { fd: mine, child };
}

export const netDeviceType: VirtioDeviceType<NetOptions, NetParams> = {
  kind: 'net',
  deviceId: VIRTIO_ID_NET,
  // A NIC wakes per frame batch and per kick: its I/O worker blocks in its own epoll set.
  wakeups: 'epoll',
  prepare(options, host) {
    const option = options.option ?? 'net';
    let mac: Uint8Array | undefined;
    if (options.mac !== undefined) {
      mac = parseMac(options.mac);
      if (!mac) throw ConfigError.about(`${option}.mac`, `must be a unicast MAC address like 02:00:00:00:00:01 (got ${shown(options.mac)})`);
    }
    const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
    // The per-NIC tuning the backend gets: rate limiters and the busy-poll window.
    const tuning = { ...(options.rxRate ? { rxRate: options.rxRate } : {}), ...(options.txRate ? { txRate: options.txRate } : {}), ...(options.pollUs !== undefined ? { pollUs: options.pollUs } : {}) };
    if (options.tap !== undefined) {
      const name = options.tap;
      if (!validTapName(name)) throw ConfigError.about(`${option}.tap`, `must be an interface name of 1 to 15 letters, digits or _.:+- (got ${shown(name)})`);
      let t: { fd: number; name: string; up: boolean };
      try {
        t = host.addon.tapOpen(name);
      } catch (e) {
        throw tapError(option, name, e);
      }
      if (!t.up) process.stderr.write(`kindling: warning: tap ${t.name} is down and kindling may not bring it up (ip link set ${t.name} up)\n`);
      return {
        params: { backend: 'tap', name: t.name, fd: t.fd, mac: mac ?? derivedMac(t.name), mtu: NET_DEFAULT_MTU, counters, ...tuning },
        release: () => host.addon.close(t.fd),
      };
    }
    if (options.passt !== true) throw ConfigError.about(option, 'needs tap NAME or passt');
    const p = startPasst(option, host);
    let released = false;
    return {
      params: { backend: 'passt', name: 'passt', fd: p.fd, mac: mac ?? derivedMac('passt'), mtu: NET_DEFAULT_MTU, counters, ...tuning, ...(p.child.pid !== undefined ? { passtPid: p.child.pid } : {}) },
      release: () => {
        if (released) return;
        released = true;
        host.addon.close(p.fd);
        // passt exits when its socket closes; a passt that does not is stopped.
        if (p.child.exitCode === null && p.child.signalCode === null) {
          const t = setTimeout(() => p.child.kill('SIGKILL'), 2000);
          t.unref();
          p.child.once('exit', () => clearTimeout(t));
          p.child.kill('SIGTERM');
        }
      },
    };
  },
  describe(p) {
    return {
      features: netDeviceFeatures(p.backend),
      queues: [
        { name: 'receiveq1', maxSize: NET_QUEUE_SIZE },
        { name: 'transmitq1', maxSize: NET_QUEUE_SIZE },
      ],
      config: netConfigSpace(p.mac, p.mtu),
    };
  },
  validateFeatures(_p, f) {
    return netFeaturesConsistent(f);
  },
  createBackend(p, env) {
    const port = p.backend === 'tap' ? new TapPort(env.addon, p.fd) : new StreamPort(env.addon, p.fd);
    return new NetBackend({ port, counters: p.counters, mtu: p.mtu, env, rxRate: p.rxRate, txRate: p.txRate, pollUs: p.pollUs });
  },
};
