// Linux's virtio-rng driver (user-mode Linux) against `kindling vhost-user --device rng`: the driver
// becomes the current hw_random source and 4 KiB read from /dev/hwrng inside arrive (every byte,
// not all one value, and two reads differ).
// Debian 12's user-mode-linux is built without it (CONFIG_HW_RANDOM_VIRTIO is not set: no
// virtio-rng.ko under /usr/lib/uml/modules/<version>, nor in modules.builtin), so there this test
// skips with one loud line; it runs on any UML build that has the driver.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_ID, describeRun, kindlingArgv, runUml, umlHasModule, umlKindlingOrSkipNotice, umlScratch, umlVersion } from './helpers.js';

const canRun = umlKindlingOrSkipNotice('uml/rng.test.ts', () =>
  umlHasModule('virtio_rng') ? undefined : `this user-mode-linux ${umlVersion()} has no virtio-rng driver (CONFIG_HW_RANDOM_VIRTIO is not set)`,
);
const scratch = umlScratch(afterEach);

describe.skipIf(!canRun)('virtio-rng in user-mode Linux against kindling', () => {
  it('/dev/hwrng delivers bytes from the device', async () => {
    const dir = scratch.dir('uml-rng');
    const socket = join(dir, 'rng.sock');
    await scratch.backend(kindlingArgv(socket, 'rng'), socket);
    const r = await runUml({
      devices: [{ socket, virtioId: VIRTIO_ID.rng }],
      modules: ['virtio_rng'],
      script: [
        'set -e',
        'echo "current $(cat /sys/class/misc/hw_random/rng_current)"',
        'dd if=/dev/hwrng of="$RUN/a" bs=4096 count=1 iflag=fullblock status=none',
        'dd if=/dev/hwrng of="$RUN/b" bs=4096 count=1 iflag=fullblock status=none',
        'echo "sizes $(stat -c %s "$RUN/a") $(stat -c %s "$RUN/b")"',
        'echo "distinct $(od -An -v -tx1 "$RUN/a" | tr -s " " "\\n" | grep . | sort -u | wc -l)"',
        'cmp -s "$RUN/a" "$RUN/b" && echo "reads equal" || echo "reads differ"',
      ].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(0);
    expect(r.output).toMatch(/current virtio_rng/);
    expect(r.output).toContain('sizes 4096 4096');
    const distinct = Number(/distinct (\d+)/.exec(r.output)?.[1]);
    expect(distinct).toBeGreaterThan(200); // 4096 uniform bytes take ~256 values
    expect(r.output).toContain('reads differ');
  }, 180_000);
});
