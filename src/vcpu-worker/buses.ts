// The port-I/O and MMIO buses as one vCPU worker sees them: its own device-model instances over the
// shared device state (src/main/legacy-devices.ts and src/main/virtio-devices.ts create it on the main thread).
import { ACPI_SLEEP_CONTROL_PORT, BOOT_TIMER_BASE, BOOT_TIMER_SIZE, ACPI_SLEEP_PORT_COUNT, COM1_PORT, COM1_PORT_COUNT, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_COUNT, I8042_DATA_PORT, POST_PORT } from '../arch/x86_64/layout.js';
import { MmioBus, PioBus, bytewise } from '../devices/bus.js';
import { AcpiSleep } from '../devices/legacy/acpi-sleep.js';
import { BootTimer } from '../devices/legacy/boot-timer.js';
import { DebugExit } from '../devices/legacy/debug-exit.js';
import { I8042 } from '../devices/legacy/i8042.js';
import { PostCode } from '../devices/legacy/post.js';
import { Serial16550 } from '../devices/legacy/serial.js';
import { loadAddon } from '../kvm/addon.js';
import { ByteRing } from '../shared/byte-ring.js';
import type { ExitReason } from '../shared/control.js';
import { VirtioMmioTransport } from '../devices/virtio/mmio.js';
import { virtioDeviceType } from '../devices/virtio/registry.js';
import type { LegacyDeviceState, VirtioMmioDeviceState } from './protocol.js';

export interface LegacyBusEnv {
  /** true once the VM is stopping (a blocked console write gives up) */
  stopping: () => boolean;
  /** end the VM */
  end: (reason: ExitReason, exitCode: number) => void;
  /** first access to an address no device claims (the bus reports each address once) */
  unknown: (kind: 'pio' | 'mmio', addr: number, write: boolean) => void;
  /** With a boot timer (VMConfig.bootTimer): the guest wrote the boot-complete byte. */
  bootComplete?: () => void;
}

export interface Buses {
  pio: PioBus;
  mmio: MmioBus;
}

export function buildLegacyBus(state: LegacyDeviceState, env: LegacyBusEnv): Buses {
  const addon = loadAddon();
  const tx = new ByteRing(state.serialTx);
  const serial = new Serial16550(state.serial, {
    tx: (b) => {
      tx.pushBlocking(b, env.stopping);
    },
    irq: () => addon.eventfdWrite(state.serialIrqFd, 1n),
  });
  const pio = new PioBus((kind, addr) => env.unknown('pio', addr, kind === 'write'));
  pio.register(COM1_PORT, COM1_PORT_COUNT, bytewise(serial), 'com1');
  pio.register(I8042_DATA_PORT, I8042.LENGTH, bytewise(new I8042(state.i8042, { reset: () => env.end('reboot', 0), irq: () => addon.eventfdWrite(state.kbdIrqFd, 1n) })), 'i8042');
  pio.register(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_COUNT, new DebugExit({ exit: (code) => env.end('exit', code) }), 'debug-exit');
  pio.register(POST_PORT, 1, new PostCode(state.post), 'post');
  const sleep = new AcpiSleep({ poweroff: () => env.end('poweroff', 0), reset: () => env.end('reboot', 0) }, state.acpiSleep);
  pio.register(ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_PORT_COUNT, sleep, 'acpi-sleep');
  const mmio = new MmioBus((kind, addr) => env.unknown('mmio', addr, kind === 'write'));
  if (env.bootComplete) mmio.register(BOOT_TIMER_BASE, BOOT_TIMER_SIZE, new BootTimer(env.bootComplete), 'boot-timer');
  return { pio, mmio };
}

/**
 * Register each virtio-mmio window on this vCPU's MMIO bus: a VirtioMmioTransport over the shared
 * register state, with the device kind's validateFeatures/configWrite hooks from the registry. A
 * status change the device must act on writes the device's control eventfd; a QueueNotify that
 * reached userspace (not caught by the KVM ioeventfd) writes that queue's eventfd. A reset waits for
 * the device's in-flight work unless `stopping()` says the VM is going away.
 */
export function registerVirtioDevices(mmio: MmioBus, devices: readonly VirtioMmioDeviceState[], stopping: () => boolean = () => false): void {
  const addon = loadAddon();
  for (const d of devices) {
    const type = virtioDeviceType(d.kind);
    const t: VirtioMmioTransport = new VirtioMmioTransport(d.state, {
      notify: (ev) => {
        if (ev === 'status' || ev === 'reset') addon.eventfdWrite(d.controlFd, 1n);
        else if (ev.queue < d.queueFds.length) addon.eventfdWrite(d.queueFds[ev.queue], 1n);
      },
      validateFeatures: type.validateFeatures ? (f) => type.validateFeatures!(d.params, f) : undefined,
      configWrite: type.configWrite
        ? (offset, size, value) =>
            type.configWrite!(d.params, { read: () => t.config(), write: (bytes, off) => t.setConfig(bytes, off) }, offset, size, value)
        : undefined,
      stopping,
    });
    mmio.register(d.base, d.size, t, d.name);
  }
}
