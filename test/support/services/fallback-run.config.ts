/**
 * The nested test run of test/support/services.test.ts: the project's vitest config (and so
 * its service step), on the database suites plus one test that fails on purpose, so the run
 * shows both that the suites pass on private servers and that a failure still fails the run.
 */
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import base from '../../../vitest.config.ts';

/**
 * Both databases, the variables in workers and child processes, and the db store on both
 * dialects. Kept short: the fence suites' cleanup test assumes its file runs in under a
 * minute (other tests' rows must still be young), which a loaded machine breaks.
 */
export const FALLBACK_SUITES = [
  'test/support/services-env.test.ts',
  'test/store-db/db-store.test.ts',
];
export const FAILS_ON_PURPOSE = 'test/support/services/fails-on-purpose.fixture.ts';

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    root: resolve(import.meta.dirname, '../../..'),
    include: [...FALLBACK_SUITES, FAILS_ON_PURPOSE],
  },
});
