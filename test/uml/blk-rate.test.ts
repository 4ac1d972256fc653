// virtio-blk rate limiting (Firecracker's token buckets, src/devices/rate-limiter.ts) measured by
// Linux's virtio_blk in user-mode Linux against `kindling vhost-user --device blk=IMAGE,bw=…|ops=…`.
// Inside Linux, dd with O_DIRECT (no page cache between the driver and the device) reads and writes
// /dev/vda; the guest times it with its own clock (UML's clock is the host's). A bucket starts full,
// so the first `size` tokens are free: the measured rate is (moved − size) / elapsed, which the
// issue wants within 10 % of the limit. The image's contents are checked afterwards too: throttling
// must not lose or reorder a write.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_ID, describeRun, exitWithin, kindlingArgv, kindlingHasVhostUser, runUml, umlOrSkipNotice, umlScratch } from './helpers.js';

const canRun = umlOrSkipNotice('uml/blk-rate.test.ts');
const hasKindling = canRun && kindlingHasVhostUser();
if (canRun && !hasKindling) console.warn('\n!!! UML TESTS SKIPPED (uml/blk-rate.test.ts): `kindling vhost-user` is not in this build (dist/) !!!\n');

const scratch = umlScratch(afterEach);
const MiB = 1 << 20;

/** Lines `NAME BYTES NANOSECONDS` printed by the script's timed() calls. */
function timings(out: string): Map<string, { bytes: number; seconds: number }> {
  const m = new Map<string, { bytes: number; seconds: number }>();
  for (const [, name, bytes, ns] of out.matchAll(/^timed (\S+) (\d+) (\d+)$/gm)) m.set(name, { bytes: Number(bytes), seconds: Number(ns) / 1e9 });
  return m;
}

const TIMED = 'timed() { n=$1; b=$2; shift 2; s=$(date +%s%N); "$@" || exit 20; e=$(date +%s%N); echo "timed $n $b $((e - s))"; }';

describe.skipIf(!hasKindling)('virtio_blk in user-mode Linux against a rate-limited kindling blk', () => {
  it('bw=: reads and writes run at the limit (2 MiB/s, 256 KiB bucket) within 10 %, and the written data is intact', async () => {
    const dir = scratch.dir('uml-blk-rate');
    const img = join(dir, 'disk.img');
    writeFileSync(img, Buffer.alloc(16 * MiB));
    const socket = join(dir, 'blk.sock');
    // 262144 bytes every 125 ms = 2 MiB/s.
    const b = await scratch.backend(kindlingArgv(socket, `blk=${img},bw=262144/125`), socket);
    const r = await runUml({
      devices: [{ socket, virtioId: VIRTIO_ID.blk }],
      modules: ['virtio_blk'],
      script: [
        TIMED,
        // 6 MiB of a repeating pattern written, then 6 MiB read back, 64 KiB per request
        'i=0; while [ $i -lt 96 ]; do printf "BLOCK-%04d" $i; head -c 65526 /dev/zero; i=$((i + 1)); done > "$RUN/tmp/pattern"',
        `timed write ${6 * MiB} dd if="$RUN/tmp/pattern" of=/dev/vda bs=64k count=96 oflag=direct conv=notrunc status=none`,
        `timed read ${6 * MiB} dd if=/dev/vda of="$RUN/tmp/back" bs=64k count=96 iflag=direct status=none`,
        'cmp "$RUN/tmp/pattern" "$RUN/tmp/back" && echo "read back equal"',
        'echo done',
      ].join('\n'),
      timeoutMs: 120_000,
    });
    expect(r.status, describeRun(r)).toBe(0);
    expect(r.output).toContain('read back equal');
    const t = timings(r.output);
    const limit = 2 * MiB;
    for (const dir of ['write', 'read']) {
      const m = t.get(dir);
      expect(m, r.output).toBeDefined();
      const rate = (m!.bytes - 262144) / m!.seconds;
      console.log(`blk bw limit ${limit} B/s: ${dir} ${(rate / MiB).toFixed(3)} MiB/s (${m!.bytes} bytes in ${m!.seconds.toFixed(3)} s)`);
      expect(rate / limit).toBeGreaterThan(0.9);
      expect(rate / limit).toBeLessThan(1.1);
    }
    expect(await exitWithin(b), b.stderr()).toEqual({ code: 0, signal: null });
    const image = readFileSync(img);
    const expected = Buffer.concat(Array.from({ length: 96 }, (_, i) => Buffer.concat([Buffer.from(`BLOCK-${String(i).padStart(4, '0')}`), Buffer.alloc(65526)])));
    expect(createHash('sha256').update(image.subarray(0, 6 * MiB)).digest('hex')).toBe(createHash('sha256').update(expected).digest('hex'));
    expect(image.subarray(6 * MiB).every((x) => x === 0)).toBe(true);
  }, 180_000);

  // 200 requests/s: dd's requests go one at a time, so the limit must leave each one more time than
  // the guest itself needs on a loaded 2-core host (at 500/s, 2 ms each, a busy run measured 424/s).
  it('ops=: 4 KiB reads run at the request limit (200/s, bucket 20) within 10 %', async () => {
    const dir = scratch.dir('uml-blk-ops');
    const img = join(dir, 'disk.img');
    writeFileSync(img, Buffer.alloc(16 * MiB));
    const socket = join(dir, 'blk.sock');
    const b = await scratch.backend(kindlingArgv(socket, `blk=${img},ro,ops=20/100`), socket);
    const r = await runUml({
      devices: [{ socket, virtioId: VIRTIO_ID.blk }],
      modules: ['virtio_blk'],
      script: [TIMED, 'timed read 600 dd if=/dev/vda of=/dev/null bs=4k count=600 iflag=direct status=none', 'echo done'].join('\n'),
      timeoutMs: 120_000,
    });
    expect(r.status, describeRun(r)).toBe(0);
    const m = timings(r.output).get('read');
    expect(m, r.output).toBeDefined();
    const rate = (m!.bytes - 20) / m!.seconds;
    console.log(`blk ops limit 200/s: ${rate.toFixed(1)} requests/s (${m!.bytes} in ${m!.seconds.toFixed(3)} s)`);
    expect(rate / 200).toBeGreaterThan(0.9);
    expect(rate / 200).toBeLessThan(1.1);
    expect(await exitWithin(b), b.stderr()).toEqual({ code: 0, signal: null });
  }, 180_000);
});
