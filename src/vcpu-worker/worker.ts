// One vCPU: a worker_thread that wires a VcpuRunner (./runner.ts: the KVM_RUN loop and its exit
// handling) to the addon, its kvm_run mapping, its buses (./buses.ts) and the main thread. Device
// state is shared with the other vCPU workers through SharedArrayBuffers; the main thread is not on
// this path.
import { parentPort } from 'node:worker_threads';
import { loadAddon } from '../kvm/addon.js';
import { installSeccomp } from '../seccomp/install.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { CTRL_RUN_STATE, RUN_STATE_PAUSED, ctrlKickSlot } from '../shared/control.js';
import type { VcpuMessage, VcpuWorkerData } from './protocol.js';
import { buildLegacyBus, registerVirtioDevices } from './buses.js';
import { describeFatalExit } from './diagnose.js';
import { VcpuRunner, vmEnder, type VcpuRunOutcome } from './runner.js';

const port = parentPort;
if (!port) throw new Error('vcpu worker must run in a worker_thread');
const addon = loadAddon();
// Loaded: from here the worker needs no file (a process-wide filter may now be installed).
port.postMessage({ type: 'loaded' } satisfies VcpuMessage);
// The worker is spawned before the VM is built (so its start-up overlaps the build); its
// configuration arrives as the first message.
const data = await new Promise<VcpuWorkerData>((resolve) => port.once('message', resolve));
const { control: ctrl, vcpuId, vcpuFd, benchCPioPort } = data;
const post = (msg: VcpuMessage): void => port.postMessage(msg);
const stopping = (): boolean => Atomics.load(ctrl, CTRL_RUN_STATE) > RUN_STATE_PAUSED;
const endVm = vmEnder(ctrl, vcpuId, data.vcpuCount, (h) => addon.kick(h));

const mem = new GuestMemory(data.memory);
const run = addon.mapRun(vcpuFd, data.runSize);
const runView = new DataView(run);
const timer = data.bootTimer;
const bootComplete = timer
  ? (): void => {
      const wallUs = Number((process.hrtime.bigint() - timer.startNs) / 1000n);
      const cpu = process.cpuUsage();
      post({ type: 'boot-complete', vcpuId, wallUs, cpuUs: cpu.user + cpu.system - timer.startCpuUs });
    }
  : undefined;
const buses = buildLegacyBus(data.devices, {
  stopping,
  end: endVm,
  unknown: (kind, addr, write) => post({ type: 'unknown-access', vcpuId, kind, addr, write }),
  ...(bootComplete ? { bootComplete } : {}),
});
registerVirtioDevices(buses.mmio, data.virtio, stopping);

const handle = addon.registerVcpuThread(vcpuFd, run);
Atomics.store(ctrl, ctrlKickSlot(vcpuId), handle + 1);
const runner = new VcpuRunner({
  run: benchCPioPort === undefined ? () => addon.run(vcpuFd, handle) : () => addon.benchRunPioLoop(vcpuFd, handle, benchCPioPort, 0x7fffffff).result,
  runView,
  buses,
  control: ctrl,
  vcpuId,
  post,
  endVm,
  fatal: (exit, view) => describeFatalExit(exit, { addon, vcpuFd, vcpuId, mem }, view),
});
let outcome: VcpuRunOutcome = { exits: 0 };
try {
  // From here on the thread runs guest-driven code: only its role's syscalls (src/seccomp/roles.ts).
  installSeccomp(addon, { kind: 'vcpu' }, data.seccomp, `vcpu${vcpuId}`);
  outcome = runner.run();
} finally {
  Atomics.store(ctrl, ctrlKickSlot(vcpuId), 0);
  addon.unregisterVcpuThread(handle);
  post({ type: 'ended', vcpuId, exits: outcome.exits, detail: outcome.detail });
}
