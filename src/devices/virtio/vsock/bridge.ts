// The main-thread end of virtio-vsock's in-process bridge: vm.vsock. No socket files: every connection
// is a socketpair (native/vsock.cc); the I/O worker gets one end over the control socketpair (protocol
// in host.ts) and serves it exactly like a Firecracker client on udsPath, so the bridge speaks the same
// `CONNECT <port>\n` / `OK <host port>\n` handshake on its end before handing the Duplex out.
//
//   connect(port)            → Promise<net.Socket>: resolves once the guest accepted (its listener on
//                               `port` answered RESPONSE); rejects with one line if the guest refused
//                               (RST, nobody listening), did not answer in time, or the VM went away
//   listen(port, onSocket)   guest connections to (CID 2, port) arrive as net.Sockets; returns a handle
//                            whose close() stops listening (connections already made stay)
// The sockets are ordinary Node Duplexes with back-pressure: an unread socket stalls the guest's writer
// (credit flow control in muxer.ts), a guest that does not read makes write() return false.
//
// Fd ownership across the control socketpair (fd numbers, not SCM_RIGHTS: both threads share one fd
// table): an fd named in a `C`/`A` line belongs to the reader from the moment it is written, so a
// line that is never read would leak its fd. Teardown is therefore ordered: close() (the VM is
// stopping, before its I/O workers are told to stop) writes no more `C` lines and closes every `A`
// fd that still arrives; the worker's VsockHost.close() reads out the `C` lines it has not seen and
// closes their fds; dispose() (after the workers exited) reads out the `A` lines this thread has not
// seen and closes their fds, and does the worker's part too if no worker ever took its end.
import { closeSync } from 'node:fs';
import net from 'node:net';
import type { KvmAddon } from '../../../kvm/addon.js';
import { CTL_DEV_CTL_TAKEN, CTL_HOST_CTL_TAKEN, CTL_WORDS, type VsockParams } from './backend.js';
import { drainLines } from './host.js';

export interface VsockListener {
  close(): void;
}

/** vm.vsock. */
export interface VsockApi {
  connect(port: number): Promise<net.Socket>;
  listen(port: number, onSocket: (socket: net.Socket) => void): VsockListener;
}

const isPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 0xffffffff;
const socketOpts = (fd: number): net.SocketConstructorOpts => ({ fd, readable: true, writable: true, allowHalfOpen: true });

export class VsockBridge implements VsockApi {
  private ctl: net.Socket | undefined;
  private readonly listeners = new Map<number, (s: net.Socket) => void>();
  private readonly pending = new Set<net.Socket>();
  /** Sockets handed out (connected or accepted) and not yet closed: ended by dispose(). */
  private readonly live = new Set<net.Socket>();
  private closed = false;

  constructor(
    private readonly addon: Pick<KvmAddon, 'socketpair'>,
    private readonly params: VsockParams,
  ) {}

  private control(): net.Socket {
    if (this.ctl) return this.ctl;
    if (this.closed) throw new Error('vsock: the VM has stopped');
    if (Atomics.exchange(new Int32Array(this.params.control, 0, CTL_WORDS), CTL_HOST_CTL_TAKEN, 1) !== 0) throw new Error('vsock: the device is gone');
    const ctl = new net.Socket(socketOpts(this.params.hostCtlFd));
    ctl.unref(); // the bridge alone never keeps the process alive
    ctl.on('error', () => {});
    ctl.setEncoding('latin1');
    let line = '';
    ctl.on('data', (d: string) => {
      line += d;
      for (let i = line.indexOf('\n'); i >= 0; i = line.indexOf('\n')) {
        const m = /^A (\d+) (\d+)$/.exec(line.slice(0, i));
        line = line.slice(i + 1);
        if (m) this.incoming(Number(m[1]), Number(m[2]));
      }
      if (line.length > 256) line = '';
    });
    this.ctlPending = () => line;
    this.ctl = ctl;
    return ctl;
  }

  private ctlPending: () => string = () => '';

  private incoming(port: number, fd: number): void {
    const s = new net.Socket(socketOpts(fd));
    const h = this.listeners.get(port);
    if (!h || this.closed) {
      s.destroy();
      return;
    }
    this.handOut(s);
    h(s);
  }

  private handOut(s: net.Socket): void {
    this.live.add(s);
    s.once('close', () => this.live.delete(s));
  }

  connect(port: number): Promise<net.Socket> {
    if (!isPort(port)) return Promise.reject(new RangeError(`vsock: port ${String(port)} is not in 0..4294967295`));
    let ctl: net.Socket;
    try {
      ctl = this.control();
    } catch (e) {
      return Promise.reject(e as Error);
    }
    const [mine, theirs] = this.addon.socketpair();
    ctl.write(`C ${theirs}\n`);
    const s = new net.Socket(socketOpts(mine));
    this.pending.add(s);
    s.write(`CONNECT ${port}\n`);
    return new Promise((resolve, reject) => {
      // Read the reply in paused mode ('readable'), so that once our listener is gone the socket is
      // neither flowing nor paused: the caller's first on('data') or pipe() starts it, nothing is lost.
      let buf = Buffer.alloc(0);
      const fail = (): void => {
        cleanup();
        s.destroy();
        reject(new Error(`vsock: guest port ${port} refused the connection`));
      };
      const cleanup = (): void => {
        this.pending.delete(s);
        s.off('readable', onReadable);
        s.off('close', fail);
        s.off('end', fail);
      };
      const onReadable = (): void => {
        for (let d = s.read() as Buffer | null; d !== null; d = s.read() as Buffer | null) {
          buf = Buffer.concat([buf, d]);
          const nl = buf.indexOf(0x0a);
          if (nl < 0) {
            if (buf.length > 32) return fail();
            continue;
          }
          if (!/^OK \d+$/.test(buf.subarray(0, nl).toString('latin1'))) return fail();
          cleanup();
          const rest = buf.subarray(nl + 1);
          if (rest.length > 0) s.unshift(rest);
          this.handOut(s);
          resolve(s);
          return;
        }
      };
      s.on('readable', onReadable);
      s.on('end', fail);
      s.on('close', fail);
      s.on('error', () => {});
    });
  }

  listen(port: number, onSocket: (socket: net.Socket) => void): VsockListener {
    if (!isPort(port)) throw new RangeError(`vsock: port ${String(port)} is not in 0..4294967295`);
    if (this.listeners.has(port)) throw new Error(`vsock: port ${port} is already listened on`);
    const ctl = this.control();
    this.listeners.set(port, onSocket);
    ctl.write(`L ${port}\n`);
    let open = true;
    return {
      close: () => {
        if (!open) return;
        open = false;
        if (this.listeners.get(port) === onSocket) this.listeners.delete(port);
        if (!this.closed) ctl.write(`U ${port}\n`);
      },
    };
  }

  /**
   * The VM is stopping: pending connects fail, no new ones are made, guest connections still
   * announced are closed; established sockets see their end when the device closes its side. The
   * control socket stays open (for those announcements) until dispose().
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    for (const s of [...this.pending]) s.destroy();
  }

  /**
   * The device's I/O worker has exited: close every fd still named in an unread control line, and end
   * this side of every socket handed out. They are half-open (allowHalfOpen: a guest's SHUTDOWN of
   * one direction must not close the other), so the device closing its end alone leaves them open;
   * ending ours closes each one once its reader has taken what the guest sent before the stop.
   */
  dispose(): void {
    this.close();
    for (const s of this.live) {
      s.on('error', () => {});
      s.end();
    }
    if (this.ctl) {
      for (const l of drainLines(this.params.hostCtlFd, this.ctlPending())) {
        const m = /^A \d+ (\d+)$/.exec(l);
        if (m) closeFd(Number(m[1]));
      }
      this.ctl.destroy();
      // No worker ever served the device (a start that failed): its `C` lines are ours to close.
      if (Atomics.exchange(new Int32Array(this.params.control, 0, CTL_WORDS), CTL_DEV_CTL_TAKEN, 1) === 0) {
        for (const l of drainLines(this.params.devCtlFd)) {
          const m = /^C (\d+)$/.exec(l);
          if (m) closeFd(Number(m[1]));
        }
        closeFd(this.params.devCtlFd);
      }
    }
  }
}

function closeFd(fd: number): void {
  if (!Number.isSafeInteger(fd) || fd < 0 || fd > 0x7fffffff) return;
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * vm.vsock before and after the device exists: listen() before start() is applied once the device is
 * placed, connect() before start() waits for it; after the VM stopped both fail with one line.
 */
export class DeferredVsock implements VsockApi {
  private bridge: VsockBridge | undefined;
  private readonly early = new Map<number, { onSocket: (s: net.Socket) => void; handle?: VsockListener }>();
  private readonly waiting: Array<{ port: number; resolve: (s: net.Socket) => void; reject: (e: Error) => void }> = [];
  private closed = false;

  /** The device is placed: hand everything over to its bridge. */
  attach(bridge: VsockBridge): void {
    if (this.closed) return;
    this.bridge = bridge;
    for (const [port, e] of this.early) e.handle = bridge.listen(port, e.onSocket);
    for (const w of this.waiting.splice(0)) bridge.connect(w.port).then(w.resolve, w.reject);
  }

  connect(port: number): Promise<net.Socket> {
    if (this.closed) return Promise.reject(new Error('vsock: the VM has stopped'));
    if (this.bridge) return this.bridge.connect(port);
    if (!isPort(port)) return Promise.reject(new RangeError(`vsock: port ${String(port)} is not in 0..4294967295`));
    return new Promise((resolve, reject) => this.waiting.push({ port, resolve, reject }));
  }

  listen(port: number, onSocket: (socket: net.Socket) => void): VsockListener {
    if (this.closed) throw new Error('vsock: the VM has stopped');
    if (this.bridge) return this.bridge.listen(port, onSocket);
    if (!isPort(port)) throw new RangeError(`vsock: port ${String(port)} is not in 0..4294967295`);
    if (this.early.has(port)) throw new Error(`vsock: port ${port} is already listened on`);
    const entry: { onSocket: (s: net.Socket) => void; handle?: VsockListener } = { onSocket };
    this.early.set(port, entry);
    return {
      close: () => {
        if (this.early.get(port) === entry) this.early.delete(port);
        entry.handle?.close();
      },
    };
  }

  /** The VM is stopping (or stopped): nothing new is connected or accepted. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiting.splice(0)) w.reject(new Error('vsock: the VM has stopped'));
    this.early.clear();
    this.bridge?.close();
  }

  /** The device's I/O worker has exited (see VsockBridge.dispose()). */
  dispose(): void {
    this.close();
    this.bridge?.dispose();
  }
}
