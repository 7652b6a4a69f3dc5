/**
 * Database error text never reaches a TC client (issue 14 item 2, docs/security.md): an
 * error wrapping a driver's failure is answered by its kind only; a Concord error of its
 * own is answered with its message.
 */
import { describe, expect, it } from 'vitest';
import { errorToWire } from '../../src/server/tc/mapping.ts';
import { DbQueryError, DbUnavailableError } from '../../src/store/db/errors.ts';
import { LockConflictError, UnknownXidError } from '../../src/shared/errors.ts';

const SECRET =
  'password authentication failed for user "concord" at postgres://concord:s3cret@db.internal:5432/tc';

describe('error text told to TC clients', () => {
  it('a database failure is told by its kind, without the driver text', () => {
    for (const err of [
      new DbUnavailableError(`the pg database is unreachable: ${SECRET}`, {
        cause: new Error(SECRET),
      }),
      new DbQueryError(`the pg database refused a statement: ${SECRET}`, '28P01', {
        cause: new Error(SECRET),
      }),
    ]) {
      const wire = errorToWire(err, () => null);
      expect(wire.message).not.toMatch(/s3cret|db\.internal|password|concord:/);
      expect(wire.message).toMatch(/session store/);
    }
    expect(
      errorToWire(new DbUnavailableError('x', { cause: new Error(SECRET) }), () => null).retryable,
    ).toBe(true);
  });

  it('a Concord error of its own keeps its message', () => {
    const unknown = new UnknownXidError('127.0.0.1:8091:42');
    expect(errorToWire(unknown, () => null).message).toBe(unknown.message);
    const conflict = new LockConflictError('127.0.0.1:8091:1', ['t:1']);
    expect(errorToWire(conflict, () => null).message).toBe(conflict.message);
  });
});
