// The exec agent's binary for the default guest's initramfs: build/guests/kindling-agent, compiled
// from guest/agent/agent.c by `node scripts/build.mjs guests` (static: the guest has no shared
// libc), or compiled here when that build is missing or older than the source.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this module is src/guest-image/*.ts or dist/guest-image/*.js). */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AGENT_SOURCE = join(ROOT, 'guest', 'agent', 'agent.c');
export const AGENT_BUILT = join(ROOT, 'build', 'guests', 'kindling-agent');

/** gcc arguments that build the agent from `src` into `out`. */
export function agentCompileArgs(src: string, out: string): string[] {
  return ['-static', '-Os', '-s', '-Wall', '-Wextra', '-o', out, src];
}

/** Compile the agent into `out`; throws one line naming what failed. */
export function compileAgent(out: string, src: string = AGENT_SOURCE): void {
  if (!existsSync(src)) throw new Error(`kindling guest: the exec agent's source is missing (${src})`);
  const r = spawnSync('gcc', agentCompileArgs(src, out), { encoding: 'utf8' });
  if (r.error) throw new Error(`kindling guest: cannot run gcc to build the exec agent: ${r.error.message}`);
  if (r.status !== 0) {
    const first = r.stderr.split('\n').find((l) => /error/.test(l)) ?? r.stderr.split('\n')[0];
    throw new Error(`kindling guest: building the exec agent failed (gcc -static; Debian needs libc6-dev): ${first.trim()}`);
  }
}

/** The agent binary's bytes: the build step's output when current, else compiled into `scratch`. */
export function agentBinary(scratch: string): Buffer {
  const fresh = existsSync(AGENT_BUILT) && (!existsSync(AGENT_SOURCE) || statSync(AGENT_BUILT).mtimeMs >= statSync(AGENT_SOURCE).mtimeMs);
  if (fresh) return readFileSync(AGENT_BUILT);
  const out = join(scratch, 'kindling-agent');
  compileAgent(out);
  return readFileSync(out);
}
