import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Finds or starts PostgreSQL and MariaDB before any file runs, stops what it started after.
    globalSetup: ['test/support/services.ts', 'test/support/tls.ts'],
    // Integration tests start real node processes; two cores, so keep files serial enough.
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
