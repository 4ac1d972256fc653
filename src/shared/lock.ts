// A mutex living in one Int32 word of a SharedArrayBuffer, usable from every thread that maps the
// buffer (vCPU workers, I/O workers, the main thread).
//
// Word states (Drepper, "Futexes are tricky", mutex #2):
//   0 = unlocked, 1 = locked without waiters, 2 = locked and somebody may be sleeping on the word.
// lock() spins a few times with compareExchange, then marks the word contended and sleeps in
// Atomics.wait. unlock() stores 0 and notifies one sleeper only if the word was contended, so an
// uncontended lock/unlock pair costs two atomic read-modify-writes and no notify.
//
// The mutex is not re-entrant and has no owner: unlocking from a thread that does not hold it
// corrupts it. Atomics.wait works on Node's main thread too, but keep hold times tiny: never block,
// call out to the environment or do I/O while holding one of these.

const UNLOCKED = 0;
const LOCKED = 1;
const CONTENDED = 2;
const SPINS = 64;

export class SabMutex {
  /** Value of an unlocked mutex word (a zero-filled SharedArrayBuffer holds unlocked mutexes). */
  static readonly UNLOCKED: number = UNLOCKED;

  private readonly i32: Int32Array;
  private readonly index: number;

  constructor(i32: Int32Array, index: number) {
    if (!(i32.buffer instanceof SharedArrayBuffer)) throw new TypeError('SabMutex needs an Int32Array over a SharedArrayBuffer');
    if (!Number.isInteger(index) || index < 0 || index >= i32.length) throw new RangeError(`SabMutex index ${index} out of range`);
    this.i32 = i32;
    this.index = index;
  }

  /** Acquire without blocking; true if acquired. */
  tryLock(): boolean {
    return Atomics.compareExchange(this.i32, this.index, UNLOCKED, LOCKED) === UNLOCKED;
  }

  lock(): void {
    const a = this.i32;
    const i = this.index;
    let c = Atomics.compareExchange(a, i, UNLOCKED, LOCKED);
    if (c === UNLOCKED) return;
    for (let n = 0; n < SPINS && c === LOCKED; n++) {
      c = Atomics.compareExchange(a, i, UNLOCKED, LOCKED);
      if (c === UNLOCKED) return;
    }
    // Slow path: announce a waiter (state 2) and sleep until the holder's unlock wakes us.
    if (c !== CONTENDED) c = Atomics.exchange(a, i, CONTENDED);
    while (c !== UNLOCKED) {
      Atomics.wait(a, i, CONTENDED);
      c = Atomics.exchange(a, i, CONTENDED);
    }
  }

  unlock(): void {
    if (Atomics.exchange(this.i32, this.index, UNLOCKED) === CONTENDED) Atomics.notify(this.i32, this.index, 1);
  }

  withLock<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }
}
