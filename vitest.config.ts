import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/fuzz/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // KVM tests start vCPU threads; two cores are shared between the test files.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
