/**
 * The AT statement planner and the lock-key encoding, without a database: what is imaged,
 * what is refused (typed, before anything runs), and that two different keys never make
 * the same lock key.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AtStatementRefusedError } from '../../src/index.ts';
import { planStatement, planSelectForUpdate } from '../../src/client/at/sql.ts';
import { decodeUndo, encodeUndo, lockKeyOf, type UndoLog } from '../../src/client/at/undo.ts';
import { AtUndoFormatError } from '../../src/client/at/errors.ts';
import { parseLockKey } from '../../src/coordinator/lock-key.ts';

function refusal(sql: string, dialect: 'postgresql' | 'mysql', params: unknown[] = []) {
  try {
    planStatement(sql, params, dialect);
  } catch (err) {
    expect(err).toBeInstanceOf(AtStatementRefusedError);
    return (err as AtStatementRefusedError).reason;
  }
  return null;
}

describe('AT planner', () => {
  it('PostgreSQL: the before image keeps the WHERE and only the parameters it uses, renumbered', () => {
    const plan = planStatement(
      'UPDATE acct a SET balance = balance - $1, note = $2 WHERE a.id = $3 OR a.id = $3',
      [5, 'n', 7],
      'postgresql',
    );
    expect(plan.kind).toBe('update');
    if (plan.kind !== 'update') return;
    expect(plan.selectSql).toBe('SELECT * FROM "acct" AS "a" WHERE "a".id = $1 OR "a".id = $1');
    expect(plan.selectParams).toEqual([7]);
  });

  it('MySQL: the WHERE/ORDER BY/LIMIT parameters follow the SET ones', () => {
    const plan = planStatement(
      'UPDATE acct SET balance = ?, note = ? WHERE id > ? ORDER BY id LIMIT ?',
      [1, 'x', 10, 2],
      'mysql',
    );
    if (plan.kind !== 'update') throw new Error(plan.kind);
    expect(plan.selectSql).toBe('SELECT * FROM `acct` WHERE `id` > ? ORDER BY `id` ASC LIMIT ?');
    expect(plan.selectParams).toEqual([10, 2]);
  });

  it('MySQL INSERT: explicit values and parameters are known before it runs', () => {
    const plan = planStatement("INSERT INTO t (a, b) VALUES (?, 'x'), (3, NULL)", [1], 'mysql');
    expect(plan).toMatchObject({
      kind: 'insert',
      columns: ['a', 'b'],
      rows: [
        [
          { kind: 'param', index: 0 },
          { kind: 'literal', value: 'x' },
        ],
        [
          { kind: 'literal', value: '3' },
          { kind: 'literal', value: null },
        ],
      ],
    });
  });

  it('plain SELECTs pass through; FOR UPDATE is imaged', () => {
    expect(planStatement('SELECT * FROM t WHERE id = $1', [1], 'postgresql').kind).toBe(
      'passthrough',
    );
    expect(planStatement('SELECT * FROM t WHERE id = ? FOR UPDATE', [1], 'mysql').kind).toBe(
      'select-for-update',
    );
    expect(
      planSelectForUpdate('SELECT * FROM t WHERE id = $1', [1], 'postgresql').selectParams,
    ).toEqual([1]);
  });

  it('refuses what it cannot undo, with a typed reason', () => {
    expect(refusal('DROP TABLE t', 'postgresql')).toBe('ddl');
    expect(refusal('ALTER TABLE t ADD COLUMN x INT', 'mysql')).toBe('ddl');
    expect(refusal('UPDATE a, b SET a.x = b.x WHERE a.id = b.id', 'mysql')).toBe('multi-table');
    expect(refusal('UPDATE a SET x = 1 FROM b WHERE a.id = b.id', 'postgresql')).toBe(
      'multi-table',
    );
    expect(refusal('INSERT INTO t (id) VALUES (1) ON DUPLICATE KEY UPDATE id = 2', 'mysql')).toBe(
      'unsupported',
    );
    expect(refusal('WITH x AS (SELECT 1) UPDATE t SET a = 1', 'postgresql')).toBe('unsupported');
    expect(refusal('UPDATE t SET a = 1; DELETE FROM t', 'postgresql')).toBe('unsupported');
    expect(refusal('INSERT INTO t (id) SELECT id FROM u', 'mysql')).toBe('unsupported');
    expect(refusal('UPDATE t SET a = $9 WHERE b = $9', 'postgresql', [1])).toBe('unsupported');
    expect(refusal('not sql at all', 'mysql')).toBe('unparseable');
    expect(refusal('', 'mysql')).toBe('unparseable');
  });

  it('hostile input: random strings are planned or refused with the typed error, nothing else', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 80 }),
        fc.constantFrom('postgresql', 'mysql'),
        (sql, d) => {
          try {
            planStatement(sql, [], d as 'postgresql' | 'mysql');
          } catch (err) {
            expect(err).toBeInstanceOf(AtStatementRefusedError);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('AT lock keys and undo format', () => {
  it('different primary keys make different lock keys, and the TC parses every one', () => {
    const value = fc.oneof(
      fc.string({ maxLength: 8 }),
      fc.constantFrom('\u0000null', '%N', '%B', 'b64:AA==', null, { b64: 'AA==' }),
      fc.base64String({ maxLength: 8 }).map((b64) => ({ b64 })),
    );
    fc.assert(
      fc.property(
        fc.array(value, { minLength: 2, maxLength: 2 }),
        fc.array(value, { minLength: 2, maxLength: 2 }),
        (a, b) => {
          const ka = lockKeyOf([{ table: 'public.t', pks: [a] }]);
          const kb = lockKeyOf([{ table: 'public.t', pks: [b] }]);
          expect(ka === kb).toBe(JSON.stringify(a) === JSON.stringify(b));
          expect(parseLockKey('res', ka)).toHaveLength(1);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('encodes compactly, deflates large logs, and refuses an unknown format', () => {
    const log: UndoLog = {
      v: 1,
      items: [
        {
          op: 'update',
          schema: 's',
          table: 't',
          pk: ['id'],
          cols: ['id', 'v'],
          before: [['1', 'x'.repeat(10_000)]],
          after: [['1', null]],
        },
      ],
    };
    const enc = encodeUndo(log);
    expect(enc.context).toBe('v1;json;deflate');
    expect(enc.info.length).toBeLessThan(1_000);
    expect(decodeUndo(enc.context, enc.info)).toEqual(log);
    expect(() => decodeUndo('v9;xml', enc.info)).toThrow(AtUndoFormatError);
    expect(() => decodeUndo('v1;json', Buffer.from('{"v":2,"items":[]}'))).toThrow(
      AtUndoFormatError,
    );
  });
});
