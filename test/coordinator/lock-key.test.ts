import { describe, expect, it } from 'vitest';
import {
  MAX_LOCK_KEY_CHARS,
  MAX_LOCK_ROWS_PER_BRANCH,
  MAX_PK_CHARS,
  MAX_TABLE_NAME_CHARS,
} from '../../src/coordinator/limits.ts';
import { parseLockKey, rowKey, splitRowKey } from '../../src/coordinator/lock-key.ts';
import { BadRequestError } from '../../src/shared/errors.ts';

const R = 'jdbc:mysql://db/orders';

function expectBad(lockKey: unknown, message: RegExp, resourceId = R): void {
  let thrown: unknown;
  try {
    parseLockKey(resourceId, lockKey);
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(BadRequestError);
  expect((thrown as BadRequestError).code).toBe('BAD_REQUEST');
  expect((thrown as Error).message).toMatch(message);
}

describe('lock key parsing', () => {
  it('turns table:pk groups into resourceId^^^table^^^pk row keys, sorted and without duplicates', () => {
    expect(parseLockKey(R, 'order:2,1;stock:9;order:1')).toEqual([
      `${R}^^^order^^^1`,
      `${R}^^^order^^^2`,
      `${R}^^^stock^^^9`,
    ]);
  });

  it('lets a primary key hold a colon (a group splits at its first one, as Seata)', () => {
    expect(parseLockKey(R, 'log:2024-01-01T00:00:00')).toEqual([
      rowKey(R, 'log', '2024-01-01T00:00:00'),
    ]);
  });

  it('round-trips row keys', () => {
    expect(splitRowKey(rowKey(R, 't', '7'))).toEqual({ resourceId: R, table: 't', pk: '7' });
  });

  it('refuses an empty key, an empty group, table or primary key', () => {
    expectBad('', /empty/);
    expectBad('t:1;;u:2', /group 2 is empty/);
    expectBad('t:1;', /group 2 is empty/);
    expectBad(':1', /empty table name/);
    expectBad('t:', /lists no primary keys/);
    expectBad('t:1,,2', /empty primary key/);
    expectBad('t:1,', /empty primary key/);
  });

  it('refuses a group without a colon, and a non-string', () => {
    expectBad('t', /no ':'/);
    expectBad(42, /not a string/);
  });

  it('refuses bad characters: control characters and the ^ of the row-key separator', () => {
    expectBad('t:1\n', /control character/);
    expectBad('t:\u00002', /control character/);
    expectBad('t^^^x:1', /'\^'/);
    expectBad('a,b:1', /table name .* holds ','/);
    expectBad('t:1', /resourceId .* control character or '\^'/, 'db^^^x');
    expectBad('t:1', /resourceId is empty/, '');
  });

  it('refuses too long keys, tables and primary keys', () => {
    expectBad(`t:${'1'.repeat(MAX_LOCK_KEY_CHARS)}`, new RegExp(`limit of ${MAX_LOCK_KEY_CHARS}`));
    expectBad(
      `${'t'.repeat(MAX_TABLE_NAME_CHARS + 1)}:1`,
      new RegExp(`limit of ${MAX_TABLE_NAME_CHARS}`),
    );
    expectBad(`t:${'9'.repeat(MAX_PK_CHARS + 1)}`, new RegExp(`limit of ${MAX_PK_CHARS}`));
  });

  it(`refuses more than MAX_LOCK_ROWS_PER_BRANCH (${MAX_LOCK_ROWS_PER_BRANCH}) rows, and accepts exactly that many`, () => {
    const pks = (n: number) => Array.from({ length: n }, (_, i) => i).join(',');
    expect(parseLockKey(R, `t:${pks(MAX_LOCK_ROWS_PER_BRANCH)}`)).toHaveLength(
      MAX_LOCK_ROWS_PER_BRANCH,
    );
    expectBad(`t:${pks(MAX_LOCK_ROWS_PER_BRANCH + 1)}`, /more than 5000 rows/);
  });
});
