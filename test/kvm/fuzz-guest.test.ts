// Guest-driven fuzzing: fuzz.elf, seeded from its command line, writes random values to random
// virtio-mmio registers, random descriptor tables and avail rings of every virtio device present
// (virtio-blk, virtio-console, virtio-rng) and kicks them. kindling must neither crash nor hang,
// every device must still serve a well-formed request after a reset, guest-triggered log lines stay
// rate-limited, and the VM must stop cleanly.
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { guest, kvmOrSkipNotice, runGuest } from './helpers.js';

const kvm = kvmOrSkipNotice('fuzz-guest.test.ts');
const SEEDS = (process.env.KINDLING_GUEST_FUZZ_SEEDS ?? '1,7,1234').split(',').map(Number);

describe.skipIf(!kvm)('fuzz.elf against virtio-blk, virtio-console and virtio-rng', () => {
  const dir = lazyTempDir('kindling-fuzz-');
  for (const seed of SEEDS) {
    it(`seed ${seed}: survives 3000 rounds of hostile register and ring writes`, async () => {
      const img = join(dir(), `disk-${seed}.img`);
      writeFileSync(img, randomBytes(4 << 20));
      const r = await runGuest(
        { kernel: guest('fuzz.elf'), memMiB: 128, disks: [{ path: img }], console: 'virtio', cmdline: `fuzz.seed=${seed} fuzz.rounds=3000` },
        { timeoutMs: 60_000 },
      );
      expect(r.output).toContain('fuzz done');
      expect(r.output).toContain('fuzz sane status=0');
      expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
      expect(r.vm.state).toBe('stopped');
      const stats = /needs_reset=(\d+)/.exec(r.output);
      expect(stats).not.toBeNull(); // the fuzzer reports how often it drove the device into NEEDS_RESET
      // Every device was fuzzed and works again after a reset.
      for (const id of [2, 3, 4]) expect(r.output).toMatch(new RegExp(`fuzz: device ${id} at 0x[0-9a-f]+: \\d+ rounds`));
      expect(r.output).toMatch(/fuzz sane device 3 at 0x[0-9a-f]+: ok/);
      expect(r.output).toMatch(/fuzz sane device 4 at 0x[0-9a-f]+: ok/);
      const vs = r.vm.virtioStats();
      expect(vs.map((d) => d.kind)).toEqual(['blk', 'console', 'rng']);
      for (const d of vs) expect(d.transport.activations).toBeGreaterThan(0);
    });
  }
});
