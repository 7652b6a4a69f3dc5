/**
 * The nested test run of test/support/services.test.ts: the project's vitest config (and so
 * its service step), on the database suites plus one test that fails on purpose, so the run
 * shows both that the suites pass on private servers and that a failure still fails the run.
 */
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import base from '../../../vitest.config.ts';

export const FALLBACK_SUITES = [
  'test/support/services-env.test.ts',
  'test/client/fence-pg.test.ts',
  'test/client/fence-mysql.test.ts',
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
