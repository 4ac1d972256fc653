// The host side of virtio-vsock, in the device's I/O worker: every host end of a connection is a Node
// stream socket (node:net works in worker threads) behind the muxer's HostStream, so one code path
// serves both ways in:
//
//   Firecracker's hybrid vsock (docs/vsock.md of Firecracker; byte-compatible, so Kata's and
//   firecracker-go-sdk's host code works unchanged):
//     host-initiated   a client connects to `udsPath` and writes `CONNECT <port>\n`; once the guest
//                      accepted, it reads `OK <host port>\n` and the stream is the guest's port. A bad
//                      command, a full table or a guest that refuses (RST) or does not answer within
//                      2 s: the client's connection is closed, nothing written (as Firecracker).
//                      The command is read as Firecracker reads it: up to the first '\n' at or after the
//                      10th byte, at most 32 bytes; words split on white space; "connect" in any case;
//                      a decimal u32 port (a leading '+' allowed). Bytes after the '\n' are stream data.
//     guest-initiated  a guest connection to (CID 2, port P) is a connection to the Unix socket
//                      `<udsPath>_<P>`; if nothing listens there the guest gets RST.
//   The in-process bridge (bridge.ts on the main thread, vm.vsock): a control socketpair carries
//     `C <fd>\n`        main → worker: adopt this stream fd as a client that speaks the CONNECT protocol
//                       above (vm.vsock.connect: one end of a socketpair, the other end is the Duplex)
//     `L <port>\n` / `U <port>\n`  main → worker: vm.vsock listens / stops listening on host port P
//     `A <port> <fd>\n` worker → main: a guest connection to a listened port; fd is the main thread's
//                       end of a fresh socketpair (the worker keeps the other)
//     A port the main thread listens on wins over `<udsPath>_<P>`.
//
// Flow control (see muxer.ts): a guest → host write's callback (flushed into the kernel) advances
// fwd_cnt, so an unread host socket stalls the guest writer after buf_alloc bytes; host → guest, the
// socket is paused while its connection's queue is full. Everything the worker holds is bounded per
// connection; pre-handshake clients are limited to the connection limit and HANDSHAKE_TIMEOUT_MS.
import { closeSync, readSync } from 'node:fs';
import net from 'node:net';
import type { BackendEnv } from '../device.js';
import { CTL_DEV_CTL_TAKEN, CTL_LISTEN_TAKEN, CTL_WORDS, VsockBackend, vsockCounters, type VsockParams } from './backend.js';
import { CLOSE_TIMEOUT_MS, type GuestConnectRequest, type HostStream } from './muxer.js';

/** A client that has not sent its CONNECT line by then is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Firecracker reads at most this many bytes of a CONNECT command. */
export const CONNECT_LINE_MAX = 32;
const CONNECT_LINE_MIN = 10;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Firecracker's CONNECT command at the start of `buf`: the port and the bytes it used, 'more' when the
 * command is not complete yet, 'invalid' when it can never be one.
 */
export function parseConnectLine(buf: Uint8Array): { port: number; consumed: number } | 'more' | 'invalid' {
  let end = -1;
  for (let i = CONNECT_LINE_MIN - 1; i < Math.min(buf.length, CONNECT_LINE_MAX); i++) {
    if (buf[i] === 0x0a) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) {
    if (buf.length < CONNECT_LINE_MAX) return 'more';
    end = CONNECT_LINE_MAX;
  }
  let text: string;
  try {
    text = utf8.decode(buf.subarray(0, end));
  } catch {
    return 'invalid';
  }
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  if (words.length < 2 || words[0].toLowerCase() !== 'connect' || !/^\+?[0-9]+$/.test(words[1])) return 'invalid';
  const port = Number(words[1]);
  if (!Number.isSafeInteger(port) || port > 0xffffffff) return 'invalid';
  return { port, consumed: end };
}

interface HostOptions {
  guarded(fn: () => void): void;
  socketpair(): [number, number];
  log(level: 'info' | 'warn' | 'error', msg: string): void;
  maxConnections?: number;
}

/** A Node socket as the host end of one connection. */
class SocketStream implements HostStream {
  private hostPort = -1;
  private guestPort = -1;

  constructor(
    readonly sock: net.Socket,
    private readonly host: VsockHost,
  ) {}

  /** The connection's ports are known: route the socket's events to the muxer. */
  attach(hostPort: number, guestPort: number): void {
    this.hostPort = hostPort;
    this.guestPort = guestPort;
    const mux = this.host.backend.mux;
    this.sock.on('data', (d: Buffer) => this.host.run(() => mux.hostData(hostPort, guestPort, this, d)));
    this.sock.on('end', () => this.host.run(() => mux.hostEnd(hostPort, guestPort, this)));
    this.sock.on('close', (hadError: boolean) => this.host.run(() => mux.hostClosed(hostPort, guestPort, this, hadError)));
  }

  /** Bytes that arrived with the CONNECT line. */
  early(data: Uint8Array): void {
    if (data.length > 0) this.host.backend.mux.hostData(this.hostPort, this.guestPort, this, data);
  }

  write(data: Uint8Array, done: () => void): void {
    this.sock.write(data, (err) => {
      if (!err) this.host.run(done);
    });
  }

  end(): void {
    this.sock.end();
  }

  pause(): void {
    this.sock.pause();
  }

  resume(): void {
    this.sock.resume();
  }

  close(graceful: boolean): void {
    if (!graceful || this.sock.destroyed) {
      this.sock.destroy();
      return;
    }
    // Flush what the guest wrote, then close; a reader that never drains it loses it after a while.
    const t = setTimeout(() => this.sock.destroy(), CLOSE_TIMEOUT_MS * 5);
    t.unref();
    this.sock.end(() => {
      clearTimeout(t);
      this.sock.destroy();
    });
  }

  established(hostPort: number): void {
    this.sock.write(`OK ${hostPort}\n`);
  }
}

const socketOpts = (fd: number): net.SocketConstructorOpts => ({ fd, readable: true, writable: true, allowHalfOpen: true });

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * The complete lines still unread on the control socket `fd` (non-blocking: libuv set O_NONBLOCK
 * when net.Socket adopted it), after `partial`, the part of a line already read. Read
 * synchronously, once, while tearing down: bounded by the socket's buffer.
 */
export function drainLines(fd: number, partial = ''): string[] {
  let text = partial;
  const buf = Buffer.alloc(4096);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch {
      break; // EAGAIN: nothing more; EBADF: gone
    }
    if (n <= 0) break;
    text += buf.toString('latin1', 0, n);
  }
  const lines = text.split('\n');
  lines.pop(); // an incomplete last line carries no complete fd number
  return lines;
}

export class VsockHost {
  readonly backend: VsockBackend;
  private readonly o: HostOptions;
  private readonly params: VsockParams;
  private server: net.Server | undefined;
  private ctl: net.Socket | undefined;
  /** Host ports the main thread listens on (vm.vsock.listen). */
  private readonly listened = new Set<number>();
  private readonly sockets = new Set<net.Socket>();
  private handshaking = 0;
  private kickScheduled = false;
  private readonly timer: ReturnType<typeof setInterval>;
  private closed = false;
  /** The control socket's partial line. */
  private ctlPending: () => string = () => '';

  constructor(params: VsockParams, o: HostOptions) {
    this.params = params;
    this.o = o;
    this.backend = new VsockBackend({
      guestCid: params.cid,
      counters: vsockCounters(params.control),
      maxConnections: o.maxConnections,
      onGuestConnect: (req) => this.guestConnect(req),
      onClose: () => this.close(),
    });
    const w = new Int32Array(params.control, 0, CTL_WORDS);
    if (params.listenFd >= 0 && Atomics.exchange(w, CTL_LISTEN_TAKEN, 1) === 0) {
      this.server = net.createServer({ allowHalfOpen: true }, (s) => this.client(s));
      this.server.on('error', (e) => o.log('error', `vsock: ${params.udsPath ?? 'listener'}: ${e.message}`));
      this.server.listen({ fd: params.listenFd });
    }
    if (params.devCtlFd >= 0 && Atomics.exchange(w, CTL_DEV_CTL_TAKEN, 1) === 0) {
      const ctl = new net.Socket(socketOpts(params.devCtlFd));
      this.ctl = ctl;
      ctl.unref();
      ctl.on('error', () => {});
      let line = '';
      ctl.setEncoding('latin1');
      ctl.on('data', (d: string) => {
        line += d;
        for (let i = line.indexOf('\n'); i >= 0; i = line.indexOf('\n')) {
          const cmd = line.slice(0, i);
          line = line.slice(i + 1);
          // Not fenced: the listen set and adopting a client touch no queue, and must not be lost
          // while the driver is not up yet.
          this.control(cmd);
        }
        if (line.length > 256) line = '';
      });
      this.ctlPending = () => line;
    }
    this.timer = setInterval(() => this.run(() => this.backend.mux.expire()), 250);
    this.timer.unref();
  }

  /**
   * Run host-side work fenced like a kick, then let the backend fill rx buffers (coalesced). The fence
   * skips the work while the driver has not set DRIVER_OK (or after a reset): returns whether it ran.
   */
  run(fn: () => void): boolean {
    if (this.closed) return false;
    let ran = false;
    this.o.guarded(() => {
      ran = true;
      fn();
    });
    if (!ran || this.kickScheduled) return ran;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      if (!this.closed) this.o.guarded(() => this.backend.hostEvent());
    });
    return true;
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => {});
  }

  private control(cmd: string): void {
    const m = /^([CLU]) (\d+)$/.exec(cmd);
    if (!m) return;
    const n = Number(m[2]);
    if (m[1] === 'C') {
      if (!Number.isSafeInteger(n) || n > 0x7fffffff) return;
      // The fd is this thread's from here on: a closed host closes it (the bridge's end then ends).
      if (this.closed) return closeFd(n);
      this.client(new net.Socket(socketOpts(n)));
    } else if (n <= 0xffffffff) {
      if (m[1] === 'L') this.listened.add(n);
      else this.listened.delete(n);
    }
  }

  /** A host client (Unix socket or bridge): read its CONNECT command, then ask the guest. */
  private client(s: net.Socket): void {
    this.track(s);
    if (this.closed || this.handshaking + this.backend.mux.size >= this.backend.mux.maxConnections) {
      s.destroy();
      return;
    }
    this.handshaking++;
    let done = false;
    let buf: Buffer = Buffer.alloc(0);
    const finish = (): void => {
      done = true;
      this.handshaking--;
      clearTimeout(timer);
      s.off('data', onData);
      s.off('end', onEnd);
      s.pause();
    };
    const timer = setTimeout(() => {
      if (!done) {
        finish();
        s.destroy();
      }
    }, HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    const onEnd = (): void => {
      if (!done) {
        finish();
        s.destroy();
      }
    };
    const onData = (d: Buffer): void => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      const r = parseConnectLine(buf);
      if (r === 'more') return;
      finish();
      if (r === 'invalid') {
        s.destroy();
        return;
      }
      const ran = this.run(() => {
        const st = new SocketStream(s, this);
        const hostPort = this.backend.mux.connectToGuest(r.port, st);
        if (hostPort === undefined) {
          s.destroy();
          return;
        }
        st.attach(hostPort, r.port);
        st.early(buf.subarray(r.consumed));
        s.resume();
      });
      // No driver (yet): refused, as a guest that does not answer would be.
      if (!ran) s.destroy();
    };
    s.on('data', onData);
    s.on('end', onEnd);
  }

  /** A guest REQUEST: the main thread's listener, else `<udsPath>_<port>`, else RST. */
  private guestConnect(req: GuestConnectRequest): void {
    if (this.closed) return req.refuse();
    if (this.listened.has(req.hostPort) && this.ctl) {
      let pair: [number, number];
      try {
        pair = this.o.socketpair();
      } catch (e) {
        this.o.log('warn', `vsock: socketpair: ${(e as Error).message}`);
        return req.refuse();
      }
      const s = new net.Socket(socketOpts(pair[0]));
      this.track(s);
      this.ctl.write(`A ${req.hostPort} ${pair[1]}\n`);
      const st = new SocketStream(s, this);
      if (req.accept(st)) st.attach(req.hostPort, req.guestPort);
      return;
    }
    if (this.params.udsPath === undefined) return req.refuse();
    const s = net.connect({ path: `${this.params.udsPath}_${req.hostPort}`, allowHalfOpen: true });
    this.track(s);
    let connected = false;
    s.once('connect', () => {
      connected = true;
      const ran = this.run(() => {
        const st = new SocketStream(s, this);
        if (req.accept(st)) st.attach(req.hostPort, req.guestPort);
      });
      if (!ran) s.destroy(); // the device was reset meanwhile: the request is gone
    });
    s.once('close', () => {
      if (!connected) this.run(() => req.refuse());
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.server?.close();
    if (this.ctl) {
      // `C <fd>` lines the main thread wrote that this thread has not read yet: each names an fd
      // that is now ours alone (the bridge handed it over), so read them out and close those fds
      // rather than leak them. The main thread writes no more once the VM is stopping (bridge.ts).
      for (const cmd of drainLines(this.params.devCtlFd, this.ctlPending())) this.control(cmd);
      this.ctl.destroy();
    }
    for (const s of [...this.sockets]) s.destroy();
    this.sockets.clear();
  }
}

/** The device's backend with its host side, as the I/O worker creates it. */
export function createVsockHostBackend(params: VsockParams, env: Pick<BackendEnv, 'addon' | 'guarded' | 'log'>): VsockBackend {
  return new VsockHost(params, { guarded: env.guarded, socketpair: () => env.addon.socketpair(), log: env.log }).backend;
}
