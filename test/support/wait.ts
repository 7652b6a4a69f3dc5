/** Waiting in tests: a plain pause, and polling for a condition (prefer it to a fixed sleep). */
import { setTimeout as delay } from 'node:timers/promises';

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return delay(ms);
}

/**
 * Polls `fn` every `everyMs` until it returns something other than undefined; after
 * `timeoutMs` fails naming `what` and the last error `fn` threw.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`,
      );
    await delay(everyMs);
  }
}

/**
 * Retries the assertion `check` every `everyMs` until it passes; after `timeoutMs` throws
 * the assertion's own last error (so the failure shows the expectation's diff).
 */
export async function eventually(
  check: () => void,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await delay(everyMs);
    }
  }
}
