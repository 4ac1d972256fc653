// 16550A UART (COM1 at 0x3F8, IRQ 4), modelled closely enough for Linux's 8250 driver (autoconfig
// identifies it as a 16550A) and for simple polled guests.
//
// All device state lives in a SharedArrayBuffer so that every vCPU worker (and the main thread, which
// feeds console input through receive()) can build its own Serial16550 over the same state. The class
// keeps nothing in JS fields but typed-array views, two SabMutex handles and the environment.
//
// Model:
// - The transmitter drains instantly: THRE and TEMT always read 1; every THR write (DLAB=0) hands the
//   byte to env.tx (or, in loopback, to the receiver) and re-arms the THR-empty interrupt.
// - RX: a 16-byte FIFO (1-byte holding register while FCR.FE=0) backed by a host-side queue of
//   HOST_QUEUE_SIZE bytes. receive() fills the FIFO, then the queue; the queue refills the FIFO as the
//   guest reads RBR, so host input is never overrun. In loopback the host wire is disconnected: host
//   bytes wait in the queue and THR bytes enter the FIFO (overrun → LSR.OE when it is full).
// - IIR priority: line status (OE, with IER.ELSI) > RX data (0x4 when the FIFO holds ≥ trigger level
//   bytes or FIFOs are off, else 0xC "character timeout" — reported at once, there is no clock)
//   > THR empty > modem status. Reading IIR clears a THRE interrupt it reports; THR write clears and
//   (instant drain) re-raises it; setting IER.ETBEI 0→1 raises it (THR is always empty).
// - MSR: DCD|DSR|CTS asserted outside loopback; in loopback CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2, with
//   delta bits as MCR changes them (Linux's autoconfig loopback probe reads 0x90 for MCR=0x1A).
// - The interrupt output is a level (any enabled source pending, OUT2 not required). env.irq() is a
//   pulse on each rising edge of that level, i.e. only on a transition into an interrupt-pending state.
//   A THR write makes a rising edge whenever THRE interrupts are enabled and nothing else is pending
//   (the level drops as THR is written and rises as it drains).
//
// Locks: `stateLock` guards every register access (held for a few loads/stores only, never while
// calling out). THR writes additionally hold `txLock` (taken first) across env.tx so that bytes from
// different vCPUs reach tx one at a time and in state order; env.tx may therefore block (back-pressure
// into an SPSC ByteRing) without stalling receive() on the main thread or register reads elsewhere.

import { COM1_GSI, COM1_PORT } from '../../arch/x86_64/layout.js';
import { SabMutex } from '../../shared/lock.js';

export interface SerialEnv {
  /** A byte leaves the UART. Called with the UART's TX lock held, one caller at a time; may block. */
  tx: (byte: number) => void;
  /** Pulse the guest IRQ line (edge). Called with no lock held. */
  irq: () => void;
}

// Register offsets.
const RBR_THR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

// Bits.
const IER_ERBFI = 0x01;
const IER_ETBEI = 0x02;
const IER_ELSI = 0x04;
const IER_EDSSI = 0x08;
const IIR_NONE = 0x01;
const IIR_MS = 0x00;
const IIR_THRE = 0x02;
const IIR_RDA = 0x04;
const IIR_LS = 0x06;
const IIR_CTI = 0x0c;
const IIR_FIFO_ON = 0xc0;
const FCR_FE = 0x01;
const FCR_RX_RESET = 0x02;
const FCR_TX_RESET = 0x04;
const FCR_STORED = 0xc9; // FE, DMA mode, RX trigger
const LCR_DLAB = 0x80;
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_ERRORS = 0x1e; // OE, PE, FE, BI
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const RX_TRIGGER = [1, 4, 8, 14] as const;

// State layout: Int32 words, then the FIFO bytes, then the host queue bytes.
const W_LOCK = 0;
const W_TXLOCK = 1;
const W_IER = 2;
const W_LCR = 3;
const W_MCR = 4;
const W_FCR = 5;
const W_SCR = 6;
const W_DLL = 7;
const W_DLM = 8;
const W_THRE_PENDING = 9;
const W_LSR_ERR = 10;
const W_MSR_DELTA = 11;
const W_FIFO_HEAD = 12;
const W_FIFO_COUNT = 13;
const W_HQ_HEAD = 14;
const W_HQ_COUNT = 15;
const W_SPACE_SEQ = 16;
const W_SPACE_WANTED = 17;
const WORDS = 20;
const FIFO_SIZE = 16;
const HOST_QUEUE_SIZE = 16384; // power of two
const FIFO_OFF = WORDS * 4;
const HQ_OFF = FIFO_OFF + FIFO_SIZE;
const STATE_BYTES = HQ_OFF + HOST_QUEUE_SIZE;

type WaitAsyncFn = (
  typedArray: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const atomicsWaitAsync: WaitAsyncFn | undefined = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;

/** Modem status lines (MSR bits 7:4) as driven by MCR. */
function modemLines(mcr: number): number {
  if ((mcr & MCR_LOOP) === 0) return MSR_DCD | MSR_DSR | MSR_CTS;
  return ((mcr & MCR_RTS) << 3) | ((mcr & MCR_DTR) << 5) | ((mcr & MCR_OUT1) << 4) | ((mcr & MCR_OUT2) << 4);
}

export class Serial16550 {
  /** Size of the SharedArrayBuffer createState() returns. */
  static readonly STATE_BYTES: number = STATE_BYTES;
  /** RX FIFO depth. */
  static readonly FIFO_SIZE: number = FIFO_SIZE;
  /** Host-side RX queue behind the FIFO. */
  static readonly HOST_QUEUE_SIZE: number = HOST_QUEUE_SIZE;
  /** Conventional COM1 placement. */
  static readonly COM1_BASE: number = COM1_PORT;
  static readonly COM1_IRQ: number = COM1_GSI;
  static readonly PORT_COUNT: number = 8;

  /** Fresh power-on state (all registers 0, FIFOs empty). */
  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(STATE_BYTES);
  }

  private readonly w: Int32Array;
  private readonly fifo: Uint8Array;
  private readonly hq: Uint8Array;
  private readonly stateLock: SabMutex;
  private readonly txLock: SabMutex;
  private readonly env: SerialEnv;

  constructor(state: SharedArrayBuffer, env: SerialEnv) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength < STATE_BYTES) {
      throw new RangeError(`Serial16550 state must be a SharedArrayBuffer of ${STATE_BYTES} bytes`);
    }
    this.w = new Int32Array(state, 0, WORDS);
    this.fifo = new Uint8Array(state, FIFO_OFF, FIFO_SIZE);
    this.hq = new Uint8Array(state, HQ_OFF, HOST_QUEUE_SIZE);
    this.stateLock = new SabMutex(this.w, W_LOCK);
    this.txLock = new SabMutex(this.w, W_TXLOCK);
    this.env = env;
  }

  // ---- guest side ------------------------------------------------------------------------------

  /** Guest `in` from base+offset (offset 0..7); returns 0..255. */
  read(offset: number): number {
    const w = this.w;
    let v = 0;
    let notifySpace = false;
    this.stateLock.lock();
    try {
      switch (offset & 7) {
        case RBR_THR_DLL:
          if (w[W_LCR] & LCR_DLAB) {
            v = w[W_DLL];
          } else if (w[W_FIFO_COUNT] > 0) {
            const head = w[W_FIFO_HEAD];
            v = this.fifo[head];
            w[W_FIFO_HEAD] = (head + 1) & (FIFO_SIZE - 1);
            w[W_FIFO_COUNT]--;
            // The next host byte moves in as this one leaves: the RX level never dips here.
            if (this.refill() && w[W_SPACE_WANTED] !== 0) {
              w[W_SPACE_WANTED] = 0;
              notifySpace = true;
            }
          }
          break;
        case IER_DLM:
          v = w[W_LCR] & LCR_DLAB ? w[W_DLM] : w[W_IER];
          break;
        case IIR_FCR: {
          const id = this.iirId();
          if (id === IIR_THRE) w[W_THRE_PENDING] = 0;
          v = id | (w[W_FCR] & FCR_FE ? IIR_FIFO_ON : 0);
          break;
        }
        case LCR:
          v = w[W_LCR];
          break;
        case MCR:
          v = w[W_MCR];
          break;
        case LSR:
          v = (w[W_FIFO_COUNT] > 0 ? LSR_DR : 0) | w[W_LSR_ERR] | LSR_THRE | LSR_TEMT;
          w[W_LSR_ERR] = 0;
          break;
        case MSR:
          v = modemLines(w[W_MCR]) | w[W_MSR_DELTA];
          w[W_MSR_DELTA] = 0;
          break;
        default: // SCR
          v = w[W_SCR];
          break;
      }
    } finally {
      this.stateLock.unlock();
    }
    // Reads only ever lower the interrupt level, so they never pulse the IRQ.
    if (notifySpace) {
      Atomics.add(w, W_SPACE_SEQ, 1);
      Atomics.notify(w, W_SPACE_SEQ);
    }
    return v;
  }

  /** Guest `out` to base+offset (offset 0..7, value 8-bit). THR writes call env.tx (may block). */
  write(offset: number, value: number): void {
    const off = offset & 7;
    const val = value & 0xff;
    if (off === RBR_THR_DLL) {
      this.writeThr(val);
      return;
    }
    const w = this.w;
    let pulse = false;
    this.stateLock.lock();
    try {
      const before = this.iirId() !== IIR_NONE;
      switch (off) {
        case IER_DLM:
          if (w[W_LCR] & LCR_DLAB) {
            w[W_DLM] = val;
          } else {
            const old = w[W_IER];
            const ier = val & 0x0f;
            w[W_IER] = ier;
            // THR is always empty: enabling ETBEI raises the THRE interrupt (Linux's UART_BUG_THRE
            // probe expects it to re-assert on every 0→1 transition).
            if ((ier & IER_ETBEI) !== 0 && (old & IER_ETBEI) === 0) w[W_THRE_PENDING] = 1;
          }
          break;
        case IIR_FCR:
          this.writeFcr(val);
          break;
        case LCR:
          w[W_LCR] = val;
          break;
        case MCR: {
          const old = w[W_MCR];
          const mcr = val & 0x1f;
          w[W_MCR] = mcr;
          const a = modemLines(old);
          const b = modemLines(mcr);
          const changed = a ^ b;
          let delta = 0;
          if (changed & MSR_CTS) delta |= MSR_DCTS;
          if (changed & MSR_DSR) delta |= MSR_DDSR;
          if (a & MSR_RI & ~b) delta |= MSR_TERI;
          if (changed & MSR_DCD) delta |= MSR_DDCD;
          w[W_MSR_DELTA] |= delta;
          if ((old & MCR_LOOP) !== 0 && (mcr & MCR_LOOP) === 0) this.refill(); // host wire reconnected
          break;
        }
        case SCR:
          w[W_SCR] = val;
          break;
        default: // LSR, MSR: read-only (factory test writes ignored)
          break;
      }
      pulse = !before && this.iirId() !== IIR_NONE;
    } finally {
      this.stateLock.unlock();
    }
    if (pulse) this.env.irq();
  }

  private writeThr(val: number): void {
    const w = this.w;
    let pulse = false;
    this.txLock.lock();
    try {
      let txByte = -1;
      this.stateLock.lock();
      try {
        if (w[W_LCR] & LCR_DLAB) {
          w[W_DLL] = val;
        } else {
          w[W_THRE_PENDING] = 0; // writing THR clears the THRE interrupt…
          const low = this.iirId() === IIR_NONE;
          if (w[W_MCR] & MCR_LOOP) {
            if (w[W_FIFO_COUNT] < this.fifoCap()) this.fifoPush(val);
            else w[W_LSR_ERR] |= LSR_OE;
          } else {
            txByte = val;
          }
          w[W_THRE_PENDING] = 1; // …and the instant drain raises it again.
          pulse = low && this.iirId() !== IIR_NONE;
        }
      } finally {
        this.stateLock.unlock();
      }
      if (txByte >= 0) this.env.tx(txByte);
    } finally {
      this.txLock.unlock();
    }
    if (pulse) this.env.irq();
  }

  private writeFcr(val: number): void {
    const w = this.w;
    const old = w[W_FCR];
    if ((val & FCR_FE) === 0) {
      // FCR bits other than FE are only programmed while FE is being set. Leaving FIFO mode clears it.
      if (old & FCR_FE) {
        w[W_FCR] = 0;
        this.resetRx();
      }
      return;
    }
    let v = val;
    if ((old & FCR_FE) === 0) v |= FCR_RX_RESET | FCR_TX_RESET; // entering FIFO mode clears FIFOs
    w[W_FCR] = v & FCR_STORED;
    if (v & FCR_RX_RESET) this.resetRx();
    // TX FIFO reset: the transmitter is always empty.
  }

  // ---- host side -------------------------------------------------------------------------------

  /**
   * Console input from the host. Returns how many bytes were accepted (FIFO + host queue); the rest
   * did not fit and should be offered again later (see waitRxSpace). May briefly wait on the state lock.
   */
  receive(bytes: Uint8Array): number {
    if (bytes.length === 0) return 0;
    const w = this.w;
    let n = 0;
    let pulse = false;
    this.stateLock.lock();
    try {
      const before = this.iirId() !== IIR_NONE;
      this.refill();
      if ((w[W_MCR] & MCR_LOOP) === 0 && w[W_HQ_COUNT] === 0) {
        const cap = this.fifoCap();
        while (n < bytes.length && w[W_FIFO_COUNT] < cap) this.fifoPush(bytes[n++]);
      }
      let count = w[W_HQ_COUNT];
      const head = w[W_HQ_HEAD];
      while (n < bytes.length && count < HOST_QUEUE_SIZE) {
        this.hq[(head + count) & (HOST_QUEUE_SIZE - 1)] = bytes[n++];
        count++;
      }
      w[W_HQ_COUNT] = count;
      pulse = !before && this.iirId() !== IIR_NONE;
    } finally {
      this.stateLock.unlock();
    }
    if (pulse) this.env.irq();
    return n;
  }

  /** Bytes receive() would accept right now. */
  rxFree(): number {
    const w = this.w;
    return this.stateLock.withLock(() => {
      const fifoRoom = (w[W_MCR] & MCR_LOOP) === 0 && w[W_HQ_COUNT] === 0 ? this.fifoCap() - w[W_FIFO_COUNT] : 0;
      return Math.max(0, fifoRoom) + HOST_QUEUE_SIZE - w[W_HQ_COUNT];
    });
  }

  /**
   * Resolve once the guest has pulled a byte out of the host queue (room for more input), or after
   * `timeoutMs`. Resolves to rxFree() > 0. For the main thread (Atomics.waitAsync, does not block).
   */
  async waitRxSpace(timeoutMs: number): Promise<boolean> {
    const w = this.w;
    const seq = Atomics.load(w, W_SPACE_SEQ);
    this.stateLock.withLock(() => {
      w[W_SPACE_WANTED] = 1;
    });
    if (this.stateLock.withLock(() => w[W_HQ_COUNT] < HOST_QUEUE_SIZE)) return true;
    if (atomicsWaitAsync !== undefined) {
      const r = atomicsWaitAsync(w, W_SPACE_SEQ, seq, timeoutMs);
      if (r.async) await r.value;
    } else {
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(timeoutMs, 10)));
    }
    return this.rxFree() > 0;
  }

  /** Whether the interrupt output is asserted (some enabled source pending). No side effects. */
  irqPending(): boolean {
    return this.stateLock.withLock(() => this.iirId() !== IIR_NONE);
  }

  // ---- internals (call with stateLock held) ----------------------------------------------------

  private iirId(): number {
    const w = this.w;
    const ier = w[W_IER];
    if (ier === 0) return IIR_NONE;
    if ((ier & IER_ELSI) !== 0 && (w[W_LSR_ERR] & LSR_ERRORS) !== 0) return IIR_LS;
    if ((ier & IER_ERBFI) !== 0) {
      const n = w[W_FIFO_COUNT];
      if (n > 0) {
        const fcr = w[W_FCR];
        if ((fcr & FCR_FE) === 0 || n >= RX_TRIGGER[fcr >>> 6]) return IIR_RDA;
        return IIR_CTI;
      }
    }
    if ((ier & IER_ETBEI) !== 0 && w[W_THRE_PENDING] !== 0) return IIR_THRE;
    if ((ier & IER_EDSSI) !== 0 && w[W_MSR_DELTA] !== 0) return IIR_MS;
    return IIR_NONE;
  }

  private fifoCap(): number {
    return this.w[W_FCR] & FCR_FE ? FIFO_SIZE : 1;
  }

  private fifoPush(b: number): void {
    const w = this.w;
    const count = w[W_FIFO_COUNT];
    this.fifo[(w[W_FIFO_HEAD] + count) & (FIFO_SIZE - 1)] = b;
    w[W_FIFO_COUNT] = count + 1;
  }

  private resetRx(): void {
    const w = this.w;
    w[W_FIFO_HEAD] = 0;
    w[W_FIFO_COUNT] = 0;
    this.refill();
  }

  /** Move host-queue bytes into the FIFO while the wire is connected; true if any moved. */
  private refill(): boolean {
    const w = this.w;
    let hqCount = w[W_HQ_COUNT];
    if (hqCount === 0 || (w[W_MCR] & MCR_LOOP) !== 0) return false;
    const cap = this.fifoCap();
    let hqHead = w[W_HQ_HEAD];
    let moved = false;
    while (hqCount > 0 && w[W_FIFO_COUNT] < cap) {
      this.fifoPush(this.hq[hqHead]);
      hqHead = (hqHead + 1) & (HOST_QUEUE_SIZE - 1);
      hqCount--;
      moved = true;
    }
    w[W_HQ_HEAD] = hqHead;
    w[W_HQ_COUNT] = hqCount;
    return moved;
  }
}
