// `kindling run -- CMD` through the exec agent, without KVM: the new flags' parsing (--agent,
// --agent-timeout, --console-log; a property over well-formed and faulty argv, every error one line
// with exit 2) and runCommand() (src/main/exec.ts), the CLI's agent path, against the real agent over
// a fake VM: stdout/stderr separation, stdin with EOF, the shell's status (127, 128+N), the agent
// timeout line, a VM that ends first or while the command runs.
import net from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/client.js';
import { errorLine, MAX_AGENT_TIMEOUT_S, parseCommandLine, USAGE, UsageError } from '../../src/cli/cli-args.js';
import { type AgentVm, connectAgent, runCommand } from '../../src/main/exec.js';
import type { VsockApi } from '../../src/devices/virtio/vsock/bridge.js';
import { runs } from '../fuzz/budget.js';
import { type AgentHarness, agentSkipReason, startAgent } from './agent-harness.js';

/** An error's printed line: one line of printable text, with `code` (as test/unit/cli-args.test.ts checks). */
function expectOneLine(e: unknown, code: number): void {
  const { line, code: c } = errorLine(e);
  expect(c).toBe(code);
  expect(line).toMatch(/^kindling: [^\p{Cc}\u2028\u2029]+$/u);
}

describe('run flags for a command through the agent', () => {
  it('are in the usage text', () => {
    for (const f of ['--agent', '--agent-timeout SECONDS', '--console-log FILE']) expect(USAGE).toContain(f);
  });

  it('property: well-formed --agent/--agent-timeout/--console-log parse to exactly what they say', () => {
    const word = fc.string({ minLength: 1, maxLength: 8 }).filter((w) => !w.startsWith('-'));
    fc.assert(
      fc.property(
        fc.record({
          kernel: fc.option(word, { nil: undefined }),
          agent: fc.boolean(),
          secs: fc.option(fc.oneof(fc.integer({ min: 1, max: MAX_AGENT_TIMEOUT_S }).map(String), fc.tuple(fc.nat({ max: 999 }), fc.integer({ min: 1, max: 999 })).map(([a, b]) => `${a}.${String(b).padStart(3, '0')}`)), { nil: undefined }),
          log: fc.option(word, { nil: undefined }),
          cmd: fc.array(fc.string({ maxLength: 6 }), { minLength: 1, maxLength: 4 }),
        }),
        (m) => {
          const argv = ['run'];
          if (m.kernel !== undefined) argv.push('--kernel', m.kernel);
          if (m.agent) argv.push('--agent');
          if (m.secs !== undefined) argv.push('--agent-timeout', m.secs);
          if (m.log !== undefined) argv.push(`--console-log=${m.log}`);
          argv.push('--', ...m.cmd);
          const c = parseCommandLine(argv);
          if (c.kind !== 'run') throw new Error('not run');
          expect(c.guestArgs).toEqual(m.cmd);
          expect(c.agent).toBe(m.agent ? true : undefined);
          expect(c.agentTimeoutMs).toBe(m.secs === undefined ? undefined : Math.max(1, Math.round(Number(m.secs) * 1000)));
          expect(c.consoleLog).toBe(m.log);
          // Through the agent the words are its command, never init's arguments.
          expect(c.config.cmdlineExtra).toEqual(m.kernel !== undefined && !m.agent ? ['--', ...m.cmd] : undefined);
          expect(c.defaultGuest).toBe(m.kernel === undefined);
        },
      ),
      { numRuns: runs(300) },
    );
  });

  it('property: a bad --agent-timeout, an empty --console-log or a flag without a command is one usage line, exit 2', () => {
    const badSecs = fc.oneof(
      fc.constantFrom('0', '0.0', '-1', '+3', '1e3', '0x10', ' 8', '8 ', '', 'abc', 'Infinity', 'NaN', '1.', '.5', '1.2345', String(MAX_AGENT_TIMEOUT_S + 1), '99999999', '1\n2'),
      fc.string({ maxLength: 6 }).filter((s) => !/^[0-9]{1,7}(\.[0-9]{1,3})?$/.test(s) || Number(s) === 0),
    );
    const fault = fc.oneof(
      badSecs.map((v) => ({ argv: [`--agent-timeout=${v}`, '--', 'true'], names: /--agent-timeout needs a number of seconds/ })),
      fc.constant({ argv: ['--console-log=', '--', 'true'], names: /--console-log needs a file path/ }),
      fc.constantFrom('--agent', '--agent-timeout=5', '--console-log=f').map((f) => ({ argv: [f], names: new RegExp(`${f.split('=')[0]} is for a command run through the guest agent`) })),
      fc.constantFrom('--agent', '--agent-timeout=5', '--console-log=f').map((f) => ({ argv: [f, '--'], names: new RegExp(`${f.split('=')[0]} is for a command`) })),
    );
    fc.assert(
      fc.property(fault, fc.boolean(), (f, withKernel) => {
        const argv = ['run', ...(withKernel ? ['--kernel', 'k'] : []), ...f.argv];
        let e: unknown;
        try {
          parseCommandLine(argv);
        } catch (x) {
          e = x;
        }
        expect(e).toBeInstanceOf(UsageError);
        expect((e as Error).message).toMatch(f.names);
        expectOneLine(e, 2);
      }),
      { numRuns: runs(300) },
    );
  });
});

const skip = agentSkipReason();
if (skip) console.warn(`SKIPPING runCommand's agent tests (test/unit/exec-cli.test.ts): ${skip}`);
let h: AgentHarness | undefined;
const opened: net.Socket[] = [];
beforeAll(async () => {
  if (skip) return;
  const r = await startAgent();
  if (typeof r === 'string') throw new Error(r);
  h = r;
});
afterAll(async () => {
  for (const s of opened) s.destroy();
  await h?.stop();
});

/** A VM whose agent is the harness's (after `refusals` refused connects), ending when end() is called. */
function fakeVm(refusals = 0): AgentVm & { end(detail?: string): void } {
  let endIt!: (e: { reason: string; exitCode: number; detail?: string }) => void;
  const ended = new Promise<{ reason: string; exitCode: number; detail?: string }>((r) => (endIt = r));
  let stopped = false;
  const vsock: VsockApi = {
    connect: (port) => {
      if (refusals-- > 0) return Promise.reject(new Error(`vsock: guest port ${port} refused the connection`));
      return new Promise((res, rej) => {
        const s = net.connect(h!.sock);
        opened.push(s);
        s.once('connect', () => res(s));
        s.once('error', rej);
      });
    },
    listen: () => {
      throw new Error('unused');
    },
  };
  let client: Promise<AgentClient> | undefined;
  return {
    agentClient: (o) => (client ??= connectAgent(vsock, { ...o, stopped: () => (stopped ? 'the VM has stopped' : undefined) }).then((c) => c.client)),
    wait: () => ended,
    end: (detail) => {
      stopped = true;
      for (const s of opened) s.destroy();
      endIt({ reason: 'error', exitCode: 1, detail });
    },
  };
}

function sinks() {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  stderr.on('data', (b: Buffer) => err.push(b));
  return {
    stdout,
    stderr,
    seen: () => out.length > 0,
    text: async () => ({ out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString() }),
    close: () => (stdout.end(), stderr.end()),
  };
}

describe.skipIf(skip !== '')('runCommand (kindling run -- CMD through the agent)', () => {
  it('stdout and stderr separate, stdin to the command with EOF, the command status', async () => {
    const vm = fakeVm(3);
    const io = sinks();
    const r = await runCommand(vm, ['sh', '-c', 'tr a-z A-Z; echo to-err >&2; exit 5'], { stdin: Readable.from([Buffer.from('hello '), Buffer.from('world\n')]), stdout: io.stdout, stderr: io.stderr });
    io.close();
    expect(r).toEqual({ status: 5 });
    expect(await io.text()).toEqual({ out: 'HELLO WORLD\n', err: 'to-err\n' });
  });

  it('a missing command is 127 with the shell message; a signal is 128+N', async () => {
    const vm = fakeVm();
    let io = sinks();
    expect(await runCommand(vm, ['no-such-cmd-kindling'], { stdout: io.stdout, stderr: io.stderr })).toEqual({ status: 127 });
    io.close();
    expect((await io.text()).err).toBe('no-such-cmd-kindling: not found\n');
    io = sinks();
    expect(await runCommand(vm, ['sh', '-c', 'kill -TERM $$'], { stdout: io.stdout, stderr: io.stderr })).toEqual({ status: 143 });
    io.close();
  });

  it('an agent that never answers: one line after the timeout', async () => {
    const vm = fakeVm(1e9);
    const io = sinks();
    const t0 = Date.now();
    const r = await runCommand(vm, ['true'], { stdout: io.stdout, stderr: io.stderr }, { timeoutMs: 300 });
    expect(r).toEqual({ error: 'the guest agent did not answer on vsock port 10789 within 300 ms (last attempt: vsock: guest port 10789 refused the connection)' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    io.close();
  });

  it('a VM that ends before the agent answers, or while the command runs: one line naming how it ended', async () => {
    let vm = fakeVm(1e9);
    let io = sinks();
    setTimeout(() => vm.end('triple fault'), 100);
    expect(await runCommand(vm, ['true'], { stdout: io.stdout, stderr: io.stderr }, { timeoutMs: 10_000 })).toEqual({ error: 'the guest ended (error: triple fault) before its agent answered' });
    io.close();
    vm = fakeVm();
    io = sinks();
    const r = runCommand(vm, ['sh', '-c', 'echo started; sleep 100'], { stdout: io.stdout, stderr: io.stderr });
    for (let i = 0; i < 500 && !io.seen(); i++) await new Promise((x) => setTimeout(x, 10));
    expect((await io.text()).out).toBe('started\n');
    vm.end('stopped by the test');
    expect(await r).toMatchObject({ error: expect.stringMatching(/^the guest (ended \(error: stopped by the test\) while the command ran|agent's connection was lost while the command ran)/) });
    io.close();
  });
});
