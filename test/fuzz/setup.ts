// vitest setup for every test file: fast-check's global parameters for `npm run fuzz` (seed, time
// limit) and a reporter that records each property run (count, failure, seed, path, counterexample)
// to KINDLING_FUZZ_LOG so scripts/fuzz.mjs can print one summary line. Without those variables the
// reporter behaves exactly like fast-check's default (throws the default report on failure).
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';
import { expect } from 'vitest';

const log = process.env.KINDLING_FUZZ_LOG;
const seed = process.env.KINDLING_FUZZ_SEED !== undefined ? Number(process.env.KINDLING_FUZZ_SEED) : undefined;
const timeMs = process.env.KINDLING_FUZZ_TIME !== undefined ? Number(process.env.KINDLING_FUZZ_TIME) * 1000 : undefined;

const numRuns = process.env.KINDLING_FUZZ_RUNS !== undefined ? Number(process.env.KINDLING_FUZZ_RUNS) : undefined;

fc.configureGlobal({
  ...(numRuns !== undefined ? { numRuns } : {}),
  ...(seed !== undefined ? { seed } : {}),
  ...(timeMs !== undefined ? { interruptAfterTimeLimit: timeMs, markInterruptAsFailure: false } : {}),
  reporter(details) {
    if (log) {
      const entry = {
        test: expect.getState().currentTestName ?? '?',
        file: expect.getState().testPath ?? '?',
        runs: details.numRuns,
        failed: details.failed,
        seed: details.seed,
        path: details.counterexamplePath,
        counterexample: details.failed ? fc.stringify(details.counterexample) : undefined,
        error: details.failed ? firstLine(details.errorInstance) : undefined,
        interrupted: details.interrupted,
      };
      appendFileSync(log, JSON.stringify(entry) + '\n');
    }
    if (details.failed) {
      // fast-check's default report names the counterexample; the assertion that failed is the cause.
      const cause = details.errorInstance;
      throw new Error(`${fc.defaultReportMessage(details)}\n\nGot error: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
  },
});

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}
