// Shared helpers for tests that boot guests under KVM. They import the compiled VMM from dist/
// (vCPU workers run compiled JavaScript); `npm test` builds it first.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VM, type VMConfig, type VMExit } from '../../dist/main/index.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GUESTS = join(ROOT, 'build', 'guests');
export const hasKvm = existsSync('/dev/kvm');

let warned = false;
/** Call at the top of every KVM test file: prints one loud line when the tests are skipped. */
export function kvmOrSkipNotice(file: string): boolean {
  if (!hasKvm && !warned) {
    warned = true;
    console.warn(`\n!!! KVM TESTS SKIPPED (${file}): /dev/kvm is absent on this machine !!!\n`);
  }
  return hasKvm;
}

export function guest(name: string): string {
  return join(GUESTS, name);
}

export interface GuestRun {
  vm: VM;
  output: string;
  /** What the guest wrote to its virtio-console (config.console 'virtio'), else ''. */
  consoleOutput: string;
  exit: VMExit;
}

/** Boot a guest, collect its serial (and virtio-console) output, wait for it to end (or stop it after timeoutMs). */
export async function runGuest(
  config: VMConfig,
  opts: { timeoutMs?: number; input?: (vm: VM, output: () => string) => void | Promise<void> } = {},
): Promise<GuestRun> {
  const vm = new VM({ logLevel: 'silent', ...config });
  let output = '';
  let consoleOutput = '';
  vm.serial.on('data', (b: Buffer) => (output += b.toString('latin1')));
  vm.console?.on('data', (b: Buffer) => (consoleOutput += b.toString('latin1')));
  await vm.start();
  const timer = setTimeout(() => void vm.stop(), opts.timeoutMs ?? 30_000);
  try {
    if (opts.input) await opts.input(vm, () => output);
    const exit = await vm.wait();
    return { vm, output, consoleOutput, exit };
  } finally {
    clearTimeout(timer);
  }
}

/** Resolve once `output()` contains `text` (polling), or reject after timeoutMs. */
export async function waitFor(output: () => string, text: string, timeoutMs = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!output().includes(text)) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${JSON.stringify(text)}; output so far: ${JSON.stringify(output())}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
