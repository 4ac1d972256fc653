// A vhost-user back-end process's socket side: the listening Unix socket, one frontend connection at
// a time, messages read with the addon's recvmsg (SCM_RIGHTS fds) and answered with sendmsg, handed to
// a VhostUserSession (backend.ts). Everything runs on the calling thread's event loop (the main thread
// of `kindling vhost-user`): the process serves one device, so its main thread *is* its I/O thread —
// an I/O worker would add a postMessage hop for every control message and buy nothing, since no VM
// (no vCPU, no console multiplexing) shares the loop. The connection fd, the kick fds and the
// backend's host fds are uv_poll watchers (addon.watchFd / watchEventfd).
//
// Framing errors (protocol.ts), a truncated control message (MSG_CTRUNC: fds were lost), a refused
// GET_* and unsupported requests close the connection; the session then releases its fds and
// mappings and the backend is reset, ready for the next frontend.
import type { KvmAddon } from '../kvm/addon.js';
import { addonFdPoll, type AnyVirtioDeviceType, type BackendEnv, type VirtioDeviceBackend } from '../devices/virtio/device.js';
import { createTransportStats } from '../devices/virtio/queue-service.js';
import { CloseConnection, VhostUserSession, type SessionHost } from './backend.js';
import { MAX_FDS, MessageReader, VhostUserError } from './protocol.js';

type Addon = Pick<
  KvmAddon,
  'vhostRecv' | 'vhostSend' | 'mapFdShared' | 'releaseFdMapping' | 'notifyFd' | 'close' | 'watchFd' | 'watchEventfd' | 'unwatch' | 'unixAccept' | 'watchFdEvents' | 'setWatchEvents'
>;

export interface DeviceServerOptions {
  name: string;
  type: AnyVirtioDeviceType;
  params: unknown;
  addon: Addon;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
}

/**
 * One device (its backend created once) served to successive frontend connections. `serve(fd)` takes
 * a connected socket fd and resolves when that frontend has gone (the fd is then closed).
 */
export class VhostUserDevice {
  readonly backend: VirtioDeviceBackend;
  readonly stats = createTransportStats();
  private readonly o: DeviceServerOptions;
  private session: VhostUserSession | undefined;

  constructor(opts: DeviceServerOptions) {
    this.o = opts;
    const a = opts.addon;
    const watch = (fd: number, eventfd: boolean, onReady: () => void): (() => void) => {
      const id = (eventfd ? a.watchEventfd : a.watchFd)(fd, (_fd: number, _c?: bigint, error?: string) => {
        if (error) opts.log('error', `${opts.name}: fd watch failed (${error})`);
        else this.guarded(onReady);
      });
      return () => void a.unwatch(id);
    };
    const env: BackendEnv = {
      addon: a as KvmAddon,
      watchFd: (fd, onReady) => watch(fd, false, onReady),
      watchEventfd: (fd, onReady) => watch(fd, true, onReady),
      pollFd: (fd, events, onReady) =>
        addonFdPoll(a, fd, events, onReady, (fn) => this.guarded(fn), (error) => opts.log('error', `${opts.name}: fd watch failed (${error})`)),
      log: (level, msg) => opts.log(level, `${opts.name}: ${msg}`),
      guarded: (fn) => this.guarded(fn),
    };
    this.backend = opts.type.createBackend(opts.params, env);
  }

  /** Whether a frontend is connected. */
  get busy(): boolean {
    return this.session !== undefined;
  }

  private guarded(fn: () => void): void {
    this.session?.guarded(fn);
  }

  /** Serve one connected frontend until it disconnects (or breaks the protocol). */
  serve(fd: number): Promise<void> {
    if (this.session) throw new Error('vhost-user: already serving a frontend');
    const a = this.o.addon;
    const host: SessionHost = {
      mapFdShared: (f, off, size) => a.mapFdShared(f, off, size),
      releaseFdMapping: (sab) => a.releaseFdMapping(sab),
      close: (f) => a.close(f),
      notifyFd: (f) => a.notifyFd(f),
      watchKick: (f, onKick) => {
        const id = a.watchEventfd(f, (_fd: number, _c: bigint, error?: string) => {
          // Not an eventfd after all (a read of other than 8 bytes) or a dead fd: the watch has
          // stopped (reported once); the ring gets no more kicks until a new SET_VRING_KICK.
          if (error) {
            this.o.log('warn', `${this.o.name}: a kick fd cannot be read (${error}); its ring waits for a new SET_VRING_KICK`);
            return;
          }
          // The session catches everything itself (kick() never throws); this is the last line
          // before an exception would escape the event loop's callback and end the process.
          try {
            onKick();
          } catch (e) {
            this.o.log('error', `${this.o.name}: a kick failed: ${(e as Error).message}`);
          }
        });
        return () => void a.unwatch(id);
      },
    };
    const session = new VhostUserSession({ name: this.o.name, type: this.o.type, params: this.o.params, backend: this.backend, host, stats: this.stats, log: this.o.log });
    this.session = session;
    const reader = new MessageReader();
    const buf = new Uint8Array(0x2000);
    return new Promise<void>((resolve) => {
      let done = false;
      let watchId = 0;
      const finish = (why: string | undefined): void => {
        if (done) return;
        done = true;
        if (why) this.o.log('warn', `${this.o.name}: closing the connection: ${why}`);
        a.unwatch(watchId);
        for (const f of reader.pendingFds()) host.close(f);
        try {
          session.close();
        } finally {
          this.session = undefined;
          try {
            a.close(fd);
          } catch {
            // already closed
          }
          resolve();
        }
      };
      const onReadable = (): void => {
        try {
          for (let i = 0; i < 64 && !done; i++) {
            const want = reader.want();
            const r = a.vhostRecv(fd, buf, 0, Math.min(want, buf.length));
            if (r.n < 0) return; // EAGAIN: wait for the next readiness
            if (r.n === 0) {
              for (const f of r.fds) host.close(f);
              finish(undefined);
              return;
            }
            if (r.ctrunc) {
              for (const f of r.fds) host.close(f);
              finish(`more than ${MAX_FDS} fds in one message`);
              return;
            }
            const res = reader.push(buf.subarray(0, r.n), r.fds);
            if (!res) continue;
            if (res.kind === 'error') {
              for (const f of res.fds) host.close(f);
              finish(res.reason);
              return;
            }
            const reply = session.handle(res.message);
            if (reply && !a.vhostSend(fd, reply)) {
              finish('the frontend does not read its replies');
              return;
            }
          }
        } catch (e) {
          if (e instanceof CloseConnection || e instanceof VhostUserError) finish(e.message);
          else finish(`connection error: ${(e as Error).message}`);
        }
      };
      watchId = a.watchFd(fd, (_fd: number, _c?: undefined, error?: string) => {
        if (error) finish(`socket poll failed (${error})`);
        else onReadable();
      });
    });
  }

  /** The process is ending: close the backend. */
  close(): void {
    this.backend.close?.();
  }
}

/**
 * Accept frontends on a listening socket: each is served in turn; one that connects while another is
 * served is closed at once. Resolves after the first frontend has gone, unless keepServing.
 */
export function acceptLoop(
  addon: Addon,
  listenFd: number,
  device: VhostUserDevice,
  opts: { keepServing: boolean; log: (level: 'info' | 'warn' | 'error', msg: string) => void },
): { done: Promise<void>; stop: () => void } {
  let stopped = false;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  const id = addon.watchFd(listenFd, () => {
    for (;;) {
      const fd = addon.unixAccept(listenFd);
      if (fd < 0) return;
      if (stopped || device.busy) {
        addon.close(fd);
        continue;
      }
      opts.log('info', 'vhost-user: frontend connected');
      void device.serve(fd).then(() => {
        opts.log('info', 'vhost-user: frontend disconnected');
        if (!opts.keepServing) stop();
      });
    }
  });
  function stop(): void {
    if (stopped) return;
    stopped = true;
    addon.unwatch(id);
    resolveDone();
  }
  return { done, stop };
}
