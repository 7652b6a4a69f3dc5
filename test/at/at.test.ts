/**
 * AT mode end to end: a REAL three-node cluster, REAL PostgreSQL and MariaDB/MySQL, each
 * under READ COMMITTED and REPEATABLE READ. Phase two is driven by the TC over the RM
 * channel; every check reads the database itself.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AtDirtyRollbackError,
  AtLockHolderRollingBackError,
  AtStatementRefusedError,
  BranchRefusedError,
  BranchStatus,
  createClient,
  GlobalStatus,
  TransactionFailedError,
  type AtDataSource,
  type ConcordClient,
} from '../../src/index.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { internalsOf as rmAccessOf } from '../../src/client/sdk/internals.ts';
import { sleep, waitFor } from '../support/wait.ts';
import { startCluster, type TestCluster } from '../sdk/helpers/cluster.ts';
import { COMBOS, openDb, type DbHandle } from './helpers.ts';

const logger = createLogger({
  name: 'at-test',
  level: process.env.CONCORD_TEST_LOG_LEVEL ?? 'silent',
});
const PHASE_TWO_MS = 30_000;

let cluster: TestCluster;
const clients: ConcordClient[] = [];

function newClient(applicationId: string): ConcordClient {
  const c = createClient({
    servers: cluster.servers,
    applicationId,
    logger,
    closeTimeoutMs: 5_000,
  });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  for (const [db, iso] of COMBOS) await (await openDb(db, iso)).close(); // DBs first: fail fast
  cluster = await startCluster('at');
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await cluster?.stop();
}, 60_000);

describe.each(COMBOS)('AT on %s under %s', (dbName, isolation) => {
  let db: DbHandle;
  let concord: ConcordClient;
  let ds: AtDataSource<unknown>;
  const tag = `${dbName}_${isolation === 'READ COMMITTED' ? 'rc' : 'rr'}_${randomBytes(3).toString('hex')}`;
  const acct = `at_acct_${tag}`;
  const comp = `at_comp_${tag}`;
  const auto = `at_auto_${tag}`;
  const nopk = `at_nopk_${tag}`;
  const undo = `undo_${tag}`;
  const p = (n: number) => db.p(n);

  async function undoRows(xid: string) {
    return db.sql(`SELECT log_status FROM ${undo} WHERE xid = ${p(1)}`, [xid]);
  }
  const snap = () => db.snapshot(acct, 'id');
  const seed = async () => {
    await db.sql(`DELETE FROM ${acct}`);
    await db.sql(
      `INSERT INTO ${acct} (id, balance, note) VALUES (1, 100.000001, 'a'), (2, 200, 'b'), (3, 300, 'c')`,
    );
  };

  beforeAll(async () => {
    db = await openDb(dbName, isolation);
    const autoCol = dbName === 'pg' ? 'id SERIAL PRIMARY KEY' : 'id INT AUTO_INCREMENT PRIMARY KEY';
    await db.sql(
      `CREATE TABLE ${acct} (id INT PRIMARY KEY, balance DECIMAL(30,6) NOT NULL, note VARCHAR(50))`,
    );
    await db.sql(`CREATE TABLE ${comp} (a INT, b VARCHAR(20), v INT, PRIMARY KEY (a, b))`);
    await db.sql(`CREATE TABLE ${auto} (${autoCol}, v VARCHAR(20))`);
    await db.sql(`CREATE TABLE ${nopk} (x INT)`);
    concord = newClient(`at-${tag}`);
    ds = db.dataSource(concord, {
      resourceId: `db-${tag}`,
      undoTable: undo,
      lockRetry: { intervalMs: 50, times: 200 },
    });
    await ds.ensureSchema();
    await ds.ensureSchema(); // idempotent
  }, 60_000);

  afterAll(async () => {
    for (const t of [acct, comp, auto, nopk, undo])
      await db.sql(`DROP TABLE IF EXISTS ${t}`).catch(() => {});
    await db.close();
  });

  it('commit: the writes stay and the undo rows are deleted in the background', async () => {
    await seed();
    const out = await concord.transactionOutcome({ name: 'commit' }, () =>
      ds.transaction(async (tx) => {
        await tx.query(
          `UPDATE ${acct} SET balance = balance - ${p(1)} WHERE id = ${p(2)}`,
          [10, 1],
        );
        await tx.query(`INSERT INTO ${acct} (id, balance, note) VALUES (${p(1)}, ${p(2)}, NULL)`, [
          4,
          '1.5',
        ]);
        await tx.query(`DELETE FROM ${acct} WHERE id = ${p(1)}`, [3]);
      }),
    );
    expect([GlobalStatus.Committed, GlobalStatus.AsyncCommitting]).toContain(out.status);
    const rows = await db.sql(`SELECT id, balance FROM ${acct} ORDER BY id`);
    expect(rows.map((r) => [Number(r.id), String(r.balance)])).toEqual([
      [1, '90.000001'],
      [2, '200.000000'],
      [4, '1.500000'],
    ]);
    await waitFor(
      'undo rows deleted after commit',
      async () => ((await undoRows(String(out.xid))).length === 0 ? true : undefined),
      PHASE_TWO_MS,
    );
  }, 60_000);

  it('rollback: every statement is undone, newest first, and the table is byte for byte as before', async () => {
    await seed();
    const before = await snap();
    let xid = '';
    await expect(
      concord.transaction({ name: 'rollback', waitForPhaseTwoMs: PHASE_TWO_MS }, async (scope) => {
        xid = scope.xid as string;
        await ds.transaction(async (tx) => {
          await tx.query(
            `UPDATE ${acct} SET balance = balance * 3, note = ${p(1)} WHERE id >= ${p(2)}`,
            ['é€😀', 2],
          );
          await tx.query(`INSERT INTO ${acct} (id, balance) VALUES (7, 7), (8, 8)`);
          await tx.query(`UPDATE ${acct} SET balance = 0 WHERE id = 7`);
        });
        await ds.query(`DELETE FROM ${acct} WHERE id = ${p(1)}`, [1]);
        throw new Error('business failure');
      }),
    ).rejects.toThrow('business failure');
    await waitFor(
      'rollback restored the table',
      async () => ((await snap()) === before ? true : undefined),
      PHASE_TWO_MS,
    );
    await waitFor(
      'undo rows gone',
      async () => ((await undoRows(xid)).length === 0 ? true : undefined),
      PHASE_TWO_MS,
    );
  }, 60_000);

  it('outside a global transaction the data source is plain SQL (no undo, no branch)', async () => {
    await seed();
    await ds.query(`UPDATE ${nopk} SET x = 1`); // no key, but no global transaction: not refused
    await ds.transaction((tx) => tx.query(`UPDATE ${acct} SET note = 'plain' WHERE id = 1`));
    expect((await db.sql(`SELECT note FROM ${acct} WHERE id = 1`))[0]?.note).toBe('plain');
    expect(await db.sql(`SELECT * FROM ${undo} WHERE log_status = 0 AND xid = 'none'`)).toEqual([]);
  });

  it('refuses, before executing, what it cannot undo: no key, multi-table, DDL, unparseable, upsert', async () => {
    await seed();
    const before = await snap();
    const cases: [string, string][] = [
      [`UPDATE ${nopk} SET x = 2`, 'no-primary-key'],
      [`DROP TABLE ${acct}`, 'ddl'],
      [`TRUNCATE ${acct}`, 'ddl'],
      [
        `UPDATE ${acct} SET note = 'x' WHERE id IN (SELECT x FROM ${nopk}) AND id = (`,
        'unparseable',
      ],
      [
        dbName === 'pg'
          ? `UPDATE ${acct} SET note = 'm' FROM ${comp} WHERE ${acct}.id = ${comp}.a`
          : `UPDATE ${acct}, ${comp} SET ${acct}.note = 'm' WHERE ${acct}.id = ${comp}.a`,
        'multi-table',
      ],
      [
        dbName === 'pg'
          ? `INSERT INTO ${acct} (id, balance) VALUES (1, 1) ON CONFLICT (id) DO NOTHING`
          : `INSERT INTO ${acct} (id, balance) VALUES (1, 1) ON DUPLICATE KEY UPDATE balance = 1`,
        'unsupported',
      ],
    ];
    for (const [sql, reason] of cases) {
      const err = await concord
        .transaction(() => ds.query(sql))
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err, sql).toBeInstanceOf(AtStatementRefusedError);
      expect((err as AtStatementRefusedError).reason, sql).toBe(reason);
    }
    expect(await snap()).toBe(before);
  }, 60_000);

  it('two global transactions on one row: the second waits for the lock, then succeeds after the first commits', async () => {
    await seed();
    const tx1 = await concord.begin({ name: 'first' });
    await tx1.run(() => ds.query(`UPDATE ${acct} SET balance = balance + 1 WHERE id = 1`));
    let second = 'pending';
    const run2 = concord
      .transaction({ name: 'second' }, () =>
        ds.query(`UPDATE ${acct} SET balance = balance + 10 WHERE id = 1`),
      )
      .then(() => (second = 'done'));
    await sleep(1_000);
    expect(second).toBe('pending'); // waiting for the global lock
    expect([GlobalStatus.Committed, GlobalStatus.AsyncCommitting]).toContain(await tx1.commit());
    await run2;
    expect(String((await db.sql(`SELECT balance FROM ${acct} WHERE id = 1`))[0]?.balance)).toBe(
      '111.000001',
    );
  }, 60_000);

  it('fails fast when the lock holder is rolling back (its undo needs our row)', async () => {
    await seed();
    const before = await snap();
    const tx1 = await concord.begin({ name: 'holder' });
    await tx1.run(() => ds.query(`UPDATE ${acct} SET balance = 0 WHERE id = 2`));
    let rolling: Promise<unknown> = Promise.resolve();
    const err = await concord
      .transaction({ name: 'waiter' }, () =>
        ds.transaction(async (tx) => {
          await tx.query(`UPDATE ${acct} SET note = 'w' WHERE id = 2`); // holds the local row lock
          rolling = tx1.rollback();
          await waitFor('holder rolling back', async () =>
            String(await tx1.status()).includes('Rollback') ? true : undefined,
          );
        }),
      )
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(AtLockHolderRollingBackError);
    await rolling;
    await waitFor(
      'holder rolled back',
      async () => ((await snap()) === before ? true : undefined),
      PHASE_TWO_MS,
    );
  }, 60_000);

  it('dirty write: rollback restores nothing, stops unretryable and keeps the diff', async () => {
    await seed();
    const tx1 = await concord.begin({ name: 'dirty' });
    await tx1.run(() => ds.query(`UPDATE ${acct} SET balance = 1 WHERE id = 3`));
    await db.sql(`UPDATE ${acct} SET balance = 42 WHERE id = 3`); // a writer outside AT
    // Unretryable at once: the TM hears RollbackFailed (no silent retries).
    await expect(tx1.rollback()).rejects.toBeInstanceOf(TransactionFailedError);
    expect(await tx1.status()).toBe(GlobalStatus.RollbackFailed);
    expect(String((await db.sql(`SELECT balance FROM ${acct} WHERE id = 3`))[0]?.balance)).toBe(
      '42.000000',
    );
    const rows = await db.sql(`SELECT log_status, rollback_info FROM ${undo} WHERE xid = ${p(1)}`, [
      tx1.xid,
    ]);
    expect(rows.map((r) => Number(r.log_status))).toEqual([2]);
    const diff = JSON.parse(Buffer.from(rows[0]?.rollback_info as Buffer).toString());
    expect(diff[0].expected.balance).toBe('1.000000');
    expect(diff[0].current.balance).toBe('42.000000');
    // ABA (Seata #4997): the row drifts back to the after image and the rollback is delivered
    // again; it still answers unretryable and restores nothing.
    await db.sql(`UPDATE ${acct} SET balance = 1 WHERE id = 3`);
    const asText = dbName === 'pg' ? 'branch_id::text' : 'CAST(branch_id AS CHAR)';
    const [branch] = await db.sql(
      `SELECT ${asText} AS branch_id FROM ${undo} WHERE xid = ${p(1)}`,
      [tx1.xid],
    );
    const again = await rmAccessOf(concord).rm.handle({
      kind: 'rollback',
      xid: tx1.xid,
      branchId: String(branch?.branch_id),
      branchType: 'AT',
      resourceId: `db-${tag}`,
      applicationData: '',
      applicationId: concord.applicationId,
    });
    expect(again).toBe(BranchStatus.PhaseTwo_RollbackFailed_Unretryable);
    expect(String((await db.sql(`SELECT balance FROM ${acct} WHERE id = 3`))[0]?.balance)).toBe(
      '1.000000',
    );
    expect(AtDirtyRollbackError.name).toBe('AtDirtyRollbackError');
  }, 60_000);

  it('multi-row and composite keys: update and delete by any WHERE, rolled back exactly', async () => {
    await db.sql(`DELETE FROM ${comp}`);
    await db.sql(
      `INSERT INTO ${comp} (a, b, v) VALUES (1, 'x', 1), (1, 'y,z', 2), (2, 'x_1', 3), (3, ';:^%', 4)`,
    );
    const before = await db.snapshot(comp, 'a, b');
    await expect(
      concord.transaction({ waitForPhaseTwoMs: PHASE_TWO_MS }, async () => {
        await ds.query(`UPDATE ${comp} SET v = v + 100 WHERE a = 1 OR b LIKE ${p(1)}`, ['%^%']);
        await ds.query(`DELETE FROM ${comp} WHERE a >= 2`);
        await ds.query(`INSERT INTO ${comp} (a, b, v) VALUES (${p(1)}, ${p(2)}, 9), (5, 'k', 10)`, [
          4,
          'n',
        ]);
        expect(await db.snapshot(comp, 'a, b')).not.toBe(before);
        throw new Error('undo it');
      }),
    ).rejects.toThrow('undo it');
    await waitFor(
      'composite rollback',
      async () => ((await db.snapshot(comp, 'a, b')) === before ? true : undefined),
      PHASE_TWO_MS,
    );
  }, 60_000);

  it('auto-increment keys (RETURNING / LAST_INSERT_ID) of a multi-row INSERT are undone', async () => {
    await db.sql(`DELETE FROM ${auto}`);
    await db.sql(`INSERT INTO ${auto} (v) VALUES ('kept')`);
    const before = await db.snapshot(auto, 'id');
    await expect(
      concord.transaction({ waitForPhaseTwoMs: PHASE_TWO_MS }, async () => {
        await ds.query(`INSERT INTO ${auto} (v) VALUES ('a'), ('b'), ('c')`);
        throw new Error('undo inserts');
      }),
    ).rejects.toThrow('undo inserts');
    await waitFor(
      'inserts undone',
      async () => ((await db.snapshot(auto, 'id')) === before ? true : undefined),
      PHASE_TWO_MS,
    );
  }, 60_000);

  it('hanging guard: a rollback that arrives before the local commit leaves a defense row, and the late commit fails', async () => {
    await seed();
    const before = await snap();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let registered!: (b: { xid: string; branchId: string }) => void;
    const atRegister = new Promise<{ xid: string; branchId: string }>((r) => (registered = r));
    const hanging = db.dataSource(concord, {
      resourceId: `hang-${tag}`,
      undoTable: undo,
      hooks: { beforeLocalCommit: async (b) => (registered(b), held) },
    });
    const tx = await concord.begin({ name: 'hanging' });
    const late = tx
      .run(() => hanging.query(`UPDATE ${acct} SET balance = -1 WHERE id = 1`))
      .then(
        () => null,
        (e: unknown) => e,
      );
    const branch = await atRegister;
    // The update holds row 1 locally; the rollback only needs the undo table.
    await tx.rollback();
    await waitFor(
      'defense row',
      async () => {
        const rows = await db.sql(
          `SELECT log_status FROM ${undo} WHERE xid = ${p(1)} AND branch_id = ${p(2)}`,
          [branch.xid, branch.branchId],
        );
        return rows.length === 1 && Number(rows[0]?.log_status) === 1 ? true : undefined;
      },
      PHASE_TWO_MS,
    );
    release();
    expect(await late).toBeInstanceOf(BranchRefusedError);
    expect(await snap()).toBe(before);
  }, 60_000);

  it('withGlobalLock: a local-only write waits until the global transaction holding the row ends', async () => {
    await seed();
    const tx1 = await concord.begin({ name: 'holder' });
    await tx1.run(() => ds.query(`UPDATE ${acct} SET balance = 5 WHERE id = 1`));
    let local = 'pending';
    const write = ds
      .withGlobalLock((tx) => tx.query(`UPDATE ${acct} SET balance = balance + 1 WHERE id = 1`))
      .then(() => (local = 'done'));
    await sleep(800);
    expect(local).toBe('pending');
    await tx1.commit();
    await write;
    expect(String((await db.sql(`SELECT balance FROM ${acct} WHERE id = 1`))[0]?.balance)).toBe(
      '6.000000',
    );
  }, 60_000);

  it('selectForUpdate in a global transaction waits for the row global lock (read committed)', async () => {
    await seed();
    const tx1 = await concord.begin({ name: 'writer' });
    await tx1.run(() => ds.query(`UPDATE ${acct} SET note = 'uncommitted' WHERE id = 2`));
    let seen: unknown = 'pending';
    const reader = concord
      .transaction({ name: 'reader' }, () =>
        ds.transaction(async (tx) => {
          await tx.selectForUpdate(`SELECT note FROM ${acct} WHERE id = ${p(1)}`, [2]);
          seen = (await db.sql(`SELECT note FROM ${acct} WHERE id = 2`))[0]?.note;
        }),
      )
      .then(() => seen);
    await sleep(800);
    expect(seen).toBe('pending');
    await tx1.commit();
    expect(await reader).toBe('uncommitted'); // read only once the writer committed
  }, 60_000);

  if (dbName === 'pg')
    it('PostgreSQL: a reader waiting for a global lock releases its row lock, so a rolling-back holder restores the row', async () => {
      await seed();
      const tx1 = await concord.begin({ name: 'writer' });
      await tx1.run(() => ds.query(`UPDATE ${acct} SET note = 'dropped' WHERE id = 2`));
      const reader = concord.transaction({ name: 'reader' }, () =>
        ds.transaction(async (tx) => {
          await tx.selectForUpdate(`SELECT note FROM ${acct} WHERE id = ${p(1)}`, [2]);
          return (await db.sql(`SELECT note FROM ${acct} WHERE id = 2`))[0]?.note;
        }),
      );
      await sleep(500);
      await expect(tx1.rollback()).resolves.toBe(GlobalStatus.Rollbacked);
      if (isolation === 'READ COMMITTED') expect(await reader).toBe('b');
      // Under REPEATABLE READ the row changed after the reader's snapshot: PostgreSQL's own
      // serialization failure, for the caller to retry (as without AT).
      else await expect(reader).rejects.toMatchObject({ code: '40001' });
    }, 60_000);

  it('cleanUp removes old undo rows of ended transactions only, never a dirty one', async () => {
    const dirty = await db.sql(`SELECT xid FROM ${undo} WHERE log_status = 2`);
    await ds.flushCommits();
    await ds.cleanUp({ olderThanMs: 0 });
    const left = await db.sql(`SELECT xid, log_status FROM ${undo}`);
    expect(left.map((r) => Number(r.log_status))).toEqual(dirty.map(() => 2));
  }, 60_000);
});
