// One vCPU: a worker_thread that runs KVM_RUN in a loop and handles the exits that reach userspace
// (port I/O to the legacy devices, MMIO, shutdown, errors). Device state is shared with the other
// vCPU workers through SharedArrayBuffers; the main thread is not on this path.
import { parentPort } from 'node:worker_threads';
import { loadAddon } from '../kvm/addon.js';
import { KvmRunView, decodeExit, KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_EXIT_INTR, KVM_EXIT_HLT } from '../kvm/exits.js';
import { GuestMemory } from '../memory/guest-memory.js';
import {
  CTRL_RUN_SEQ,
  CTRL_RUN_STATE,
  CTRL_PARKED,
  CTRL_STARTED,
  RUN_STATE_PAUSED,
  RUN_STATE_RUNNING,
  ctrlKickSlot,
  recordExit,
} from '../shared/control.js';
import type { VcpuMessage, VcpuWorkerData } from './protocol.js';
import { buildLegacyBus, registerVirtioDevices } from './buses.js';
import { describeFatalExit } from './diagnose.js';
import { EAGAIN, EINTR } from '../kvm/structs.js';


const port = parentPort;
if (!port) throw new Error('vcpu worker must run in a worker_thread');
const addon = loadAddon();
// The worker is spawned before the VM is built (so its start-up overlaps the build); its
// configuration arrives as the first message.
const data = await new Promise<VcpuWorkerData>((resolve) => port.once('message', resolve));
const ctrl = data.control;

function post(msg: VcpuMessage): void {
  port!.postMessage(msg);
}

function kickOthers(): void {
  for (let i = 0; i < data.vcpuCount; i++) {
    if (i === data.vcpuId) continue;
    const h = Atomics.load(ctrl, ctrlKickSlot(i)) - 1;
    if (h >= 0) addon.kick(h);
  }
}

/** End the VM from this vCPU (first recorder wins) and kick every other vCPU out of KVM_RUN. */
function endVm(reason: Parameters<typeof recordExit>[1], code: number): void {
  recordExit(ctrl, reason, code, data.vcpuId);
  kickOthers();
}

const mem = new GuestMemory(data.memory);
const run = addon.mapRun(data.vcpuFd, data.runSize);
const runView = new DataView(run);
const kvmRun = new KvmRunView(runView);
const bus = buildLegacyBus(data.devices, {
  stopping: () => Atomics.load(ctrl, CTRL_RUN_STATE) > RUN_STATE_PAUSED,
  end: endVm,
  unknown: (kind, addr, write) => post({ type: 'unknown-access', vcpuId: data.vcpuId, kind, addr, write }),
});
registerVirtioDevices(bus.mmio, data.virtio, () => Atomics.load(ctrl, CTRL_RUN_STATE) > RUN_STATE_PAUSED);

const handle = addon.registerVcpuThread(data.vcpuFd, run);
Atomics.store(ctrl, ctrlKickSlot(data.vcpuId), handle + 1);

/** Park while paused; return false when the VM is stopping. */
function waitRunnable(): boolean {
  for (;;) {
    const seq = Atomics.load(ctrl, CTRL_RUN_SEQ);
    const state = Atomics.load(ctrl, CTRL_RUN_STATE);
    if (state === RUN_STATE_RUNNING) return true;
    if (state !== RUN_STATE_PAUSED) return false;
    Atomics.add(ctrl, CTRL_PARKED, 1);
    Atomics.notify(ctrl, CTRL_PARKED);
    Atomics.wait(ctrl, CTRL_RUN_SEQ, seq);
    Atomics.sub(ctrl, CTRL_PARKED, 1);
    Atomics.notify(ctrl, CTRL_PARKED);
  }
}

function handleIo(): void {
  const dir = kvmRun.ioDirection;
  const size = kvmRun.ioSize as 1 | 2 | 4;
  const p = kvmRun.ioPort;
  const count = kvmRun.ioCount;
  let off = kvmRun.ioDataOffset;
  for (let i = 0; i < count; i++, off += size) {
    if (dir === 1) {
      const v = size === 1 ? runView.getUint8(off) : size === 2 ? runView.getUint16(off, true) : runView.getUint32(off, true);
      bus.pio.write(p, size, v);
    } else {
      const v = bus.pio.read(p, size);
      if (size === 1) runView.setUint8(off, v);
      else if (size === 2) runView.setUint16(off, v, true);
      else runView.setUint32(off, v >>> 0, true);
    }
  }
}

function handleMmio(): void {
  const addr = kvmRun.mmioAddr;
  const len = kvmRun.mmioLen;
  const off = kvmRun.mmioDataOffset;
  const write = kvmRun.mmioIsWrite;
  // Split into naturally sized pieces the bus understands: 8 → 4+4, odd lengths → bytes.
  const step = len === 1 || len === 2 || len === 4 ? len : len === 8 ? 4 : 1;
  for (let i = 0; i < Math.min(len, 8); i += step) {
    const size = step as 1 | 2 | 4;
    if (write) {
      const v = size === 1 ? runView.getUint8(off + i) : size === 2 ? runView.getUint16(off + i, true) : runView.getUint32(off + i, true);
      bus.mmio.write(addr + i, size, v);
    } else {
      const v = bus.mmio.read(addr + i, size);
      if (size === 1) runView.setUint8(off + i, v);
      else if (size === 2) runView.setUint16(off + i, v, true);
      else runView.setUint32(off + i, v >>> 0, true);
    }
  }
}

let exits = 0;
let detail: string | undefined;
Atomics.add(ctrl, CTRL_STARTED, 1);
let first = true;
try {
  while (waitRunnable()) {
    if (first) {
      first = false;
      post({ type: 'started', vcpuId: data.vcpuId, firstRunEpochMs: performance.timeOrigin + performance.now() });
    }
    const r =
      data.benchCPioPort === undefined
        ? addon.run(data.vcpuFd, handle)
        : addon.benchRunPioLoop(data.vcpuFd, handle, data.benchCPioPort, 0x7fffffff).result;
    if (r === -EINTR || r === -EAGAIN) continue;
    exits++;
    const reason = kvmRun.exitReason;
    if (reason === KVM_EXIT_IO) handleIo();
    else if (reason === KVM_EXIT_MMIO) handleMmio();
    else if (reason === KVM_EXIT_INTR || reason === KVM_EXIT_HLT) continue;
    else {
      const exit = decodeExit(runView);
      const fatal = describeFatalExit(exit, { addon, vcpuFd: data.vcpuFd, vcpuId: data.vcpuId, mem }, runView);
      if (fatal) {
        if (fatal.message) detail = fatal.message;
        endVm(fatal.reason, fatal.exitCode);
      }
    }
  }
} catch (e) {
  detail = `vCPU ${data.vcpuId}: ${(e as Error).message}`;
  endVm('error', 1);
} finally {
  Atomics.store(ctrl, ctrlKickSlot(data.vcpuId), 0);
  addon.unregisterVcpuThread(handle);
  post({ type: 'ended', vcpuId: data.vcpuId, exits, detail });
}
