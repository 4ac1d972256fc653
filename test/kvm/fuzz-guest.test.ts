// Guest-driven fuzzing: fuzz.elf, seeded from its command line, writes random values to random
// virtio-mmio registers, random descriptor tables and avail rings of every virtio device present
// (virtio-blk, virtio-console, virtio-rng; virtio-net behind a tap) and kicks them. kindling must
// neither crash nor hang, every device must still serve a well-formed request after a reset (a net
// device: transmit a frame), guest-triggered log lines stay rate-limited, and the VM must stop
// cleanly. The net runs are `kindling run` inside a network namespace the test creates (`ip netns
// add`, deleted afterwards): whatever frames the fuzzer makes go to a tap nobody else sees.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { ROOT, guest, kvmOrSkipNotice, runGuest } from './helpers.js';

const kvm = kvmOrSkipNotice('fuzz-guest.test.ts');
const SEEDS = (process.env.KINDLING_GUEST_FUZZ_SEEDS ?? '1,7,1234').split(',').map(Number);
const netWhy = process.getuid?.() !== 0 ? 'network namespaces need root' : !existsSync('/dev/net/tun') ? '/dev/net/tun is absent' : spawnSync('ip', ['-V']).status !== 0 ? 'iproute2 (ip) is not installed' : undefined;
if (kvm && netWhy) console.warn(`\n!!! KVM TESTS SKIPPED (fuzz-guest.test.ts virtio-net): ${netWhy} !!!\n`);

/** `kindling run --kernel fuzz.elf --net tap=kfz0 …` in a fresh network namespace; its output and exit code. */
async function fuzzNetInNamespace(seed: number): Promise<{ out: string; code: number | null }> {
  const ns = `kindling-fuzz-${process.pid}-${seed}`;
  const add = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add: ${add.stderr}`);
  try {
    const argv = [process.execPath, join(ROOT, 'bin', 'kindling.js'), 'run', '--kernel', guest('fuzz.elf'), '--mem', '128', '--net', 'tap=kfz0', '--cmdline', `fuzz.seed=${seed} fuzz.rounds=3000`];
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString('latin1')));
    p.stderr.on('data', (b: Buffer) => (out += b.toString('latin1')));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((res) => p.on('close', (c) => res(c)));
    clearTimeout(timer);
    return { out, code };
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

describe.skipIf(!kvm)('fuzz.elf against virtio-blk, virtio-console, virtio-rng and virtio-net', () => {
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

    it.skipIf(!!netWhy)(`seed ${seed}: virtio-net (tap in a namespace) survives 3000 rounds and transmits a frame after a reset`, async () => {
      const r = await fuzzNetInNamespace(seed);
      expect(r.out).toContain('fuzz done');
      expect(r.code, r.out.slice(-2000)).toBe(0);
      expect(r.out).toMatch(/fuzz: device 1 at 0x[0-9a-f]+: \d+ rounds/);
      expect(r.out).toMatch(/fuzz sane device 1 at 0x[0-9a-f]+: ok/);
      expect(r.out).toMatch(/fuzz sane device 4 at 0x[0-9a-f]+: ok/);
    });
  }
});
