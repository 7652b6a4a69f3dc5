/**
 * Fixture of the fallback run (fallback-run.config.ts), never in the project's own suite: one
 * failing test, to show that a run on private servers still exits non-zero when a test fails.
 */
import { expect, it } from 'vitest';

it('fails on purpose', () => {
  expect('the fallback run').toBe('a run that passes whatever its tests do');
});
