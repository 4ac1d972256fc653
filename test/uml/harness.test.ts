// The user-mode-Linux harness itself (test/uml/helpers.ts), with no device backend: module paths in
// dependency order (and that the kernel accepts that order), the commands' output and status, the
// boot-to-init time, the timeout killing UML's whole process group, and the per-run dir removed.
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeRun, groupMembers, modulePaths, runUml, umlOrSkipNotice } from './helpers.js';

const canRun = umlOrSkipNotice('uml/harness.test.ts');

describe.skipIf(!canRun)('user-mode-Linux harness', () => {
  it('orders modules after their dependencies and skips built-in ones', () => {
    const names = modulePaths(['virtio_net']).map((p) => basename(p));
    expect(names).toEqual(['failover.ko', 'net_failover.ko', 'virtio_net.ko']);
    expect(modulePaths(['virtio_blk']).map((p) => basename(p))).toEqual(['virtio_blk.ko']);
    expect(modulePaths(['virtio_ring'])).toEqual([]); // built in
    expect(() => modulePaths(['kindling_no_such_module'])).toThrow(/kindling_no_such_module not found/);
  });

  it("runs the commands as init, returns their output and status, loads modules, times boot, removes its files", async () => {
    const r = await runUml({
      modules: ['virtio_net'],
      devices: [],
      script: ['echo "run $RUN"', 'test -d /sys/module/virtio_net && echo "virtio_net loaded"', 'echo "to stderr" >&2', 'mark middle', 'exit 7'].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(7);
    expect(r.output).toContain('virtio_net loaded');
    expect(r.output).toContain('to stderr');
    expect(r.console).not.toContain('KINDLING-UML-INSMOD-FAILED');
    expect(r.console).toContain('KINDLING-MARK middle');
    expect(r.exitCode).toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.bootToInitMs).toBeGreaterThan(0);
    expect(r.bootToInitMs!).toBeLessThan(r.wallMs);
    expect(r.guestUptimeAtInit).toBeGreaterThan(0);
    const run = /run (\S+)/.exec(r.output)?.[1];
    expect(run).toMatch(/kindling-uml-/);
    expect(existsSync(run!)).toBe(false);
    expect(groupMembers(r.pid!)).toEqual([]);
    console.log(`UML boot to init: ${r.bootToInitMs!.toFixed(0)} ms host wall time (guest uptime ${r.guestUptimeAtInit} s), whole run ${r.wallMs.toFixed(0)} ms`);
  }, 120_000);

  it('kills the whole process group on timeout', async () => {
    const marks: string[] = [];
    const r = await runUml({ devices: [], script: 'echo "run $RUN"; mark sleeping; sleep 600', timeoutMs: 15_000, onMark: (m) => marks.push(m) });
    expect(r.timedOut).toBe(true);
    expect(r.status).toBeUndefined();
    expect(marks).toEqual(['sleeping']); // the guest got as far as the sleep before the kill
    expect(r.signal).toBe('SIGKILL');
    expect(groupMembers(r.pid!)).toEqual([]);
  }, 120_000);
});
