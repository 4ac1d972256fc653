// Property budgets. `npm test` runs every property with its quick budget; `npm run fuzz` sets
// KINDLING_FUZZ_RUNS (and a seed / time limit, see test/fuzz/setup.ts) to run them long.
export function runs(quick: number): number {
  const n = Number(process.env.KINDLING_FUZZ_RUNS);
  // Never below the quick budget: some properties also check that every outcome kind was reached.
  return Number.isFinite(n) && n > 0 ? Math.max(n, quick) : quick;
}
