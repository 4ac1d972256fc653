// The exec agent in the default guest: /init starts it on the documented vsock port, and the
// initramfs gets a static binary (no PT_INTERP: the guest has no dynamic loader).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AGENT_VSOCK_PORT } from '../../src/agent/protocol.js';
import { agentBinary, compileAgent } from '../../src/guest-image/agent-binary.js';
import { GUEST_AGENT_PORT, initScript } from '../../src/guest-image/init-script.js';
import { agentSkipReason } from './agent-harness.js';

const tmp = mkdtempSync(join(tmpdir(), 'kindling-agent-image-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const skip = agentSkipReason();
if (skip) console.warn(`SKIPPING the agent binary checks (test/unit/agent-guest-image.test.ts): ${skip}`);

describe('exec agent in the default guest', () => {
  it('/init starts the agent on vsock port 10789 when /dev/vsock exists, in the background, before the command', () => {
    expect(GUEST_AGENT_PORT).toBe(10789);
    expect(AGENT_VSOCK_PORT).toBe(GUEST_AGENT_PORT);
    const s = initScript();
    const f = join(tmp, 'init');
    writeFileSync(f, s);
    expect(spawnSync('sh', ['-n', f]).status).toBe(0);
    const line = '/bin/kindling-agent --vsock 10789 </dev/null >/dev/console 2>&1 &';
    expect(s).toContain('if [ -x /bin/kindling-agent ] && [ -c /dev/vsock ]; then\n  ' + line);
    expect(s.indexOf(line)).toBeGreaterThan(s.indexOf('insmod'));
    expect(s.indexOf(line)).toBeLessThan(s.indexOf('setsid cttyhack sh -c "$script"'));
    expect(initScript('/etc/modules.list', 5000)).toContain('--vsock 5000 ');
    expect(() => initScript('/etc/modules.list', 0)).toThrow(RangeError);
    expect(() => initScript('/etc/modules.list', 1.5)).toThrow(RangeError);
  });

  it.skipIf(skip !== '')('the agent binary is a static x86-64 ELF with no interpreter', () => {
    const b = agentBinary(tmp);
    expect(b.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(b[4]).toBe(2); // ELFCLASS64
    expect(b.readUInt16LE(18)).toBe(62); // EM_X86_64
    const phoff = Number(b.readBigUInt64LE(32));
    const phentsize = b.readUInt16LE(54);
    const phnum = b.readUInt16LE(56);
    const types = Array.from({ length: phnum }, (_, i) => b.readUInt32LE(phoff + i * phentsize));
    expect(types).not.toContain(3); // PT_INTERP
    expect(types).toContain(1); // PT_LOAD
    expect(b.length).toBeLessThan(1024 * 1024);
  });

  it('a missing source or failing compiler is one line', () => {
    expect(() => compileAgent(join(tmp, 'out'), join(tmp, 'missing.c'))).toThrow(/^kindling guest: the exec agent's source is missing/);
    writeFileSync(join(tmp, 'bad.c'), 'int main( {');
    if (!skip) expect(() => compileAgent(join(tmp, 'out'), join(tmp, 'bad.c'))).toThrow(/^kindling guest: building the exec agent failed.*\S/);
  });
});
