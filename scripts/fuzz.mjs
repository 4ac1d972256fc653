#!/usr/bin/env node
// npm run fuzz [-- --runs N] [--seed S] [--time SECONDS] [--filter REGEX]
// (--filter is vitest's -t: a regular expression matched against `describe-name test-name`)
// Runs every fast-check property (the unit suites under test/unit and test/fuzz) with a long budget
// and ends with one line: `fuzz: <P> properties, <R> runs, <F> failures, seed <S>`.
// A failure prints the property, seed, path and shrunk counterexample; re-running with the same
// --seed (and the same --runs) reproduces it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** vitest -t matches a regular expression against the describe and test names joined by spaces. */
function testPattern(name) {
  return name.split(' > ').join(' ').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
function shellQuote(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
let values;
try {
  ({ values } = parseArgs({ options: { runs: { type: 'string' }, seed: { type: 'string' }, time: { type: 'string' }, filter: { type: 'string' } } }));
} catch (e) {
  console.error(`fuzz: ${e.message}`);
  process.exit(2);
}
const runs = Number(values.runs ?? 10000);
const seed = values.seed !== undefined ? Number(values.seed) : (Date.now() ^ (process.pid << 16)) | 0;
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(seed)) {
  console.error('fuzz: --runs must be a positive integer and --seed an integer');
  process.exit(2);
}
const log = join(mkdtempSync(join(tmpdir(), 'kindling-fuzz-')), 'runs.jsonl');
const env = { ...process.env, KINDLING_FUZZ_RUNS: String(runs), KINDLING_FUZZ_SEED: String(seed), KINDLING_FUZZ_LOG: log };
if (values.time !== undefined) env.KINDLING_FUZZ_TIME = values.time;
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const files = ['test/unit', 'test/fuzz'];
const args = [vitest, 'run', ...files, '--testTimeout', String(24 * 3600 * 1000)];
if (values.filter) args.push('-t', values.filter);
console.log(`fuzz: ${runs} runs per property, seed ${seed}${values.time ? `, at most ${values.time} s per property` : ''}`);
const r = spawnSync(process.execPath, args, { cwd: root, env, stdio: 'inherit' });
const entries = existsSync(log)
  ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
  : [];
const failures = entries.filter((e) => e.failed);
for (const f of failures) {
  console.log(`\nFAILED ${f.file.replace(root + '/', '')} > ${f.test}\n  seed ${f.seed}, path "${f.path}"\n  counterexample: ${f.counterexample}\n  error: ${f.error}\n  reproduce: npm run fuzz -- --runs ${runs} --seed ${seed} --filter ${shellQuote(testPattern(f.test))}`);
}
if (entries.length === 0 && r.status === 0) {
  console.error(`fuzz: no property ran${values.filter ? ` (--filter ${shellQuote(values.filter)} matched none)` : ''}`);
  process.exit(1);
}
const total = entries.reduce((a, e) => a + e.runs, 0);
const failedCount = failures.length + (r.status !== 0 && failures.length === 0 ? 1 : 0);
console.log(`fuzz: ${entries.length} properties, ${total} runs, ${failedCount} failures, seed ${seed}`);
process.exit(failedCount ? 1 : 0);
