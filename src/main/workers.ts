// Starting worker threads (from the main thread): the vCPU workers (src/vcpu-worker/worker.ts) and the I/O workers
// (src/io-worker/worker.ts), with the parent's Node flags minus the ones a worker refuses.
//
// A worker takes ~35 ms to boot its isolate and load its modules, which is the longest step between
// `kindling run` and the first KVM_RUN. A process that knows early how many vCPUs it will run (the
// CLI, right after parsing argv) can prespawn them so that boot overlaps its own module loading;
// VM.start() then takes those workers instead of starting new ones (the same for the I/O workers,
// by device name: virtioDevicePlan in config.ts gives the names in placement order). A prespawned worker idles until
// it receives its VcpuWorkerData, does not keep the process alive, and is replaced by a fresh one if
// it died before being taken.
import { Worker } from 'node:worker_threads';
import { freshBundle } from './bundle.js';

const VCPU_WORKER = freshBundle(new URL('../vcpu-worker/worker.js', import.meta.url));
const IO_WORKER = freshBundle(new URL('../io-worker/worker.js', import.meta.url));

const MAIN_ONLY_FLAGS = /^(--input-type|--eval|-e|--print|-p|--test|--watch|--check|-c|--interactive|-i)(=|$)/;
/** Process-wide V8/Node options a Worker refuses in an explicit execArgv (they apply to it anyway). */
const PER_PROCESS_FLAGS = /^--(expose[-_]gc|max[-_]old[-_]space[-_]size|max[-_]semi[-_]space[-_]size|stack[-_]size|title)(=|$)/;

/** undefined (inherit the parent's flags) unless some of them would break a worker. */
function workerExecArgv(): string[] | undefined {
  if (!process.execArgv.some((a) => MAIN_ONLY_FLAGS.test(a))) return undefined;
  return process.execArgv.filter((a) => !MAIN_ONLY_FLAGS.test(a) && !PER_PROCESS_FLAGS.test(a));
}

interface Prespawned {
  worker: Worker;
  dead: boolean;
  died: () => void;
}

/**
 * Prespawned workers by key. Until a VM takes one, an error or exit only marks it: take() then starts
 * a fresh one. A prespawned worker is unref'd (it does not keep the process alive) until taken.
 */
class WorkerPool<K> {
  private readonly entries = new Map<K, Prespawned>();
  constructor(private readonly spawn: (key: K) => Worker) {}

  prespawn(key: K): void {
    if (this.entries.has(key)) return;
    const entry: Prespawned = {
      worker: this.spawn(key),
      dead: false,
      died: () => {
        entry.dead = true;
      },
    };
    entry.worker.once('error', entry.died);
    entry.worker.once('exit', entry.died);
    entry.worker.unref();
    this.entries.set(key, entry);
  }

  take(key: K): Worker {
    const entry = this.entries.get(key);
    this.entries.delete(key);
    if (entry === undefined) return this.spawn(key);
    entry.worker.off('error', entry.died);
    entry.worker.off('exit', entry.died);
    if (entry.dead) return this.spawn(key);
    entry.worker.ref();
    return entry.worker;
  }

  get size(): number {
    return this.entries.size;
  }

  discard(): void {
    for (const { worker } of this.entries.values()) void worker.terminate();
    this.entries.clear();
  }
}

const loadedWorkers = new WeakMap<Worker, Promise<void>>();

/** Track the worker's `{ type: 'loaded' }` message (posted once its modules are in; see workerLoaded). */
function tracked(w: Worker): Worker {
  loadedWorkers.set(
    w,
    new Promise<void>((resolve) => {
      const done = (): void => {
        w.off('message', onMessage);
        resolve();
      };
      const onMessage = (m: unknown): void => {
        if ((m as { type?: unknown } | null)?.type === 'loaded') done();
      };
      w.on('message', onMessage);
      w.once('exit', done);
      w.once('error', done);
    }),
  );
  return w;
}

/**
 * Resolves once the worker has loaded its modules (or has died): it opens no file after that, so a
 * process-wide seccomp filter (VMConfig.seccompThreads 'all') can be installed without breaking it.
 */
export function workerLoaded(w: Worker): Promise<void> {
  return loadedWorkers.get(w) ?? Promise.resolve();
}

function newVcpuWorker(id: number): Worker {
  return tracked(new Worker(VCPU_WORKER, { name: `vcpu${id}`, execArgv: workerExecArgv() }));
}

export function newIoWorker(name: string): Worker {
  return tracked(new Worker(IO_WORKER, { name, execArgv: workerExecArgv() }));
}

/** Prespawned vCPU workers, by vCPU id; prespawned I/O workers, by device name. */
const vcpuPool = new WorkerPool<number>(newVcpuWorker);
const ioPool = new WorkerPool<string>(newIoWorker);

/** Start the workers for vCPUs 0..count-1 now; the next VM.start() with that many vCPUs or fewer takes them. */
export function prespawnVcpuWorkers(count: number): void {
  for (let id = 0; id < count; id++) vcpuPool.prespawn(id);
}

/** The worker for vCPU `id`: the prespawned one if it is alive, otherwise a new one. */
export function takeVcpuWorker(id: number): Worker {
  return vcpuPool.take(id);
}

/** How many prespawned vCPU workers are waiting to be taken. */
export function prespawnedVcpuWorkers(): number {
  return vcpuPool.size;
}

/** Start the I/O workers for these device names now (the CLI does, right after parsing argv). */
export function prespawnIoWorkers(names: readonly string[]): void {
  for (const name of names) ioPool.prespawn(name);
}

/** The I/O worker for device `name`: the prespawned one if it is alive, otherwise a new one. */
export function takeIoWorker(name: string): Worker {
  return ioPool.take(name);
}

/** Terminate prespawned workers no VM took (e.g. the CLI failed before starting the VM). */
export function discardPrespawnedWorkers(): void {
  vcpuPool.discard();
  ioPool.discard();
}
