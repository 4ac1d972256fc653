// The native addon's surface (native/kindling.cc). It does only what JavaScript cannot: syscalls and
// ioctls on KVM fds, mmap of guest RAM, eventfds, the vCPU kick signal, positioned I/O into guest RAM.
// Struct layouts are encoded and decoded in TypeScript (src/kvm/structs.ts); the addon checks sizes
// against the kernel headers it was built with and reports them in `structSizes`.
//
// Error contract: a failed syscall/ioctl throws an Error whose `code` is the errno name ('EINVAL', …),
// `errno` the positive errno number and `syscall` the ioctl or syscall name ('KVM_CREATE_VM', 'open', …).
// Message: `<syscall> failed: <strerror> (<code>)`.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface KvmAddon {
  /** sizeof() and offsetof() values from <linux/kvm.h> as compiled, for cross-checking TS layouts. */
  readonly structSizes: Readonly<Record<string, number>>;
  /** Signal number used for vCPU kicks (SIGRTMIN + 0). */
  readonly kickSignal: number;

  // ---- plain fds -------------------------------------------------------------------------------
  /** open(path, O_RDWR|O_CLOEXEC). Throws with syscall 'open'. */
  open(path: string): number;
  /** open(path, flags | O_CLOEXEC, mode) for images; flags is a bitmask of O_* (see `constants`). Throws with syscall 'open'. */
  openFile(path: string, flags: number, mode: number): number;
  /** close(fd). On a VM or vCPU fd this also does what closeVm() does. */
  close(fd: number): void;
  readonly constants: Readonly<Record<string, number>>;

  // ---- system ioctls (on the /dev/kvm fd) ------------------------------------------------------
  getApiVersion(kvmFd: number): number;
  /** KVM_CHECK_EXTENSION on a /dev/kvm or VM fd. */
  checkExtension(fd: number, cap: number): number;
  getVcpuMmapSize(kvmFd: number): number;
  /** KVM_GET_SUPPORTED_CPUID: raw kvm_cpuid_entry2 array, 10 u32 per entry (function, index, flags, eax, ebx, ecx, edx, pad×3). */
  getSupportedCpuid(kvmFd: number): Uint32Array;
  /** KVM_GET_MSR_INDEX_LIST */
  getMsrIndexList(kvmFd: number): Uint32Array;
  /** KVM_CREATE_VM(type) */
  createVm(kvmFd: number, type: number): number;

  // ---- guest RAM -------------------------------------------------------------------------------
  /**
   * mmap(size, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS|MAP_NORESERVE) wrapped as an external
   * SharedArrayBuffer (v8::SharedArrayBuffer::NewBackingStore). The mapping is unmapped only when
   * (a) every JS holder in every isolate has dropped the buffer and (b) every VM fd it was registered
   * with through setUserMemoryRegion has been closed with closeVm(), together with every vCPU fd made
   * from that VM by createVcpu() (vCPU fds keep the kernel's VM, and its memory slots, alive).
   * size must be a positive multiple of the page size (RangeError otherwise).
   */
  allocGuestMemory(size: number): SharedArrayBuffer;
  /** Host virtual address of a SAB's data (for diagnostics and tests only). */
  bufferAddress(buf: SharedArrayBuffer | ArrayBuffer): bigint;
  /** KVM_SET_USER_MEMORY_REGION: slot backed by buf[offset, offset+size). size 0 deletes the slot. */
  setUserMemoryRegion(vmFd: number, slot: number, flags: number, guestPhysAddr: bigint, buf: SharedArrayBuffer, offset: number, size: number): void;
  /**
   * Close a VM fd and release its references on guest-memory mappings (the release takes effect once
   * the VM's vCPU fds are closed too, through close()/closeVm()). Same as close().
   */
  closeVm(vmFd: number): void;

  // ---- VM ioctls -------------------------------------------------------------------------------
  setTssAddr(vmFd: number, addr: number): void;
  setIdentityMapAddr(vmFd: number, addr: bigint): void;
  createIrqchip(vmFd: number): void;
  /** KVM_CREATE_PIT2 with kvm_pit_config.flags */
  createPit2(vmFd: number, flags: number): void;
  /** KVM_IRQ_LINE */
  irqLine(vmFd: number, irq: number, level: number): void;
  /** KVM_IRQFD: flags KVM_IRQFD_FLAG_DEASSIGN (1) / RESAMPLE (2); resampleFd -1 for none. */
  irqfd(vmFd: number, fd: number, gsi: number, flags: number, resampleFd: number): void;
  /** KVM_IOEVENTFD: flags is a bitmask of KVM_IOEVENTFD_FLAG_{DATAMATCH=1,PIO=2,DEASSIGN=4}. */
  ioeventfd(vmFd: number, addr: bigint, len: number, fd: number, flags: number, datamatch: bigint): void;
  /** KVM_GET_CLOCK: raw struct kvm_clock_data (48 bytes). */
  getClock(vmFd: number): Uint8Array;
  /** KVM_SET_CLOCK: raw struct kvm_clock_data (48 bytes). */
  setClock(vmFd: number, data: Uint8Array): void;
  /** KVM_ENABLE_CAP on a VM fd: cap, args[0..3] (at most 4; RangeError otherwise). */
  enableCap(fd: number, cap: number, args: readonly bigint[]): void;

  // ---- vCPU ioctls -----------------------------------------------------------------------------
  createVcpu(vmFd: number, id: number): number;
  /** mmap of the vCPU's struct kvm_run, as an external (non-shared) ArrayBuffer; only the vCPU's own thread uses it. */
  mapRun(vcpuFd: number, size: number): ArrayBuffer;
  /**
   * Register the calling thread as the one that runs this vCPU: records pthread_self() and the kvm_run
   * pointer for kicks. Returns a kick handle usable from any thread: a positive integer below 2^30.
   * Call from the vCPU worker. A thread that exits without unregistering is unregistered automatically.
   */
  registerVcpuThread(vcpuFd: number, run: ArrayBuffer): number;
  /** Forget a kick handle (call from the vCPU worker before it exits). */
  unregisterVcpuThread(handle: number): void;
  /**
   * Kick a vCPU out of KVM_RUN: sets a pending flag and, only on its 0→1 transition, sends SIGRTMIN
   * to the vCPU thread, whose handler sets kvm_run->immediate_exit = 1. Returns true if a signal was sent.
   * A stale or unknown handle returns false.
   */
  kick(handle: number): boolean;
  /** Kick every registered vCPU thread in the process (used on process exit). Returns the number of signals sent. */
  kickAll(): number;
  /**
   * KVM_RUN. Returns 0 on success, or -errno for EINTR/EAGAIN (then immediate_exit and the kick's
   * pending flag are cleared before returning). Other errors throw. `handle` must come from
   * registerVcpuThread on the calling thread (RangeError otherwise). After -EINTR caused by
   * immediate_exit the kernel leaves kvm_run.exit_reason unchanged (stale); after a signal that
   * arrived inside KVM_RUN it is KVM_EXIT_INTR.
   */
  run(vcpuFd: number, handle: number): number;
  /**
   * Benchmark only (C exit loop vs JS exit loop): calls KVM_RUN in a C loop as long as each exit is
   * KVM_EXIT_IO to `port` (either direction; an IN gets zeroes), handling at most `maxExits` of them.
   * Returns `exits`, the number of such exits handled, and, like run(), `result` 0 or -EINTR/-EAGAIN.
   * `exitReason` says why it stopped: the reason of the first other exit (left unhandled in kvm_run
   * for the caller), KVM_EXIT_INTR when result < 0 (kick handled as in run()), or KVM_EXIT_IO when
   * maxExits PIO exits were handled (nothing left to handle).
   */
  benchRunPioLoop(vcpuFd: number, handle: number, port: number, maxExits: number): { exits: number; exitReason: number; result: number };
  /** Raw struct kvm_regs (144 bytes). */
  getRegs(vcpuFd: number): Uint8Array;
  setRegs(vcpuFd: number, data: Uint8Array): void;
  /** Raw struct kvm_sregs (312 bytes). */
  getSregs(vcpuFd: number): Uint8Array;
  setSregs(vcpuFd: number, data: Uint8Array): void;
  /** Raw struct kvm_fpu (416 bytes). */
  getFpu(vcpuFd: number): Uint8Array;
  setFpu(vcpuFd: number, data: Uint8Array): void;
  /** Raw struct kvm_lapic_state (1024 bytes). */
  getLapic(vcpuFd: number): Uint8Array;
  setLapic(vcpuFd: number, data: Uint8Array): void;
  getMpState(vcpuFd: number): number;
  setMpState(vcpuFd: number, state: number): void;
  /** KVM_SET_CPUID2 from raw kvm_cpuid_entry2 array (10 u32 per entry). */
  setCpuid2(vcpuFd: number, entries: Uint32Array): void;
  /** KVM_SET_MSRS: returns the number of MSRs set (the ioctl's return value). */
  setMsrs(vcpuFd: number, indices: Uint32Array, values: BigUint64Array): number;
  /** KVM_GET_MSRS: fills values, returns the number read. */
  getMsrs(vcpuFd: number, indices: Uint32Array, values: BigUint64Array): number;
  /** KVM_TRANSLATE: guest linear → physical; valid false when unmapped. */
  translate(vcpuFd: number, linear: bigint): { physical: bigint; valid: boolean; writeable: boolean; usermode: boolean };

  // ---- eventfd ---------------------------------------------------------------------------------
  /** eventfd(initval, EFD_CLOEXEC | flags); flags may include EFD_NONBLOCK (constants.EFD_NONBLOCK). */
  eventfd(initval: number, flags: number): number;
  /** write(fd, &u64, 8) */
  eventfdWrite(fd: number, value: bigint): void;
  /**
   * read(fd, &u64, 8); returns 0n if the fd is non-blocking and not ready (EAGAIN), or if a signal
   * (e.g. a kick) interrupted a blocking read (EINTR). A successful read is never 0n.
   */
  eventfdRead(fd: number): bigint;

  // ---- waking JS on an fd: uv_poll watchers on the calling thread's own event loop --------------
  /**
   * Watch an eventfd (e.g. a KVM ioeventfd) from the calling thread's libuv loop
   * (napi_get_uv_event_loop; works in any worker_thread). When it becomes readable the addon reads
   * (drains) the counter natively and calls `callback(fd, count)` from that loop through
   * napi_make_callback, so nextTicks and microtasks run after it. Writes that land before the loop
   * turns coalesce into one call whose count is their sum (count is never 0n). Returns a watcher id
   * (a positive integer below 2^30, unique in the process, valid only on the calling thread).
   *
   * - libuv sets O_NONBLOCK on the fd (on its open file description, so for every holder of it).
   * - The watcher is ref'd like a socket: it keeps the thread's event loop alive until unwatch(),
   *   close(fd) or refWatch(id, false).
   * - A callback that throws is reported as an uncaught exception of the thread (a worker's 'error').
   * - If polling fails (e.g. the fd was closed on another thread), the watcher stops and the callback
   *   is called once more with count 0n and a third argument, the error code ('EBADF', …).
   * - At worker teardown (terminate() or exit) every watcher of the thread is stopped and closed by an
   *   env cleanup hook; no callback runs once the thread can no longer run JS.
   * - One watcher per fd per thread: a second watch of the same fd on the same thread throws EEXIST.
   * Throws with syscall 'uv_poll_init' (EBADF, EPERM for a regular file, EEXIST) or 'uv_poll_start'.
   */
  watchEventfd(fd: number, callback: (fd: number, count: bigint, error?: string) => void): number;
  /**
   * Like watchEventfd, for any pollable fd, without reading it: `callback(fd)` runs while the fd is
   * readable (level-triggered), so the callback must consume the readiness, or it is called again on
   * every loop turn. For an eventfd: `eventfdRead(fd)` (the fd is non-blocking once watched, so a
   * spurious or already-drained read returns 0n). On a poll error: callback(fd, undefined, code).
   */
  watchFd(fd: number, callback: (fd: number, count?: undefined, error?: string) => void): number;
  /**
   * Like watchFd for the events in `events` (1 readable, 2 writable; 0 registers the fd without
   * polling it), level-triggered: `callback(fd, ready)` gets the ready mask (0 with an error code on a
   * poll error). setWatchEvents changes the mask cheaply (a device stops polling its host fd for
   * readability while the driver has no receive buffers, and polls for writability only while output is
   * pending). Same rules as watchFd (one watcher per fd per thread).
   */
  watchFdEvents(fd: number, events: number, callback: (fd: number, ready: number, error?: string) => void): number;
  /** Change a watchFdEvents watcher's events (0 stops polling). False for an unknown id. */
  setWatchEvents(id: number, events: number): boolean;
  /**
   * Stop a watcher and release it (uv_close; memory freed in the close callback). No callback runs
   * after unwatch() returns, and the watcher no longer keeps the loop alive. Safe from inside its own
   * callback. Returns false for an unknown id (already unwatched, or another thread's watcher).
   * close(fd) on the watching thread unwatches that fd's watchers first; close a watched fd on
   * another thread only after unwatching it.
   */
  unwatch(id: number): boolean;
  /**
   * ref (default true) / unref a watcher (uv_ref/uv_unref): an unref'd watcher still delivers
   * callbacks but does not keep the thread's event loop alive on its own. Returns false for an
   * unknown id.
   */
  refWatch(id: number, ref?: boolean): boolean;

  // ---- epoll: blocking the calling thread natively ---------------------------------------------
  /** epoll_create1(EPOLL_CLOEXEC). Close with close(). Throws with syscall 'epoll_create1'. */
  epollCreate(): number;
  /**
   * epoll_ctl(EPOLL_CTL_ADD, fd, EPOLLIN or `events` (1 readable, 2 writable, 3 both), level-triggered); `token` (an int32) is what epollWait
   * reports for this fd. With drain = true (eventfds only) epollWait reads the fd's counter itself
   * when given a `counts` array; the addon then sets O_NONBLOCK on the fd so that read never blocks.
   * Throws with syscall 'epoll_ctl' (EEXIST if already added, EPERM for a regular file, EBADF).
   */
  epollAdd(epfd: number, fd: number, token: number, drain?: boolean, events?: number): void;
  /** epoll_ctl(EPOLL_CTL_MOD): new `events` (1 readable, 2 writable, 3 both) and token for an added fd. */
  epollMod(epfd: number, fd: number, token: number, events: number, drain?: boolean): void;
  /** The calling thread's libuv backend fd (readable while libuv has I/O to handle, e.g. a message). */
  loopFd(): number;
  /** After updating the loop's clock: ms until the calling thread's earliest libuv timer is due (0: now; -1: none). */
  loopTimeout(): number;
  /** epoll_ctl(EPOLL_CTL_DEL). Throws with syscall 'epoll_ctl' (ENOENT if not added). */
  epollDel(epfd: number, fd: number): void;
  /**
   * epoll_wait(epfd, max = min(tokens.length, 256), timeoutMs), blocking the calling thread
   * (timeoutMs -1 = forever, 0 = poll). Writes the tokens of the ready fds to tokens[0..n) and returns
   * n: 0 on timeout, and 0 (not a throw) on EINTR, so a signal such as a kick interrupts it. With
   * `counts` (at least tokens.length long), counts[i] is the counter read from the i-th ready fd if it
   * was added with drain = true (0n if it was already drained), else 0n. With `ready`, ready[i] is the
   * i-th fd's readiness: 1 readable, 2 writable (an error or hang-up reports both). A ready fd that is neither
   * drained here nor read by the caller stays ready (level-triggered). Keep a control eventfd in the
   * set to wake a blocked worker; its event loop (timers, postMessage) does not run while it waits.
   */
  epollWait(epfd: number, tokens: Int32Array, timeoutMs: number, counts?: BigUint64Array, ready?: Int32Array): number;

  // ---- benchmark helpers (bench/eventfd-wakeup.mjs) ---------------------------------------------
  /**
   * Benchmark only: `rounds` times write 1n to txFd then block reading rxFd (EINTR retried), in C.
   * Returns the elapsed time in nanoseconds (CLOCK_MONOTONIC). Both fds must be blocking eventfds.
   */
  benchEventfdPingPong(txFd: number, rxFd: number, rounds: number): number;
  /** Benchmark only: `rounds` times block reading rxFd then write 1n to txFd, in C (the C↔C echo side). */
  benchEventfdEcho(rxFd: number, txFd: number, rounds: number): void;

  // ---- positioned I/O straight into guest RAM -------------------------------------------------
  /**
   * preadv(fd, iov, position): iov entries are [buf, offset, length] over guest-RAM buffers (at most
   * constants.IOV_MAX entries; each range must lie inside its buffer, RangeError otherwise). EINTR is
   * retried. Returns bytes read as the syscall returned them (short at EOF).
   */
  preadv(fd: number, iov: ReadonlyArray<readonly [SharedArrayBuffer, number, number]>, position: bigint): number;
  /** pwritev(fd, iov, position). Returns bytes written. */
  pwritev(fd: number, iov: ReadonlyArray<readonly [SharedArrayBuffer, number, number]>, position: bigint): number;
  /**
   * preadv with the iovec packed: `iov` holds `count` triples (index into `buffers`, offset, length);
   * at most 64 buffers. Same checks as preadv (every segment inside its SharedArrayBuffer); no JS object
   * per segment, which is what a 254-segment request's cost was made of.
   */
  preadvPacked(fd: number, buffers: readonly SharedArrayBuffer[], iov: Float64Array, count: number, position: bigint): number;
  /** pwritev with the iovec packed as for preadvPacked. Returns bytes written. */
  pwritevPacked(fd: number, buffers: readonly SharedArrayBuffer[], iov: Float64Array, count: number, position: bigint): number;
  /**
   * readv with the iovec packed as for preadvPacked, on a non-positioned fd (a tap, a socket): bytes
   * read (0 at EOF), or -1 when a non-blocking fd has nothing (EAGAIN). EINTR is retried.
   */
  readvPacked(fd: number, buffers: readonly SharedArrayBuffer[], iov: Float64Array, count: number): number;
  /**
   * Up to `n` readv calls on a message-preserving non-blocking fd (a tap): read i goes into the
   * counts[i] (≤ 64) triples after the previous sets in `iov`, its byte count into lengths[i] (0: that
   * read failed, the frame is gone). Stops at EAGAIN or end of file; returns the number of reads made.
   */
  readvBatch(fd: number, buffers: readonly SharedArrayBuffer[], iov: Float64Array, counts: Uint32Array, n: number, lengths: Float64Array): number;
  /** writev likewise: bytes written (maybe short on a stream), or -1 when the fd is full (EAGAIN). */
  writevPacked(fd: number, buffers: readonly SharedArrayBuffer[], iov: Float64Array, count: number): number;
  fdatasync(fd: number): void;
  /** flock(fd, LOCK_EX|LOCK_NB) → false when another holder has it. */
  tryLockExclusive(fd: number): boolean;
  /** fstat size in bytes (BLKGETSIZE64 for a block device). */
  fileSize(fd: number): bigint;
  /** fallocate(fd, mode, offset, len) (PUNCH_HOLE|KEEP_SIZE = 3, ZERO_RANGE = 16) */
  fallocate(fd: number, mode: number, offset: bigint, len: bigint): void;

  // ---- misc ------------------------------------------------------------------------------------
  /** gettid() of the calling thread. */
  gettid(): number;

  // ---- Unix sockets (vsock.cc) ---------------------------------------------------------------------
  /** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected stream fds. */
  socketpair(): [number, number];
  /** A listening AF_UNIX stream socket bound to `path` (close-on-exec); throws errno errors (EADDRINUSE…). */
  unixListen(path: string, backlog: number): number;

  // ---- vhost-user (vhost-user.cc): SCM_RIGHTS sockets and frontend memory regions -------------------
  /** accept4(SOCK_CLOEXEC | SOCK_NONBLOCK) on a listening socket: the connection fd, or -1 when none is pending. */
  unixAccept(listenFd: number): number;
  /** socket + connect to a Unix stream socket path (close-on-exec, blocking). Throws with syscall 'connect'. */
  unixConnect(path: string): number;
  /**
   * One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of at most `length` bytes into buf[offset..), with
   * room for 8 SCM_RIGHTS fds. n: bytes read, 0 at EOF, -1 for EAGAIN. fds: the fds that came with
   * them (the caller owns them). ctrunc: the kernel dropped fds that did not fit (MSG_CTRUNC).
   */
  vhostRecv(fd: number, buf: Uint8Array, offset: number, length: number): { n: number; fds: number[]; ctrunc: boolean };
  /**
   * sendmsg(MSG_NOSIGNAL) of all of `bytes`, `fds` (at most 8) passed with the first part; waits at
   * most 1 s for room each time the socket is full. false when the peer took nothing for 1 s.
   */
  vhostSend(fd: number, bytes: Uint8Array, fds?: readonly number[]): boolean;
  /**
   * mmap(MAP_SHARED, read/write) of [offset, offset+size) of a regular file or memfd (size 1..2^31),
   * as an external SharedArrayBuffer beginning exactly at `offset`; munmap once every isolate dropped
   * it. Refuses (ENODEV) anything but a regular file and (ENXIO) a file shorter than offset+size.
   * The fd may be closed afterwards.
   */
  mapFdShared(fd: number, offset: number, size: number): SharedArrayBuffer;
  /**
   * Replace a mapFdShared mapping at once by private anonymous zero pages: the file is no longer
   * referenced, stale views read zeros and write nowhere; the range is unmapped when the buffer is
   * collected. false when `sab` is not a live mapFdShared mapping (or was released already).
   */
  releaseFdMapping(sab: SharedArrayBuffer): boolean;
  /** memfd_create(name, MFD_CLOEXEC) of `size` bytes (ftruncate). */
  memfdCreate(name: string, size: number): number;
  /** write(fd, u64 1) to an eventfd or pipe: true when written, false on EAGAIN (a full pipe). */
  notifyFd(fd: number): boolean;

  // ---- terminal job control (tty.cc) -------------------------------------------------------------
  /** getpgrp(): this process's process group id. */
  processGroup(): number;
  /** tcgetpgrp(fd): the foreground process group of the terminal on fd; -1 if fd is not (this process's controlling) terminal. */
  foregroundProcessGroup(fd: number): number;
  /** SIGTTOU and SIGTTIN set to SIG_IGN (terminal access never stops the process); returns whether each already was. */
  ignoreJobControlStops(): { ttou: boolean; ttin: boolean };

  // ---- OFD byte-range locks (lock.cc) -------------------------------------------------------------
  /**
   * fcntl(F_OFD_SETLK): a shared (F_RDLCK) or, when `exclusive`, an exclusive (F_WRLCK) lock on bytes
   * [start, start+len) (len 0 = to the end, however far the file grows). true when taken, false when
   * another open file description holds a conflicting lock (EAGAIN/EACCES); other errors throw
   * (ENOLCK, EBADF, EINVAL on a filesystem without OFD locks…). Released when the fd is closed.
   */
  ofdLock(fd: number, start: number, len: number, exclusive: boolean): boolean;
  /**
   * fcntl(F_OFD_GETLK): null when that lock could be taken now, else the first conflicting lock held
   * by another open file description (pid is -1 for an OFD lock, the owner for a classic POSIX lock).
   */
  ofdTest(fd: number, start: number, len: number, exclusive: boolean): OfdLockInfo | null;
  // ---- tap (tap.cc) ---------------------------------------------------------------------------------
  /**
   * open /dev/net/tun (non-blocking, close-on-exec) and TUNSETIFF `name` as IFF_TAP|IFF_NO_PI|IFF_VNET_HDR
   * (created when missing and permitted), TUNSETVNETHDRSZ 12, TUNSETOFFLOAD 0; the link brought up when
   * down and permitted. Throws with syscall 'open /dev/net/tun' or 'TUNSETIFF' (EPERM, EBUSY, EINVAL).
   */
  tapOpen(name: string): { fd: number; name: string; up: boolean };
  /** TUNSETOFFLOAD with TUN_F_* flags (tapConstants). */
  tapSetOffload(fd: number, flags: number): void;
  readonly tapConstants: { TUNSETOFFLOAD: number; TUN_F_CSUM: number; TUN_F_TSO4: number; TUN_F_TSO6: number; TUN_F_TSO_ECN: number; TUN_F_UFO: number };

  /** Set or clear O_NONBLOCK on an open fd (F_GETFL/F_SETFL). */
  setNonblocking(fd: number, on: boolean): void;

  // ---- seccomp (seccomp.cc; policies in src/seccomp/) -----------------------------------------------
  /**
   * PR_SET_NO_NEW_PRIVS, then seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG [| TSYNC]) with
   * `program` (struct sock_filter[], 8 bytes each). Applies to the calling thread and the threads it
   * creates later; with tsync to every thread of the process. Irrevocable.
   */
  seccompInstall(program: Uint8Array, tsync: boolean): void;
  /** prctl(PR_GET_SECCOMP) of the calling thread: 0 none, 2 filter. */
  seccompMode(): number;
  /** prctl(PR_SET_NAME): the calling thread's comm (15 bytes kept). */
  setThreadName(name: string): void;
  /** unlinkat(dirfd, name, 0); name is one path component. */
  unlinkAt(dirfd: number, name: string): void;
  /** syscall(nr, a0, a1, a2) with numeric arguments: the result, or -errno. For tests of the filters. */
  probeSyscall(nr: number, a0?: number, a1?: number, a2?: number): number;
}

/** A conflicting lock as F_OFD_GETLK reports it. */
export interface OfdLockInfo {
  exclusive: boolean;
  start: number;
  /** 0 = to the end of the file. */
  len: number;
  pid: number;
}

let cached: KvmAddon | undefined;

/** Load native/build/Release/kindling.node (built by `npm install`). */
export function loadAddon(): KvmAddon {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/kvm/addon.js and src/kvm/addon.ts are both two levels below the package root.
  const path = join(here, '..', '..', 'native', 'build', 'Release', 'kindling.node');
  const require = createRequire(import.meta.url);
  try {
    cached = require(path) as KvmAddon;
  } catch (e) {
    const err = new Error(`kindling: native addon not built (${path}); run \`npm install\` first`);
    (err as Error & { code?: string }).code = 'KINDLING_NO_ADDON';
    (err as Error & { cause?: unknown }).cause = e;
    throw err;
  }
  return cached;
}
