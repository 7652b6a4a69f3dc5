/**
 * The fence's behaviour, written once and run against each real database under each
 * isolation level. Every test names the property it guards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../../src/shared/errors.ts';
import {
  ConfirmWithoutTryError,
  DEFAULT_RETRY_HORIZON_MS,
  FenceAbortedError,
  FenceConflictError,
  FenceMisuseError,
  FenceRetentionError,
  FenceSchemaError,
  MIN_RETRY_HORIZON_MS,
  type FenceKey,
  type FenceOp,
  type IsolationLevel,
} from '../../../src/client/fence/index.ts';
import { capturingLogger, newBranchId, newXid, sleep } from './db.ts';
import type { FenceDriver } from './drivers.ts';

/**
 * Concurrency tests repeat their whole scenario this many times (the brief: make sure they are not
 * flaky).
 */
export const CONCURRENCY_REPEATS = 3;
/** try/cancel pairs racing per repeat. */
export const RACE_PAIRS = 50;
/** Pairs in flight at once: 2 connections each, within the test pool. */
export const RACE_WAVE = 10;

/**
 * One database's fence file: open a pool of `2 * RACE_WAVE + 4` connections (two per racing
 * pair, plus the tests' own statements and lock holders), build the driver and its tables,
 * and run the suite under READ COMMITTED and REPEATABLE READ.
 */
export function defineFenceFile<Tx, Pool extends { end(): Promise<void> }>(
  name: string,
  label: string,
  connect: (max: number) => Promise<Pool>,
  makeDriver: (pool: Pool) => FenceDriver<Tx>,
): void {
  let pool: Pool | undefined;
  let driver: FenceDriver<Tx> | undefined;

  beforeAll(async () => {
    pool = await connect(2 * RACE_WAVE + 4);
    driver = makeDriver(pool);
    await driver.createBusinessTables();
    await driver.newFence().ensureSchema();
  });

  afterAll(async () => {
    await driver?.dropAll();
    await pool?.end();
  });

  const get = () => {
    if (driver === undefined) throw new Error(`${name} driver not initialised (beforeAll failed)`);
    return driver;
  };

  describe(`${name} fence`, () => {
    defineFenceSuite(label, get, 'READ COMMITTED');
    defineFenceSuite(label, get, 'REPEATABLE READ');
  });
}

export function defineFenceSuite<Tx>(
  label: string,
  getDriver: () => FenceDriver<Tx>,
  isolation: IsolationLevel,
): void {
  const d = () => getDriver();
  const fence = (
    extra: {
      maxAttempts?: number;
      logger?: ReturnType<typeof capturingLogger>['logger'];
      retryHorizonMs?: number;
    } = {},
  ) => d().newFence({ isolationLevel: isolation, ...extra });
  const key = (xid: string, branchId: string, op: FenceOp): FenceKey => ({ xid, branchId, op });

  const record = (tx: Tx, xid: string, branchId: string, kind: string) =>
    d().txSql(tx, `INSERT INTO ${d().names.ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`, [
      xid,
      branchId,
      kind,
    ]);
  const ledger = async (xid: string, branchId: string) =>
    (
      await d().sql(
        `SELECT kind FROM ${d().names.ledger} WHERE xid = $1 AND branch_id = $2 ORDER BY seq`,
        [xid, branchId],
      )
    ).rows.map((r) => r.kind);
  const fenceRows = async (xid: string, branchId: string) =>
    (
      await d().sql(
        `SELECT op, reason FROM ${d().names.fence} WHERE xid = $1 AND branch_id = $2 ORDER BY op`,
        [xid, branchId],
      )
    ).rows.map((r) => `${String(r.op)}/${String(r.reason)}`);
  const newAccount = async (id: string) =>
    d().sql(`INSERT INTO ${d().names.account} (id, balance, frozen) VALUES ($1, 100, 0)`, [id]);
  const account = async (id: string) => {
    const row = (
      await d().sql(`SELECT balance, frozen FROM ${d().names.account} WHERE id = $1`, [id])
    ).rows[0];
    return { balance: Number(row?.balance), frozen: Number(row?.frozen) };
  };
  const freeze = (tx: Tx, id: string, amount: number) =>
    d().txSql(tx, `UPDATE ${d().names.account} SET frozen = frozen + $1 WHERE id = $2`, [
      amount,
      id,
    ]);

  describe(`fence on ${label} under ${isolation}`, () => {
    it('a repeated confirm does nothing: the business confirm runs once', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      const body = async (tx: Tx) => void (await record(tx, xid, b, 'confirm'));
      expect(await f.run(key(xid, b, 'try'), (tx) => record(tx, xid, b, 'try'))).toBe('executed');
      expect(await f.run(key(xid, b, 'confirm'), body)).toBe('executed');
      expect(await f.run(key(xid, b, 'confirm'), body)).toBe('duplicate');
      expect(await f.run({ xid, branchId: BigInt(b), op: 'confirm' }, body)).toBe('duplicate');
      expect(await ledger(xid, b)).toEqual(['try', 'confirm']);
    });

    it("a confirm must find its try (as Seata's commit fence): without one, or after an empty rollback, it fails with ConfirmWithoutTryError, writes nothing and never runs the business confirm", async () => {
      const f = fence();
      const [xid, noTry, rolledBack, failedTry] = [
        newXid(),
        newBranchId(),
        newBranchId(),
        newBranchId(),
      ];
      let ran = 0;
      const confirm = (b: string) =>
        f.run(key(xid, b, 'confirm'), async (tx) => {
          ran++;
          await record(tx, xid, b, 'confirm');
        });
      const err = await confirm(noTry).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfirmWithoutTryError);
      expect(err).toMatchObject({ xid, branchId: noTry, found: 'noTry', retryable: false });
      expect(await fenceRows(xid, noTry)).toEqual([]);
      // Refused again on redelivery; and a try arriving afterwards still runs (nothing barred it).
      await expect(confirm(noTry)).rejects.toBeInstanceOf(ConfirmWithoutTryError);
      expect(await f.run(key(xid, noTry, 'try'), (tx) => record(tx, xid, noTry, 'try'))).toBe(
        'executed',
      );
      expect(await confirm(noTry)).toBe('executed');
      expect(await ledger(xid, noTry)).toEqual(['try', 'confirm']);

      // An empty rollback wrote the try row (reason cancel): the try never ran.
      expect(await f.run(key(xid, rolledBack, 'cancel'), () => {})).toBe('emptyRollback');
      await expect(confirm(rolledBack)).rejects.toMatchObject({
        name: 'ConfirmWithoutTryError',
        found: 'rolledBack',
      });
      expect(await fenceRows(xid, rolledBack)).toEqual(['cancel/cancel', 'try/cancel']);

      // A try whose business step failed left no row: its confirm is refused too.
      await expect(
        f.run(key(xid, failedTry, 'try'), () => Promise.reject(new Error('out of stock'))),
      ).rejects.toThrow('out of stock');
      await expect(confirm(failedTry)).rejects.toBeInstanceOf(ConfirmWithoutTryError);
      expect(ran).toBe(1);
      expect(await ledger(xid, rolledBack)).toEqual([]);
      expect(await ledger(xid, failedTry)).toEqual([]);
    });

    it("a confirm that races its try still in flight waits for it and sees the try's writes", async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      let releaseTry!: () => void;
      const tryHeld = new Promise<void>((resolve) => (releaseTry = resolve));
      let tryInside!: () => void;
      const tryStarted = new Promise<void>((resolve) => (tryInside = resolve));
      const tryRun = f.run(key(xid, b, 'try'), async (tx) => {
        await d().txSql(
          tx,
          `INSERT INTO ${d().names.reservation} (xid, branch_id, amount) VALUES ($1, $2, 7)`,
          [xid, b],
        );
        tryInside();
        await tryHeld;
      });
      await tryStarted;
      let seen: unknown[] = [];
      const confirmRun = f.run(key(xid, b, 'confirm'), async (tx) => {
        seen = (
          await d().txSql(
            tx,
            `SELECT amount FROM ${d().names.reservation} WHERE xid = $1 AND branch_id = $2`,
            [xid, b],
          )
        ).rows.map((r) => Number(r.amount));
      });
      await sleep(150); // the confirm is now blocked on the try's fence row
      releaseTry();
      expect(await tryRun).toBe('executed');
      expect(await confirmRun).toBe('executed');
      expect(seen).toEqual([7]);
    });

    it('a repeated try is a duplicate, not a second reservation', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      const body = async (tx: Tx) => void (await record(tx, xid, b, 'try'));
      expect(await f.run(key(xid, b, 'try'), body)).toBe('executed');
      expect(await f.run(key(xid, b, 'try'), body)).toBe('duplicate');
      expect(await ledger(xid, b)).toEqual(['try']);
    });

    it('try then cancel runs the business cancel exactly once; a repeated cancel does nothing', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      const acct = `acct-${b}`;
      await newAccount(acct);
      expect(
        await f.run(key(xid, b, 'try'), async (tx) => {
          await freeze(tx, acct, 30);
          await record(tx, xid, b, 'try');
        }),
      ).toBe('executed');
      expect(await account(acct)).toEqual({ balance: 100, frozen: 30 });
      const cancel = async (tx: Tx) => {
        await freeze(tx, acct, -30);
        await record(tx, xid, b, 'cancel');
      };
      expect(await f.run(key(xid, b, 'cancel'), cancel)).toBe('executed');
      expect(await f.run(key(xid, b, 'cancel'), cancel)).toBe('duplicate');
      expect(await f.run(key(xid, b, 'cancel'), cancel)).toBe('duplicate');
      expect(await account(acct)).toEqual({ balance: 100, frozen: 0 });
      expect(await ledger(xid, b)).toEqual(['try', 'cancel']);
      expect(await fenceRows(xid, b)).toEqual(['cancel/cancel', 'try/try']);
    });

    it('empty rollback: a cancel with no try is recorded and skips the business cancel; the late try is refused (no hanging)', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      let ran = 0;
      expect(
        await f.run(key(xid, b, 'cancel'), () => {
          ran++;
        }),
      ).toBe('emptyRollback');
      expect(ran).toBe(0);
      expect(await fenceRows(xid, b)).toEqual(['cancel/cancel', 'try/cancel']);
      expect(
        await f.run(key(xid, b, 'try'), () => {
          ran++;
        }),
      ).toBe('hangingRefused');
      expect(
        await f.run(key(xid, b, 'cancel'), () => {
          ran++;
        }),
      ).toBe('duplicate');
      expect(
        await f.run(key(xid, b, 'try'), () => {
          ran++;
        }),
      ).toBe('hangingRefused');
      expect(ran).toBe(0);
    });

    it('Saga: action then compensate runs both once; a compensate before its action is an empty rollback and the action is refused', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      expect(await f.run(key(xid, b, 'action'), (tx) => record(tx, xid, b, 'action'))).toBe(
        'executed',
      );
      expect(await f.run(key(xid, b, 'action'), (tx) => record(tx, xid, b, 'action'))).toBe(
        'duplicate',
      );
      expect(await f.run(key(xid, b, 'compensate'), (tx) => record(tx, xid, b, 'compensate'))).toBe(
        'executed',
      );
      expect(await f.run(key(xid, b, 'compensate'), (tx) => record(tx, xid, b, 'compensate'))).toBe(
        'duplicate',
      );
      expect(await ledger(xid, b)).toEqual(['action', 'compensate']);

      const b2 = newBranchId();
      expect(
        await f.run(key(xid, b2, 'compensate'), (tx) => record(tx, xid, b2, 'compensate')),
      ).toBe('emptyRollback');
      expect(await f.run(key(xid, b2, 'action'), (tx) => record(tx, xid, b2, 'action'))).toBe(
        'hangingRefused',
      );
      expect(await ledger(xid, b2)).toEqual([]);
    });

    it('a business error rolls back the fence row with it and is rethrown unchanged; a retry then succeeds', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      const boom = new Error('insufficient funds');
      await expect(
        f.run(key(xid, b, 'try'), async (tx) => {
          await record(tx, xid, b, 'try');
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await fenceRows(xid, b)).toEqual([]);
      expect(await ledger(xid, b)).toEqual([]);
      expect(await f.run(key(xid, b, 'try'), (tx) => record(tx, xid, b, 'try'))).toBe('executed');

      // Same for phase two: a failing cancel leaves no cancel row, so the TC's retry runs it.
      await expect(
        f.run(key(xid, b, 'cancel'), async (tx) => {
          await record(tx, xid, b, 'cancel');
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await fenceRows(xid, b)).toEqual(['try/try']);
      expect(await f.run(key(xid, b, 'cancel'), (tx) => record(tx, xid, b, 'cancel'))).toBe(
        'executed',
      );
      expect(await ledger(xid, b)).toEqual(['try', 'cancel']);
    });

    it('a failing business write on the database side (not a thrown JS error) also fails the run and leaves no fence row', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      await expect(
        f.run(key(xid, b, 'try'), async (tx) => {
          await d().txSql(tx, 'SELECT * FROM no_such_table_cf');
        }),
      ).rejects.toThrow(/no_such_table_cf/);
      expect(await fenceRows(xid, b)).toEqual([]);
    });

    it('a callback that swallows a statement error that aborted the transaction fails the run (never a silent success)', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      if (d().dialect === 'postgres') {
        // Any error aborts a PostgreSQL transaction; COMMIT then answers ROLLBACK.
        const run = f.run(key(xid, b, 'try'), async (tx) => {
          await record(tx, xid, b, 'try');
          await d()
            .txSql(tx, 'SELECT 1 / 0')
            .catch(() => {});
        });
        await expect(run).rejects.toBeInstanceOf(FenceAbortedError);
      } else {
        // InnoDB: a lock wait timeout (1205) may roll back the transaction
        // (innodb_rollback_on_timeout); the fence refuses to commit after one.
        const acct = `acct-${b}`;
        await newAccount(acct);
        const holder = await d().connection();
        try {
          await holder.sql('START TRANSACTION');
          await holder.sql(`SELECT * FROM ${d().names.account} WHERE id = $1 FOR UPDATE`, [acct]);
          const run = f.run(key(xid, b, 'try'), async (tx) => {
            await record(tx, xid, b, 'try');
            await d().txSql(tx, 'SET SESSION innodb_lock_wait_timeout = 1');
            await freeze(tx, acct, 1).catch(() => {});
            await d().txSql(tx, 'SET SESSION innodb_lock_wait_timeout = DEFAULT');
          });
          const err = await run.then(
            () => null,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(FenceAbortedError);
          expect((err as FenceAbortedError).dbCode).toBe('1205');
        } finally {
          await holder.sql('ROLLBACK');
          holder.release();
        }
      }
      expect(await fenceRows(xid, b)).toEqual([]);
      expect(await ledger(xid, b)).toEqual([]);
    });

    it('a connection killed inside the callback fails the run, commits nothing, and the pool recovers', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      const run = f.run(key(xid, b, 'try'), async (tx) => {
        await record(tx, xid, b, 'try');
        await d().txSql(
          tx,
          d().dialect === 'postgres'
            ? 'SELECT pg_terminate_backend(pg_backend_pid())'
            : 'KILL CONNECTION_ID()',
        );
      });
      await expect(run).rejects.toThrow();
      expect(await fenceRows(xid, b)).toEqual([]);
      expect(await ledger(xid, b)).toEqual([]);
      // The broken connection was discarded, not pooled: the next runs work.
      for (let i = 0; i < 3; i++)
        expect(await f.run(key(xid, newBranchId(), 'try'), () => {})).toBe('executed');
      expect(await f.run(key(xid, b, 'try'), (tx) => record(tx, xid, b, 'try'))).toBe('executed');
    });

    it('the callback cannot end the fence transaction, nor use tx after it ended', async () => {
      const f = fence();
      const [xid, b] = [newXid(), newBranchId()];
      await expect(
        f.run(key(xid, b, 'try'), async (tx) => {
          await record(tx, xid, b, 'try');
          await d().txSql(tx, 'COMMIT');
        }),
      ).rejects.toBeInstanceOf(FenceMisuseError);
      await expect(
        f.run(key(xid, b, 'try'), async (tx) => {
          await d().txSql(tx, '  rollback');
        }),
      ).rejects.toBeInstanceOf(FenceMisuseError);
      expect(await fenceRows(xid, b)).toEqual([]);
      let leaked: Tx | undefined;
      expect(
        await f.run(key(xid, b, 'try'), (tx) => {
          leaked = tx;
        }),
      ).toBe('executed');
      await expect(d().txSql(leaked as Tx, 'SELECT 1')).rejects.toBeInstanceOf(FenceMisuseError);
      // Savepoints of the business's own are fine.
      const b2 = newBranchId();
      expect(
        await f.run(key(xid, b2, 'try'), async (tx) => {
          await d().txSql(tx, 'SAVEPOINT mine');
          await record(tx, xid, b2, 'try');
          await d().txSql(tx, 'ROLLBACK TO SAVEPOINT mine');
          await record(tx, xid, b2, 'try-2');
        }),
      ).toBe('executed');
      expect(await ledger(xid, b2)).toEqual(['try-2']);
    });

    it('bad input is refused with BadRequestError before any database work', async () => {
      const f = fence();
      const b = newBranchId();
      const bad: unknown[] = [
        { xid: 'nope', branchId: b, op: 'try' },
        { xid: `${'h'.repeat(130)}:1:1`, branchId: b, op: 'try' },
        { xid: '10.0.0.1:8091:1', branchId: '-1', op: 'try' },
        { xid: '10.0.0.1:8091:1', branchId: '007', op: 'try' },
        { xid: '10.0.0.1:8091:1', branchId: '18446744073709551616', op: 'try' },
        { xid: '10.0.0.1:8091:1', branchId: 12, op: 'try' },
        { xid: '10.0.0.1:8091:1', branchId: b, op: 'commit' },
        null,
      ];
      for (const k of bad)
        await expect(f.run(k as FenceKey, () => {})).rejects.toBeInstanceOf(BadRequestError);
      await expect(
        f.run({ xid: '10.0.0.1:8091:1', branchId: b, op: 'try' }, undefined as never),
      ).rejects.toBeInstanceOf(BadRequestError);
      expect(() => d().newFence({ table: 'Robert"); DROP TABLE x; --' })).toThrow(BadRequestError);
      expect(() => d().newFence({ table: 'a.b.c' })).toThrow(BadRequestError);
      expect(() => d().newFence({ maxAttempts: 0 })).toThrow(BadRequestError);
      expect(() => d().newFence({ isolationLevel: 'READ UNCOMMITTED' as IsolationLevel })).toThrow(
        BadRequestError,
      );
      await expect(f.cleanup({ olderThanMs: 0 })).rejects.toBeInstanceOf(BadRequestError);
      await expect(
        f.cleanup({ olderThanMs: DEFAULT_RETRY_HORIZON_MS, batchSize: 0 }),
      ).rejects.toBeInstanceOf(BadRequestError);
      expect(() => f.startCleanup({ everyMs: 1 })).toThrow(BadRequestError);
    });

    it('a missing table is a FenceSchemaError; ensureSchema is idempotent; verifySchema refuses a table without the unique key', async () => {
      const missing = d().newFence({ table: `${d().names.fence}_missing` });
      await expect(
        missing.run(key(newXid(), newBranchId(), 'try'), () => {}),
      ).rejects.toBeInstanceOf(FenceSchemaError);
      await expect(missing.verifySchema()).rejects.toBeInstanceOf(FenceSchemaError);
      await fence().ensureSchema();
      await fence().ensureSchema();
      const weak = `${d().names.fence}_weak`;
      await d().sql(
        `CREATE TABLE ${weak} (id bigint, xid varchar(128), branch_id varchar(20), op varchar(16), reason varchar(16), created_at timestamp)`,
      );
      try {
        await expect(d().newFence({ table: weak }).verifySchema()).rejects.toThrow(/unique key/);
      } finally {
        await d().sql(`DROP TABLE ${weak}`);
      }
    });

    it("a cancel that waited on an in-flight try sees the try's writes (no stale snapshot), and runs the business cancel", async () => {
      const { logger, records } = capturingLogger();
      const f = fence({ logger });
      const [xid, b] = [newXid(), newBranchId()];
      let releaseTry!: () => void;
      const tryHeld = new Promise<void>((resolve) => (releaseTry = resolve));
      let tryInside!: () => void;
      const tryStarted = new Promise<void>((resolve) => (tryInside = resolve));
      const tryRun = f.run(key(xid, b, 'try'), async (tx) => {
        await d().txSql(
          tx,
          `INSERT INTO ${d().names.reservation} (xid, branch_id, amount) VALUES ($1, $2, 42)`,
          [xid, b],
        );
        tryInside();
        await tryHeld;
      });
      await tryStarted;
      let seen: unknown[] = [];
      const cancelRun = f.run(key(xid, b, 'cancel'), async (tx) => {
        // A plain (non-locking) read: under REPEATABLE READ it reads the transaction's snapshot.
        seen = (
          await d().txSql(
            tx,
            `SELECT amount FROM ${d().names.reservation} WHERE xid = $1 AND branch_id = $2`,
            [xid, b],
          )
        ).rows.map((r) => Number(r.amount));
        await d().txSql(
          tx,
          `DELETE FROM ${d().names.reservation} WHERE xid = $1 AND branch_id = $2`,
          [xid, b],
        );
      });
      await sleep(150); // the cancel is now blocked on the try's fence row
      releaseTry();
      expect(await tryRun).toBe('executed');
      expect(await cancelRun).toBe('executed');
      expect(seen).toEqual([42]);
      const restarts = records.filter((r) => r.why === 'staleSnapshot').length;
      if (d().dialect === 'postgres' && isolation === 'REPEATABLE READ') expect(restarts).toBe(1);
      else expect(restarts).toBe(0);
    });

    it('a deadlock inside the callback is retried in a fresh transaction and the business write lands once', async () => {
      const { logger, records } = capturingLogger();
      const f = fence({ logger, maxAttempts: 3 });
      const [xid, b] = [newXid(), newBranchId()];
      const [a1, a2] = [`dl1-${b}`, `dl2-${b}`];
      await newAccount(a1);
      await newAccount(a2);
      const other = await d().connection();
      let attempts = 0;
      try {
        await other.sql(d().dialect === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
        await other.sql(`UPDATE ${d().names.account} SET balance = balance + 1 WHERE id = $1`, [
          a1,
        ]);
        const run = f.run(key(xid, b, 'try'), async (tx) => {
          attempts++;
          await freeze(tx, a2, 5);
          await record(tx, xid, b, 'try');
          await freeze(tx, a1, 5); // waits for `other`, which then waits for us: a cycle
        });
        await sleep(100);
        const otherSide = other
          .sql(`UPDATE ${d().names.account} SET balance = balance + 1 WHERE id = $1`, [a2])
          .then(
            () => 'ok',
            (e: unknown) => e,
          );
        // Whoever the database picks as the victim, the fence run must end executed, once.
        const otherResult = await Promise.race([otherSide, sleep(3_000).then(() => 'waiting')]);
        await other
          .sql(otherResult === 'ok' || otherResult === 'waiting' ? 'COMMIT' : 'ROLLBACK')
          .catch(() => other.sql('ROLLBACK'));
        expect(await run).toBe('executed');
        await otherSide;
      } finally {
        other.release();
      }
      expect(await ledger(xid, b)).toEqual(['try']);
      expect((await account(a1)).frozen).toBe(5);
      expect((await account(a2)).frozen).toBe(5);
      const retried = records.filter((r) => r.why === 'conflict').length;
      expect(retried).toBe(attempts - 1);
    });

    it('an aborted attempt is retried up to maxAttempts, then fails with FenceConflictError and nothing committed', async () => {
      // What the driver raises for a deadlock victim; the fence classifies by code, not by class.
      const deadlock = () =>
        Object.assign(
          new Error('deadlock detected'),
          d().dialect === 'postgres' ? { code: '40P01' } : { errno: 1213 },
        );
      const f = fence({ maxAttempts: 3 });
      const [xid, b] = [newXid(), newBranchId()];
      let calls = 0;
      const err = await f
        .run(key(xid, b, 'try'), async (tx) => {
          calls++;
          await record(tx, xid, b, 'try');
          throw deadlock();
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(FenceConflictError);
      expect((err as FenceConflictError).retryable).toBe(true);
      expect((err as FenceConflictError).dbCode).toBe(
        d().dialect === 'postgres' ? '40P01' : '1213',
      );
      expect(calls).toBe(3);
      expect(await fenceRows(xid, b)).toEqual([]);
      expect(await ledger(xid, b)).toEqual([]);

      calls = 0;
      const once = f.run(key(xid, b, 'try'), async (tx) => {
        calls++;
        await record(tx, xid, b, 'try');
        if (calls === 1) throw deadlock();
      });
      expect(await once).toBe('executed');
      expect(calls).toBe(2);
      expect(await ledger(xid, b)).toEqual(['try']);
    });

    it('concurrent duplicate confirms: exactly one executes, without deadlocks', async () => {
      const { logger, records } = capturingLogger('info');
      for (let rep = 0; rep < CONCURRENCY_REPEATS; rep++) {
        const f = fence({ logger });
        const [xid, b] = [newXid(), newBranchId()];
        expect(await f.run(key(xid, b, 'try'), () => {})).toBe('executed');
        const outcomes = await Promise.all(
          Array.from({ length: 12 }, () =>
            f.run(key(xid, b, 'confirm'), async (tx) => {
              await record(tx, xid, b, 'confirm');
              await sleep(20);
            }),
          ),
        );
        expect(outcomes.filter((o) => o === 'executed')).toHaveLength(1);
        expect(outcomes.filter((o) => o === 'duplicate')).toHaveLength(11);
        expect(await ledger(xid, b)).toEqual(['confirm']);
      }
      expect(records.filter((r) => r.why !== undefined)).toEqual([]);
    });

    it('concurrent duplicate cancels: exactly one acts (business cancel after a try, empty rollback without one), without deadlocks', async () => {
      const { logger, records } = capturingLogger('info');
      for (let rep = 0; rep < CONCURRENCY_REPEATS; rep++) {
        const f = fence({ logger });
        const [xid, withTry, withoutTry] = [newXid(), newBranchId(), newBranchId()];
        expect(await f.run(key(xid, withTry, 'try'), (tx) => record(tx, xid, withTry, 'try'))).toBe(
          'executed',
        );
        const cancels = (b: string) =>
          Promise.all(
            Array.from({ length: 8 }, () =>
              f.run(key(xid, b, 'cancel'), (tx) => record(tx, xid, b, 'cancel')),
            ),
          );
        const [a, e] = await Promise.all([cancels(withTry), cancels(withoutTry)]);
        expect(a.filter((o) => o === 'executed')).toHaveLength(1);
        expect(a.filter((o) => o === 'duplicate')).toHaveLength(7);
        expect(e.filter((o) => o === 'emptyRollback')).toHaveLength(1);
        expect(e.filter((o) => o === 'duplicate')).toHaveLength(7);
        expect(await ledger(xid, withTry)).toEqual(['try', 'cancel']);
        expect(await ledger(xid, withoutTry)).toEqual([]);
      }
      expect(records.filter((r) => r.why !== undefined)).toEqual([]);
    });

    it(`try vs cancel races (${RACE_PAIRS} pairs x ${CONCURRENCY_REPEATS}, separate connections): either both run, in order, or the cancel is empty and the try refused; no deadlocks`, async () => {
      const { logger, records } = capturingLogger('info');
      const tally = new Map<string, number>();
      for (let rep = 0; rep < CONCURRENCY_REPEATS; rep++) {
        const f = fence({ logger });
        const pairs = Array.from({ length: RACE_PAIRS }, () => ({
          xid: newXid(),
          b: newBranchId(),
        }));
        for (const p of pairs) await newAccount(`race-${p.b}`);
        for (let w = 0; w < RACE_PAIRS; w += RACE_WAVE) {
          await Promise.all(
            pairs.slice(w, w + RACE_WAVE).map(async ({ xid, b }, i) => {
              const acct = `race-${b}`;
              // Alternate who is likely first; jitter the rest so both orders and near-ties happen.
              const tryFirst = i % 2 === 0;
              const jitter = () => Math.floor(Math.random() * 3);
              const tryRun = sleep(tryFirst ? 0 : jitter()).then(() =>
                f.run(key(xid, b, 'try'), async (tx) => {
                  await freeze(tx, acct, 10);
                  await record(tx, xid, b, 'try');
                  await sleep(jitter() * 2);
                }),
              );
              const cancelRun = sleep(tryFirst ? jitter() : 0).then(() =>
                f.run(key(xid, b, 'cancel'), async (tx) => {
                  await freeze(tx, acct, -10);
                  await record(tx, xid, b, 'cancel');
                }),
              );
              const [t, c] = await Promise.all([tryRun, cancelRun]);
              const outcome = `${t}+${c}`;
              tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
              const history = await ledger(xid, b);
              if (outcome === 'executed+executed') expect(history).toEqual(['try', 'cancel']);
              else if (outcome === 'hangingRefused+emptyRollback') expect(history).toEqual([]);
              else expect.fail(`pair ${xid}/${b}: forbidden outcome try=${t} cancel=${c}`);
              expect(await account(acct)).toEqual({ balance: 100, frozen: 0 });
            }),
          );
        }
      }
      // Every run settled without an error (Promise.all above would have thrown); retries
      // for deadlocks would show in the log with a deadlock code.
      const deadlocks = records.filter((r) => r.dbCode === '40P01' || r.dbCode === '1213');
      expect(deadlocks).toEqual([]);
      const staleRestarts = records.filter((r) => r.why === 'staleSnapshot').length;
      const conflictRetries = records.filter((r) => r.why === 'conflict').length;
      console.info(
        `[${label} ${isolation}] race outcomes ${JSON.stringify(Object.fromEntries(tally))}; stale-snapshot restarts ${staleRestarts}; conflict retries ${conflictRetries}`,
      );
      expect([...tally.values()].reduce((a, b) => a + b, 0)).toBe(RACE_PAIRS * CONCURRENCY_REPEATS);
    });

    it('cleanup deletes only rows older than the retention, in bounded batches; startCleanup runs it periodically and stops', async () => {
      const f = fence({ retryHorizonMs: MIN_RETRY_HORIZON_MS });
      const oldXid = newXid();
      const youngXid = newXid();
      const confirmMany = async (xid: string, n: number) => {
        for (let i = 0; i < n; i++) await f.run(key(xid, newBranchId(), 'try'), () => {});
      };
      await confirmMany(oldXid, 23);
      await confirmMany(youngXid, 4);
      await d().backdate(oldXid, 2 * MIN_RETRY_HORIZON_MS);
      const count = async (xid: string) =>
        Number(
          (await d().sql(`SELECT COUNT(*) AS n FROM ${d().names.fence} WHERE xid = $1`, [xid]))
            .rows[0]?.n,
        );

      // Other tests' rows in the table are young, so only ours are eligible.
      const partial = await f.cleanup({
        olderThanMs: MIN_RETRY_HORIZON_MS,
        batchSize: 5,
        maxBatches: 2,
      });
      expect(partial).toEqual({ deleted: 10, batches: 2, complete: false });
      const rest = await f.cleanup({ olderThanMs: MIN_RETRY_HORIZON_MS, batchSize: 5 });
      expect(rest).toEqual({ deleted: 13, batches: 3, complete: true });
      expect(await count(oldXid)).toBe(0);
      expect(await count(youngXid)).toBe(4);

      // A row younger than the retention survives even a 0-row pass.
      expect(await f.cleanup({ olderThanMs: MIN_RETRY_HORIZON_MS })).toEqual({
        deleted: 0,
        batches: 1,
        complete: true,
      });

      const again = newXid();
      await confirmMany(again, 7);
      await d().backdate(again, 2 * MIN_RETRY_HORIZON_MS);
      const stop = f.startCleanup({
        everyMs: 20,
        olderThanMs: MIN_RETRY_HORIZON_MS,
        batchSize: 3,
      });
      for (let i = 0; i < 100 && (await count(again)) > 0; i++) await sleep(20);
      await stop();
      expect(await count(again)).toBe(0);
      expect(await count(youngXid)).toBe(4);
    });

    it('cleanup never deletes a row younger than the retry horizon: by default rows live 24 h 10 min (every timeout the TC accepts plus its retry window), not one day', async () => {
      const f = fence();
      const [young, old] = [newXid(), newXid()];
      expect(await f.run(key(young, newBranchId(), 'try'), () => {})).toBe('executed');
      expect(await f.run(key(old, newBranchId(), 'try'), () => {})).toBe('executed');
      const DAY_MS = 24 * 60 * 60 * 1000;
      // A 24 h transaction decided at its timeout may still be retrying phase two here.
      await d().backdate(young, DAY_MS + 5 * 60 * 1000);
      await d().backdate(old, DEFAULT_RETRY_HORIZON_MS + 5 * 60 * 1000);
      const count = async (xid: string) =>
        Number(
          (await d().sql(`SELECT COUNT(*) AS n FROM ${d().names.fence} WHERE xid = $1`, [xid]))
            .rows[0]?.n,
        );
      try {
        const result = await f.cleanup();
        expect(result.deleted).toBeGreaterThanOrEqual(1);
        expect(await count(old)).toBe(0);
        expect(await count(young)).toBe(1);
      } finally {
        await d().sql(`DELETE FROM ${d().names.fence} WHERE xid = $1 OR xid = $2`, [young, old]);
      }
    });

    it('a cleanup setting that would delete rows younger than the retry horizon is refused with FenceRetentionError, before any database work', async () => {
      const f = fence();
      const err = await f.cleanup({ olderThanMs: 60 * 60 * 1000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FenceRetentionError);
      expect(err).toMatchObject({ code: 'CONFIG_INVALID', retryable: false });
      expect((err as Error).message).toMatch(/retryHorizonMs/);
      await expect(f.cleanup({ olderThanMs: 24 * 60 * 60 * 1000 })).rejects.toBeInstanceOf(
        FenceRetentionError,
      );
      expect(() => f.startCleanup({ olderThanMs: 60 * 1000 })).toThrow(FenceRetentionError);
      // A shorter horizon is a declaration the service makes; it has a floor.
      const short = fence({ retryHorizonMs: MIN_RETRY_HORIZON_MS });
      await expect(short.cleanup({ olderThanMs: MIN_RETRY_HORIZON_MS - 1 })).rejects.toBeInstanceOf(
        FenceRetentionError,
      );
      expect(() => fence({ retryHorizonMs: MIN_RETRY_HORIZON_MS - 1 })).toThrow(BadRequestError);
      expect(() => fence({ retryHorizonMs: 60 * 1000 })).toThrow(/retryHorizonMs/);
    });
  });
}
