// `kindling vhost-user --socket PATH --device blk=IMAGE[,ro][,bw=…][,ops=…] | console | rng | vsock=CID[,uds=PATH] | net=tap=NAME|passt[,mac=MAC] [--keep-serving]`: one
// kindling virtio device served as a vhost-user back-end on a Unix socket, for user-mode Linux
// (virtio_uml.device=PATH:ID), Cloud Hypervisor or QEMU (see docs/vhost-user.md).
//
//   parseVhostUserArgs(argv)  pure: argv after `vhost-user` → the command, or a UsageError (exit 2)
//   runVhostUser(cmd)         prepare the device (open and lock the image…), create the socket file
//                             (an existing live socket is refused, a stale one replaced, any other
//                             file refused), serve one frontend until it disconnects (or, with
//                             --keep-serving, every next one), then remove the socket and exit 0.
//                             SIGINT/SIGTERM/SIGHUP end it the same way (the CLI then exits
//                             128+N after one line). console: the guest's hvc0 output
//                             goes to stdout, stdin to the guest. vsock: the very device type and
//                             host side the I/O worker runs (vsock/index.ts prepare binds the UDS,
//                             createBackend wires host.ts: Firecracker's hybrid vsock, host-initiated
//                             `CONNECT <port>\n` → `OK <host port>\n` on the UDS, guest-initiated
//                             connections to CID 2 port P → `<uds>_<P>`); GET_CONFIG gives guest_cid.
//                             The UDS is removed on exit like the vhost-user socket (unlinkat on its
//                             directory, held open from before the filter).
import { lstatSync, unlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError, parseDiskArg, parseNetArg } from './cli-args.js';
import type { RateLimiterConfig } from '../devices/rate-limiter.js';
import { ConfigError } from '../main/config-error.js';
import { quoted } from '../main/config.js';
import { recordSocketInode, releaseSocketFile, removeSocketFile, socketDirFds, socketFile } from '../main/socket-files.js';
import { SECCOMP_MODES, type SeccompMode } from '../seccomp/roles.js';
import { validGuestCid } from '../devices/virtio/vsock/backend.js';

export const VHOST_USER_USAGE = `usage: kindling vhost-user --socket PATH --device DEVICE [--keep-serving] [--seccomp MODE]
  --socket PATH     the Unix socket to listen on (created; removed on exit)
  --device DEVICE   blk=IMAGE[,ro][,bw=SIZE/MS[+BURST]][,ops=SIZE/MS[+BURST]]
                                    a raw image as virtio-blk (locked and rate-limited like --disk)
                    console         virtio-console: guest output on stdout, stdin to the guest
                    rng             virtio-rng from the host CSPRNG
                    vsock=CID[,uds=PATH]  virtio-vsock, guest CID 3..4294967294; with uds, Firecracker's
                                    hybrid vsock on PATH (CONNECT <port>; guest → CID 2 port P is PATH_P)
                    net=tap=NAME[,mac=MAC]  virtio-net on a tap (created and brought up when missing
                                    and permitted; checksum/TSO offloads passed through)
                    net=passt[,mac=MAC]     virtio-net through passt (user-mode networking, no root:
                                    DHCP, DNS, NAT; apt-get install passt)
                                    both take run's --net options after the backend: poll-us=N,
                                    rx-bw= / tx-bw= / rx-ops= / tx-ops=SIZE/MS[+BURST]
  --keep-serving    after a frontend disconnects, wait for the next one (default: exit 0)
  --seccomp MODE    strict (default): once listening, every thread may make only the syscalls
                    serving needs, anything else kills the process; log: allowed but logged by
                    the kernel; off: no filter`;

export type VhostUserDeviceArg =
  | { kind: 'blk'; path: string; readOnly: boolean; rate?: RateLimiterConfig }
  | { kind: 'console' }
  | { kind: 'rng' }
  | { kind: 'vsock'; cid: number; udsPath?: string }
  | ({ kind: 'net' } & import('../main/config.js').NetConfig);

const DEVICE_FORMS = 'blk=IMAGE[,ro][,bw=…][,ops=…], console, rng, vsock=CID[,uds=PATH], net=tap=NAME[,mac=MAC] or net=passt[,mac=MAC]';

/** `net=tap=NAME[,mac=MAC]` or `net=passt[,mac=MAC]` after the `net=` (the same forms as run's --net). */
export function parseNetDeviceArg(v: string): VhostUserDeviceArg {
  return { kind: 'net', ...parseNetArg(v.slice(4), '--device net=') };
}

/** `vsock=CID[,uds=PATH]` after the `vsock=`: a decimal CID in 3..4294967294, PATH any non-empty bytes (commas too) that fit a Unix socket address. */
export function parseVsockDeviceArg(v: string, rest: string): VhostUserDeviceArg {
  const comma = rest.indexOf(',');
  const cidText = comma < 0 ? rest : rest.slice(0, comma);
  if (!/^[0-9]{1,10}$/.test(cidText)) throw new UsageError(`--device vsock=CID needs a decimal CID in 3..4294967294 (got ${quoted(v)})`);
  const cid = Number(cidText);
  if (!validGuestCid(cid)) throw new UsageError(`--device vsock= CID must be in 3..4294967294 (got ${quoted(v)})`);
  if (comma < 0) return { kind: 'vsock', cid };
  const opt = rest.slice(comma + 1);
  if (!opt.startsWith('uds=')) throw new UsageError(`--device vsock=CID takes only ,uds=PATH after the CID (got ${quoted(v)})`);
  const udsPath = opt.slice(4);
  if (udsPath === '') throw new UsageError(`--device vsock=CID,uds= needs a socket path (got ${quoted(v)})`);
  // Guest-initiated connections go to `<uds>_<port>`: leave room for the longest suffix (_4294967295).
  if (Buffer.byteLength(udsPath) > 107 - 11) throw new UsageError(`--device vsock uds path is too long for a Unix socket address with its _<port> suffix (96 bytes at most): ${quoted(udsPath)}`);
  return { kind: 'vsock', cid, udsPath };
}


export interface VhostUserCommand {
  kind: 'vhost-user';
  socket: string;
  device: VhostUserDeviceArg;
  keepServing: boolean;
  seccomp: SeccompMode;
}

export type VhostUserParse = VhostUserCommand | { kind: 'vhost-user-help' };

export function parseDeviceArg(v: string): VhostUserDeviceArg {
  if (v === 'console' || v === 'rng') return { kind: v };
  if (v.startsWith('vsock=')) return parseVsockDeviceArg(v, v.slice(6));
  if (v.startsWith('net=')) return parseNetDeviceArg(v);
  if (v.startsWith('blk=')) return { kind: 'blk', ...parseDiskArg(v.slice(4), '--device blk=') };
  throw new UsageError(`--device must be ${DEVICE_FORMS} (got ${quoted(v)})`);
}

export function parseVhostUserArgs(args: readonly string[]): VhostUserParse {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        socket: { type: 'string' },
        device: { type: 'string' },
        'keep-serving': { type: 'boolean' },
        seccomp: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError(`vhost-user: ${(e as Error).message}`);
  }
  if (values.help) return { kind: 'vhost-user-help' };
  if (values.socket === undefined || values.socket === '') throw new UsageError('vhost-user needs --socket PATH');
  if (Buffer.byteLength(values.socket) > 107) throw new UsageError(`--socket path is longer than a Unix socket address allows (107 bytes): ${quoted(values.socket)}`);
  if (values.device === undefined) throw new UsageError(`vhost-user needs --device ${DEVICE_FORMS}`);
  const seccomp = values.seccomp ?? 'strict';
  if (!(SECCOMP_MODES as readonly string[]).includes(seccomp)) throw new UsageError(`--seccomp must be strict, log or off (got ${quoted(seccomp)})`);
  return { kind: 'vhost-user', socket: values.socket, device: parseDeviceArg(values.device), keepServing: values['keep-serving'] === true, seccomp: seccomp as SeccompMode };
}

/** Serve the device; resolves with the exit status. */
export async function runVhostUser(cmd: VhostUserCommand, onStopper?: (stop: (() => void) | undefined) => void): Promise<number> {
  const { loadAddon } = await import('../kvm/addon.js');
  const { virtioDeviceType } = await import('../devices/virtio/registry.js');
  const { VhostUserDevice, acceptLoop } = await import('../vhost-user/server.js');
  const { installSeccomp } = await import('../seccomp/install.js');
  const addon = loadAddon();
  const log = (level: 'info' | 'warn' | 'error', msg: string): void => {
    if (level !== 'info' || process.env.KINDLING_VHOST_USER_VERBOSE) process.stderr.write(`kindling: ${msg}\n`);
  };

  claimSocketPath(addon, cmd.socket);
  // The socket's directory, held open so that the filtered process can remove the socket on exit
  // (unlinkat on the directories of kindling's own sockets is the only file-system change its filter
  // allows; src/main/socket-files.ts).
  const socket = socketFile(resolve(cmd.socket));
  const type = virtioDeviceType(cmd.device.kind);
  const d = cmd.device;
  const options =
    d.kind === 'blk'
      ? { path: d.path, readOnly: d.readOnly, ...(d.rate ? { rate: d.rate } : {}) }
      : d.kind === 'vsock'
        ? { cid: d.cid, udsPath: d.udsPath }
        : d.kind === 'net'
          ? { tap: d.tap, passt: d.passt, mac: d.mac, rxRate: d.rxRate, txRate: d.txRate, pollUs: d.pollUs, option: '--device net' }
          : {};
  let prepared;
  try {
    prepared = type.prepare(options, { addon });
  } catch (e) {
    releaseSocketFile(socket);
    throw e;
  }
  let listenFd = -1;
  try {
    try {
      listenFd = addon.unixListen(cmd.socket, 4);
      recordSocketInode(socket);
    } catch (e) {
      throw new ConfigError(`cannot listen on --socket ${cmd.socket}: ${(e as Error).message}`);
    }
    addon.setNonblocking(listenFd, true);
    const device = new VhostUserDevice({ name: `vhost-user-${cmd.device.kind}`, type, params: prepared.params, addon, log });
    let consoleHost: { close(): void; send(b: Uint8Array): Promise<void> } | undefined;
    if (cmd.device.kind === 'console') {
      const { ConsoleHost } = await import('../devices/virtio/console/host.js');
      const h = new ConsoleHost(addon, prepared.params as import('../devices/virtio/console/index.js').ConsoleParams, (b) => process.stdout.write(b));
      consoleHost = h;
      process.stdin.on('data', (b: Buffer) => void h.send(b));
      process.stdin.on('error', () => undefined);
      process.stdin.resume();
      process.stdin.unref?.();
    }
    const loop = acceptLoop(addon, listenFd, device, { keepServing: cmd.keepServing, log });
    // The CLI's SignalStop (./signals.ts) owns SIGTERM/SIGHUP/SIGINT when it runs us; alone, the signals end the loop here.
    const onSignal = (): void => loop.stop();
    if (onStopper) onStopper(onSignal);
    else {
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    }
    process.stderr.write(`kindling: vhost-user ${cmd.device.kind} listening on ${cmd.socket}\n`);
    // Everything the process opens is open: from here every thread makes only serving's syscalls.
    // Installed in the same synchronous stretch that set up the accept watcher, so no frontend
    // message is handled before the filter is on.
    const passtPid = d.kind === 'net' ? (prepared.params as import('../devices/virtio/net/index.js').NetParams).passtPid : undefined;
    installSeccomp(
      addon,
      { kind: 'process', devices: [cmd.device.kind], unlinkDirFd: socketDirFds(), ...(passtPid !== undefined ? { childPids: [passtPid] } : {}) },
      cmd.seccomp,
    );
    await loop.done;
    if (onStopper) onStopper(undefined);
    else {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    consoleHost?.close();
    device.close();
  } finally {
    if (listenFd >= 0) addon.close(listenFd);
    removeSocketFile(socket);
    // The hybrid-vsock UDS, if any, goes with the device (removeSocketFile on its directory too).
    prepared.release();
  }
  await new Promise<void>((r) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', r) : r()));
  return 0;
}

/** Refuse a live socket or a non-socket file at `path`; remove a stale socket. */
function claimSocketPath(addon: { unixConnect(path: string): number; close(fd: number): void }, path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new ConfigError(`--socket ${path} exists and is not a socket (refusing to replace it)`);
  let fd = -1;
  try {
    fd = addon.unixConnect(path);
  } catch {
    unlinkSync(path); // nobody listens: a stale socket from an earlier run
    return;
  }
  addon.close(fd);
  throw new ConfigError(`--socket ${path} is in use by a running server`);
}
