// Linux's virtio_console driver (user-mode Linux) against `kindling vhost-user --device console`:
// a shell inside writes to hvc0 and the kindling process's stdout receives exactly those bytes
// (several lines, one longer than a page so it spans more than one transmit buffer).
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_ID, describeRun, exitWithin, kindlingArgv, runUml, umlKindlingOrSkipNotice, umlScratch } from './helpers.js';

const canRun = umlKindlingOrSkipNotice('uml/console.test.ts');
const scratch = umlScratch(afterEach);

describe.skipIf(!canRun)('virtio_console in user-mode Linux against kindling', () => {
  it("hvc0 carries a shell's output to the kindling process's stdout", async () => {
    const dir = scratch.dir('uml-console');
    const socket = join(dir, 'console.sock');
    const b = await scratch.backend(kindlingArgv(socket, 'console'), socket);
    const r = await runUml({
      devices: [{ socket, virtioId: VIRTIO_ID.console }],
      modules: ['virtio_console'],
      script: [
        'i=0; while [ ! -c /dev/hvc0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done',
        'test -c /dev/hvc0 || { echo "no /dev/hvc0"; ls -l /dev; exit 3; }',
        // A shell's output: its arithmetic, a command's output, and 6000 bytes of one line.
        `sh -c 'echo "hvc0 says $((6*7))"; uname -s; i=0; while [ $i -lt 600 ]; do printf 0123456789; i=$((i+1)); done; echo; echo "hvc0 end"' > /dev/hvc0`,
        'echo written',
      ].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(0);
    expect(r.output).toContain('written');
    expect(await exitWithin(b), b.stderr()).toEqual({ code: 0, signal: null });
    const out = b.stdout().replace(/\r\n/g, '\n');
    expect(out).toContain('hvc0 says 42\nLinux\n');
    expect(out).toContain(`${'0123456789'.repeat(600)}\nhvc0 end\n`);
  }, 180_000);
});
