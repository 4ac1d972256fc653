// A virtio driver's bring-up through the virtio-mmio registers (virtio 1.2 §3.1.1, queue setup
// §4.2.3.2), as a vCPU sees it: the tests that play the driver against a VirtioMmioTransport (from
// src/ or dist/) share it.
import { expect } from 'vitest';

/** What a driver needs of a transport: 32-bit register reads and writes. */
export interface DriverRegisters {
  read(offset: number, size: 4): number;
  write(offset: number, size: 4, value: number): void;
}

export interface DriverQueue {
  index: number;
  /** QueueNum. */
  size: number;
  desc: number;
  avail: number;
  used: number;
}

// Register offsets and status bits (§4.2.2, §2.1), written out so this file serves dist/ and src/ alike.
const STATUS = 0x070;
const DRIVER_FEATURES = 0x020;
const DRIVER_FEATURES_SEL = 0x024;
const QUEUE_SEL = 0x030;
const QUEUE_NUM = 0x038;
const QUEUE_READY = 0x044;
const QUEUE_DESC_LOW = 0x080;
const QUEUE_DESC_HIGH = 0x084;
const QUEUE_DRIVER_LOW = 0x090;
const QUEUE_DRIVER_HIGH = 0x094;
const QUEUE_DEVICE_LOW = 0x0a0;
const QUEUE_DEVICE_HIGH = 0x0a4;
const ACK = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;

/**
 * Reset, ACKNOWLEDGE, DRIVER, `features`, FEATURES_OK (checked latched), then each queue set up and
 * enabled. DRIVER_OK is left to the caller (driverOk), so a test can look at the state before it.
 */
export function initDriver(t: DriverRegisters, features: bigint, queues: readonly DriverQueue[]): void {
  const w = (off: number, v: number): void => t.write(off, 4, v);
  w(STATUS, 0);
  w(STATUS, ACK);
  w(STATUS, ACK | DRIVER);
  w(DRIVER_FEATURES_SEL, 0);
  w(DRIVER_FEATURES, Number(features & 0xffffffffn));
  w(DRIVER_FEATURES_SEL, 1);
  w(DRIVER_FEATURES, Number((features >> 32n) & 0xffffffffn));
  w(STATUS, ACK | DRIVER | FEATURES_OK);
  expect(t.read(STATUS, 4)).toBe(ACK | DRIVER | FEATURES_OK);
  for (const q of queues) {
    w(QUEUE_SEL, q.index);
    w(QUEUE_NUM, q.size);
    w(QUEUE_DESC_LOW, q.desc % 2 ** 32);
    w(QUEUE_DESC_HIGH, Math.floor(q.desc / 2 ** 32));
    w(QUEUE_DRIVER_LOW, q.avail % 2 ** 32);
    w(QUEUE_DRIVER_HIGH, Math.floor(q.avail / 2 ** 32));
    w(QUEUE_DEVICE_LOW, q.used % 2 ** 32);
    w(QUEUE_DEVICE_HIGH, Math.floor(q.used / 2 ** 32));
    w(QUEUE_READY, 1);
  }
}

/** Set DRIVER_OK and check that it latched. */
export function driverOk(t: DriverRegisters): void {
  t.write(STATUS, 4, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  expect(t.read(STATUS, 4)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}
