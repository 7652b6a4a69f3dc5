/** BranchResult.message is cut to 2 KiB of UTF-8, on a character boundary. */
import { describe, expect, it } from 'vitest';
import { MAX_RM_MESSAGE_BYTES, boundRmMessage } from '../../src/shared/tc-wire.ts';

describe('boundRmMessage', () => {
  it('keeps a short message as it is', () => {
    expect(boundRmMessage('dirty write: {"current":{"balance":"42"}}')).toBe(
      'dirty write: {"current":{"balance":"42"}}',
    );
    const exact = 'x'.repeat(MAX_RM_MESSAGE_BYTES);
    expect(boundRmMessage(exact)).toBe(exact);
  });

  it('cuts a long one to at most 2 KiB, never inside a multi-byte character', () => {
    for (const unit of ['x', 'é', '€', '😀']) {
      const out = boundRmMessage(unit.repeat(3000));
      expect(Buffer.byteLength(out)).toBeLessThanOrEqual(MAX_RM_MESSAGE_BYTES);
      expect(Buffer.byteLength(out)).toBeGreaterThan(MAX_RM_MESSAGE_BYTES - 8);
      expect(out.endsWith('…')).toBe(true);
      expect([...out.slice(0, -1)].every((c) => c === unit)).toBe(true);
    }
  });
});
