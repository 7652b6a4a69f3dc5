/**
 * XA branches against a REAL three-node cluster (node processes, TLS as the tests' pki sets
 * it) and REAL PostgreSQL and MariaDB: two-phase commit and rollback across both databases,
 * row locks held by a prepared branch, the global timeout, the one-phase path, the TC leader
 * killed between the decision and phase two, and an RM process SIGKILLed after its prepare
 * whose restart recovers the branch.
 */
import type { ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import type pg from 'pg';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClient,
  xidFetch,
  type ConcordClient,
  type GlobalStatus,
  type XaBranchContext,
  XaMisuseError,
} from '../../src/index.ts';
import { createMysqlXaDataSource, type MysqlXaDataSource } from '../../src/mysql.ts';
import { createPgXaDataSource, type PgXaDataSource } from '../../src/pg.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { connectMysql, connectPg, pgEnv, sleep, uniquePrefix } from '../client/helpers/db.ts';
import { killAll, killHard, startFixture, type FixtureProcess } from '../support/process.ts';
import { REPO_ROOT, TestCluster, waitFor } from '../tc/helpers.ts';

const logger = createLogger({
  name: 'xa-test',
  level: process.env.CONCORD_TEST_LOG_LEVEL ?? 'silent',
});
const PHASE_TWO_WAIT_MS = 30_000;
const prefix = uniquePrefix('xa');
const T = `${prefix}_acct`;

let cluster: TestCluster;
let pgPool: pg.Pool;
let myPool: mysql.Pool;
let concord: ConcordClient;
let pgXa: PgXaDataSource;
let myXa: MysqlXaDataSource;
const clients: ConcordClient[] = [];

function newClient(applicationId: string): ConcordClient {
  const c = createClient({
    servers: cluster.seeds(),
    applicationId,
    logger,
    closeTimeoutMs: 5_000,
  });
  clients.push(c);
  return c;
}

async function pgBal(id: string): Promise<number> {
  return (await pgPool.query<{ bal: number }>(`SELECT bal FROM ${T} WHERE id = $1`, [id])).rows[0]!
    .bal;
}

async function myBal(id: string): Promise<number> {
  const [rows] = await myPool.query<mysql.RowDataPacket[]>(`SELECT bal FROM ${T} WHERE id = ?`, [
    id,
  ]);
  return Number(rows[0]!.bal);
}

/** Concord's prepared transactions of this xid, in both databases. */
async function preparedOf(xid: string): Promise<{ pg: number; mysql: number }> {
  const p = await pgPool.query(
    `SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'concord-xa:%' AND gid LIKE $1`,
    [`%:${xid}`],
  );
  const [rows] = await myPool.query<mysql.RowDataPacket[]>('XA RECOVER');
  const mine = rows.filter((r) =>
    Buffer.from(r.data as Buffer)
      .toString()
      .includes(xid),
  );
  return { pg: p.rowCount ?? 0, mysql: mine.length };
}

async function waitForStatus(c: ConcordClient, xid: string, wanted: GlobalStatus[]): Promise<void> {
  await waitFor(
    `${xid} to be ${wanted.join(' or ')}`,
    async () => (wanted.includes(await c.globalTransaction(xid).status()) ? true : undefined),
    PHASE_TWO_WAIT_MS,
    100,
  );
}

async function waitNoPrepared(xid: string): Promise<void> {
  await waitFor(
    `no prepared transaction of ${xid}`,
    async () => {
      const p = await preparedOf(xid);
      return p.pg === 0 && p.mysql === 0 ? true : undefined;
    },
    PHASE_TWO_WAIT_MS,
    100,
  );
}

async function seed(id: string, bal: number): Promise<void> {
  await pgPool.query(`INSERT INTO ${T} (id, bal) VALUES ($1, $2)`, [id, bal]);
  await myPool.query(`INSERT INTO ${T} (id, bal) VALUES (?, ?)`, [id, bal]);
}

/** Moves `n` from the PostgreSQL row to the MariaDB row, as two XA branches. */
async function transfer(id: string, n: number): Promise<void> {
  await pgXa.run((tx) => tx.query(`UPDATE ${T} SET bal = bal - $1 WHERE id = $2`, [n, id]));
  await myXa.run((tx) => tx.query(`UPDATE ${T} SET bal = bal + ? WHERE id = ?`, [n, id]));
}

beforeAll(async () => {
  pgPool = await connectPg(10);
  myPool = await connectMysql(10);
  await pgPool.query(`CREATE TABLE ${T} (id text PRIMARY KEY, bal int NOT NULL)`);
  await myPool.query(
    `CREATE TABLE ${T} (id varchar(64) PRIMARY KEY, bal int NOT NULL) ENGINE=InnoDB`,
  );
  cluster = await TestCluster.start('xa', {
    tickMs: 50,
    logLevel: 'warn',
    phaseTwo: { retryBaseMs: 200, retryMaxBackoffMs: 1_000 },
  });
  concord = newClient('xa-app');
  pgXa = createPgXaDataSource(concord, pgPool, { name: 'xa.pg', recoveryIntervalMs: 0 });
  myXa = createMysqlXaDataSource(concord, myPool, { name: 'xa.mysql', recoveryIntervalMs: 0 });
  await pgXa.start();
  await myXa.start();
}, 180_000);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await cluster?.stop();
  await pgPool?.query(`DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
  await myPool?.query(`DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
  await pgPool?.end();
  await myPool?.end();
}, 60_000);

describe('two XA branches on two databases', () => {
  it('commit: both branches prepared in phase one, committed by the TC', async () => {
    await seed('c1', 100);
    let xid = '';
    const outcome = await concord.transactionOutcome(
      { name: 'xa-commit', waitForPhaseTwoMs: PHASE_TWO_WAIT_MS },
      async (scope) => {
        xid = scope.xid!;
        await transfer('c1', 30);
        // Prepared, not yet committed: invisible to others, held by the databases.
        expect(await preparedOf(xid)).toEqual({ pg: 1, mysql: 1 });
        expect([await pgBal('c1'), await myBal('c1')]).toEqual([100, 100]);
      },
    );
    expect(outcome.status).toBe('Committed');
    await waitNoPrepared(xid);
    expect([await pgBal('c1'), await myBal('c1')]).toEqual([70, 130]);
  }, 60_000);

  it('rollback after both prepared: ROLLBACK PREPARED / XA ROLLBACK, nothing changes', async () => {
    await seed('r1', 100);
    let xid = '';
    const err = await concord
      .transaction({ name: 'xa-rollback' }, async (scope) => {
        xid = scope.xid!;
        await transfer('r1', 30);
        throw new Error('business says no');
      })
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('business says no');
    await waitForStatus(concord, xid, ['Rollbacked']);
    await waitNoPrepared(xid);
    expect([await pgBal('r1'), await myBal('r1')]).toEqual([100, 100]);
  }, 60_000);

  it('a failing statement before prepare: local rollback, PhaseOne_Failed, the transaction rolls back', async () => {
    await seed('f1', 100);
    let xid = '';
    const err = await concord
      .transaction({ name: 'xa-phase-one-fails' }, async (scope) => {
        xid = scope.xid!;
        await pgXa.run((tx) => tx.query(`UPDATE ${T} SET bal = bal - 1 WHERE id = 'f1'`));
        await myXa.run((tx) => tx.query(`UPDATE ${T} SET nope = 1 WHERE id = 'f1'`));
      })
      .catch((e: unknown) => e);
    expect((err as { errno?: number }).errno).toBe(1054); // unknown column
    await waitForStatus(concord, xid, ['Rollbacked']);
    await waitNoPrepared(xid);
    expect([await pgBal('f1'), await myBal('f1')]).toEqual([100, 100]);
  }, 60_000);
});

describe('statements that would end the branch', () => {
  it('are refused with XaMisuseError before they reach the database', async () => {
    for (const sql of ['COMMIT', 'rollback', "PREPARE TRANSACTION 'x'", "XA END X'1'"]) {
      const err = await concord
        .transaction({ name: 'xa-misuse' }, async (): Promise<unknown> =>
          sql.startsWith('XA') ? myXa.run((tx) => tx.query(sql)) : pgXa.run((tx) => tx.query(sql)),
        )
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(XaMisuseError);
    }
  }, 60_000);
});

describe('isolation: a prepared branch holds its row locks', () => {
  it('blocks a second transaction on the row until phase two, then lets it through', async () => {
    await seed('l1', 100);
    const tx = await concord.begin({ name: 'xa-locks', timeoutMs: 60_000 });
    await tx.run(() => pgXa.run((q) => q.query(`UPDATE ${T} SET bal = bal - 10 WHERE id = 'l1'`)));
    await tx.run(() => myXa.run((q) => q.query(`UPDATE ${T} SET bal = bal - 10 WHERE id = 'l1'`)));
    let pgDone = false;
    let myDone = false;
    const pgSecond = pgPool
      .query(`UPDATE ${T} SET bal = bal * 2 WHERE id = 'l1'`)
      .then(() => (pgDone = true));
    const mySecond = myPool
      .query(`UPDATE ${T} SET bal = bal * 2 WHERE id = 'l1'`)
      .then(() => (myDone = true));
    // The second writers wait on the prepared branches' locks (PostgreSQL shows the wait).
    await waitFor(
      'the second PostgreSQL update to wait on a lock',
      async () => {
        const r = await pgPool.query(
          `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%bal * 2%'`,
        );
        return (r.rowCount ?? 0) > 0 ? true : undefined;
      },
      10_000,
      50,
    );
    await sleep(300);
    expect([pgDone, myDone]).toEqual([false, false]);
    expect(await tx.commit()).toMatch(/Commit/);
    await Promise.all([pgSecond, mySecond]);
    await waitNoPrepared(tx.xid);
    // Serialized after the branch: (100 - 10) * 2.
    expect([await pgBal('l1'), await myBal('l1')]).toEqual([180, 180]);
  }, 60_000);
});

describe('the global timeout with a branch prepared', () => {
  it('the TC rolls the prepared branches back', async () => {
    await seed('t1', 100);
    const tx = await concord.begin({ name: 'xa-timeout', timeoutMs: 4_000 });
    await tx.run(() => transfer('t1', 40));
    expect(await preparedOf(tx.xid)).toEqual({ pg: 1, mysql: 1 });
    // Nobody commits: the TC's timeout decides.
    await waitForStatus(concord, tx.xid, ['TimeoutRollbacked']);
    await waitNoPrepared(tx.xid);
    expect([await pgBal('t1'), await myBal('t1')]).toEqual([100, 100]);
  }, 60_000);
  it('a branch still running when the transaction times out never prepares', async () => {
    await seed('t2', 100);
    const tx = await concord.begin({ name: 'xa-timeout-running', timeoutMs: 3_000 });
    let registered = false;
    const err = await tx
      .run(() =>
        pgXa.run(async (q) => {
          registered = true;
          await q.query(`UPDATE ${T} SET bal = bal - 1 WHERE id = 't2'`);
          await sleep(4_500); // past the timeout: the TC's rollback arrives meanwhile
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(registered).toBe(true); // the branch got as far as its SQL
    await waitForStatus(concord, tx.xid, ['TimeoutRollbacked']);
    expect(await preparedOf(tx.xid)).toEqual({ pg: 0, mysql: 0 });
    expect(await pgBal('t2')).toBe(100);
  }, 60_000);
});

describe('the one-phase path', () => {
  it('a global transaction whose only branch is the data source commits without PREPARE', async () => {
    await seed('o1', 100);
    const before = [pgXa.metrics().prepared, myXa.metrics().prepared];
    const seen: string[] = [];
    await pgXa.transaction({ name: 'xa-1pc-pg', timeoutMs: 30_000 }, async (q) => {
      await q.query(`UPDATE ${T} SET bal = bal + 5 WHERE id = 'o1'`);
      const r = await q.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_prepared_xacts WHERE gid LIKE 'concord-xa:%'",
      );
      seen.push(r.rows[0]!.n);
    });
    await myXa.transaction({ name: 'xa-1pc-mysql', timeoutMs: 30_000 }, (q) =>
      q.query(`UPDATE ${T} SET bal = bal + 5 WHERE id = 'o1'`),
    );
    expect([await pgBal('o1'), await myBal('o1')]).toEqual([105, 105]);
    // No PREPARE was issued by either.
    expect([pgXa.metrics().prepared, myXa.metrics().prepared]).toEqual(before);
  }, 60_000);

  it('too close to the global timeout it prepares and commits two-phase instead', async () => {
    await seed('o3', 100);
    const before = pgXa.metrics().prepared;
    await pgXa.transaction({ name: 'xa-1pc-late', timeoutMs: 8_000 }, async (q) => {
      await q.query(`UPDATE ${T} SET bal = bal + 5 WHERE id = 'o3'`);
      await sleep(6_200); // leaves less than max(2 s, timeout / 4)
    });
    expect(pgXa.metrics().prepared).toBe(before + 1);
    expect(await pgBal('o3')).toBe(105);
  }, 60_000);

  it('a failure inside rolls back the database and the global transaction', async () => {
    await seed('o2', 100);
    const err = await pgXa
      .transaction({ name: 'xa-1pc-fail', timeoutMs: 30_000 }, async (q) => {
        await q.query(`UPDATE ${T} SET bal = bal + 5 WHERE id = 'o2'`);
        throw new Error('no');
      })
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('no');
    expect(await pgBal('o2')).toBe(100);
  }, 60_000);
});

describe('the TC leader killed between the decision and phase two', () => {
  it('the new leader drives phase two; the branches commit once', async () => {
    await seed('k1', 100);
    let held: XaBranchContext[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const c = newClient('xa-kill');
    const hooks = {
      beforePhaseTwo: async (b: XaBranchContext) => {
        held.push(b);
        await gate;
      },
    };
    const pgK = createPgXaDataSource(c, pgPool, {
      name: 'xa.kill.pg',
      recoveryIntervalMs: 0,
      hooks,
    });
    const myK = createMysqlXaDataSource(c, myPool, {
      name: 'xa.kill.my',
      recoveryIntervalMs: 0,
      hooks,
    });
    await pgK.start();
    await myK.start();
    const tx = await c.begin({ name: 'xa-kill', timeoutMs: 60_000 });
    await tx.run(async () => {
      await pgK.run((q) => q.query(`UPDATE ${T} SET bal = bal - 1 WHERE id = 'k1'`));
      await myK.run((q) => q.query(`UPDATE ${T} SET bal = bal + 1 WHERE id = 'k1'`));
    });
    const leader = await cluster.leader();
    const committing = tx.commit().catch((e: unknown) => e);
    await waitFor(
      'phase two to reach the RM',
      () => (held.length > 0 ? true : undefined),
      20_000,
      20,
    );
    // The decision is durable; the leader dies before any branch is told.
    await cluster.kill(leader, 'SIGKILL');
    held = [];
    release();
    await cluster.leader(30_000);
    await committing;
    await waitForStatus(c, tx.xid, ['Committed']);
    await waitNoPrepared(tx.xid);
    expect([await pgBal('k1'), await myBal('k1')]).toEqual([99, 101]);
    cluster.restart(leader);
    pgK.close();
    myK.close();
  }, 120_000);
});

describe('an RM process SIGKILLed after prepare, before phase two', () => {
  const FIXTURE = resolve(REPO_ROOT, 'test/xa/fixtures/xa-rm.ts');
  const children = new Set<ChildProcess>();
  afterAll(() => killAll(children));

  const startRm = (): Promise<FixtureProcess> =>
    startFixture(FIXTURE, {
      env: {
        CONCORD_SERVERS: cluster.seeds().join(','),
        XA_TABLE: T,
        XA_APPLICATION_ID: 'xa-rm',
        ...pgEnv(),
      },
      readyTimeoutMs: 60_000,
      children,
    });

  it('the restarted RM finds the prepared branch, asks the TC, and commits it', async () => {
    await pgPool.query(`INSERT INTO ${T} (id, bal) VALUES ('r', 0)`);
    const tm = newClient('xa-rm-tm');
    const first = await startRm();
    const tx = await tm.begin({ name: 'xa-rm-kill', timeoutMs: 60_000 });
    const res = await tx.run(() => xidFetch(`http://127.0.0.1:${first.port}/`, { method: 'POST' }));
    expect(res.status).toBe(200);
    expect((await preparedOf(tx.xid)).pg).toBe(1);
    await killHard(first.child);
    // Undecided: recovery leaves it to phase two.
    const job = createPgXaDataSource(newClient('xa-rm'), pgPool, { name: 'xa.rm.pg' });
    expect(await job.recover()).toMatchObject({ found: 1, pending: 1, leftAfterDecision: 0 });
    expect((await preparedOf(tx.xid)).pg).toBe(1);
    // Decided, but the branch's RM is gone: the prepared transaction waits in PostgreSQL.
    expect(await tx.commit()).toMatch(/Commit/);
    expect((await preparedOf(tx.xid)).pg).toBe(1);
    expect(await pgBal('r')).toBe(0);
    const second = await startRm();
    await waitNoPrepared(tx.xid);
    await waitForStatus(tm, tx.xid, ['Committed']);
    expect(await pgBal('r')).toBe(1);
    // Finished by the restart: its recovery pass, or the TC's redelivery to the new RM.
    expect(second.out()).toMatch(/RECOVERED \{/);
    await killHard(second.child);
  }, 120_000);

  it('recovery rolls back a prepared branch whose transaction rolled back while its RM was dead', async () => {
    const tm = newClient('xa-rm-tm2');
    const first = await startRm();
    const tx = await tm.begin({ name: 'xa-rm-kill-rollback', timeoutMs: 60_000 });
    const res = await tx.run(() => xidFetch(`http://127.0.0.1:${first.port}/`, { method: 'POST' }));
    expect(res.status).toBe(200);
    await killHard(first.child);
    await tx.rollback();
    expect((await preparedOf(tx.xid)).pg).toBe(1);
    // A recovery job of the same application and resource (not started: it serves no phase
    // two, so the TC cannot finish the branch first) rolls it back.
    const job = createPgXaDataSource(newClient('xa-rm'), pgPool, { name: 'xa.rm.pg' });
    const report = await job.recover();
    expect(report.rolledBack).toBe(1);
    expect(report.leftAfterDecision).toBe(1);
    expect(job.metrics().preparedLeftAfterDecision).toBe(1);
    // Another resource's recovery never touches it (its xid may be another cluster's).
    expect((await pgXa.recover()).found).toBe(0);
    expect((await preparedOf(tx.xid)).pg).toBe(0);
    expect(await pgBal('r')).toBe(1); // the earlier test's commit only
    // The restarted RM answers the TC's rollback: no such prepared transaction is success.
    await startRm();
    await waitForStatus(tm, tx.xid, ['Rollbacked']);
  }, 120_000);
});

describe('recovery on MariaDB (XA RECOVER)', () => {
  it('finds a branch whose RM went away and rolls it back after the rollback decision', async () => {
    await seed('m1', 100);
    const gone = newClient('xa-gone');
    const goneXa = createMysqlXaDataSource(gone, myPool, {
      name: 'xa.gone.my',
      recoveryIntervalMs: 0,
    });
    await goneXa.start();
    const tx = await concord.begin({ name: 'xa-mysql-recovery', timeoutMs: 60_000 });
    await tx.run(() => goneXa.run((q) => q.query(`UPDATE ${T} SET bal = bal - 7 WHERE id = 'm1'`)));
    await gone.close(); // its RM channel closes: nobody serves xa.gone.my now
    await tx.rollback();
    expect((await preparedOf(tx.xid)).mysql).toBe(1);
    // A recovery job of the same application and resource (not started) rolls it back.
    const job = createMysqlXaDataSource(newClient('xa-gone'), myPool, { name: 'xa.gone.my' });
    expect((await myXa.recover()).found).toBe(0); // another resource's: not its business
    const report = await job.recover();
    expect(report).toMatchObject({ found: 1, rolledBack: 1, leftAfterDecision: 1 });
    expect((await preparedOf(tx.xid)).mysql).toBe(0);
    expect(await myBal('m1')).toBe(100);
    // Idempotent: another pass finds nothing.
    expect((await job.recover()).found).toBe(0);
  }, 60_000);
});
