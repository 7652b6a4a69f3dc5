/**
 * The coordinator on the db store, against real PostgreSQL and MariaDB/MySQL: the same
 * Coordinator, fake RM gateway and fake clock as the coordinator's own tests, with sessions
 * in SQL. Unreachable database → the file fails (see helpers.ts).
 */
import { requireXid, type Xid } from '../../src/shared/ids.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockConflictError } from '../../src/coordinator/errors.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import {
  DB_SCHEMA_VERSION,
  DbSchemaUpgradeBlockedError,
  DbSchemaVersionError,
  DbSessionStore,
  type DialectName,
} from '../../src/store/db/index.ts';
import {
  DIALECTS,
  closeWorlds,
  dbWorld,
  openSolo,
  openStore,
  uniquePrefix,
  waitFor,
  type Admin,
  type DbWorld,
} from './helpers.ts';

describe.each(DIALECTS)('db store on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgs' : 'mys');
  let admin: Admin;
  let store: DbSessionStore;
  let w: DbWorld;

  beforeAll(async () => {
    ({ admin, store, w } = await openSolo(dialect, prefix));
  });

  afterAll(() => closeWorlds(admin, prefix, [w]));

  const begin = async (timeoutMs = 60_000) =>
    (
      await w.coordinator.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        name: 'tx',
        timeoutMs,
      })
    ).xid;
  const register = async (
    xid: Xid,
    type: 'AT' | 'TCC' | 'SAGA' | 'XA',
    lockKey = '',
    resourceId = 'db1',
  ) =>
    (
      await w.coordinator.registerBranch({
        xid,
        branchType: type,
        resourceId,
        lockKey,
        clientId: 'rm-1',
        applicationId: 'app',
      })
    ).branchId;
  const lockRows = async (xid: Xid) =>
    (await admin.query(`SELECT row_key, xid FROM ${prefix}lock_table WHERE xid = ?`, [xid]))
      .map((r) => String(r.row_key))
      .sort();

  it('creates its tables with a schema version row, idempotently, and refuses a schema it does not know', async () => {
    const rows = await admin.query(`SELECT id, version FROM ${prefix}schema_version`);
    expect(rows.map((r) => [Number(r.id), Number(r.version)])).toEqual([[1, DB_SCHEMA_VERSION]]);
    // A second node on the same tables: CREATE TABLE IF NOT EXISTS, same version row.
    const second = await openStore(dialect, prefix, { lease: false });
    await second.close();
    expect(
      (await admin.query(`SELECT COUNT(*) AS n FROM ${prefix}schema_version`)).map((r) =>
        Number(r.n),
      ),
    ).toEqual([1]);

    const other = uniquePrefix('ver');
    const first = await openStore(dialect, other, { lease: false });
    await first.close();
    await admin.query(`UPDATE ${other}schema_version SET version = 99 WHERE id = 1`);
    await expect(openStore(dialect, other, { lease: false })).rejects.toBeInstanceOf(
      DbSchemaVersionError,
    );
    await admin.dropTables(other);
  });

  it('upgrades tables of schema version 1 (branch_count filled from the branches), but not under a held lease', async () => {
    const old = uniquePrefix('v1');
    const now = Date.now();
    const xid = (n: number) => `10.0.0.1:8091:${n}`;
    const first = await openStore(dialect, old, { lease: false });
    for (const n of [1, 2]) {
      const begun = await first.submit({
        kind: 'Begin',
        xid: xid(n),
        transactionId: String(n),
        applicationId: 'app',
        transactionServiceGroup: 'g',
        name: 'tx',
        timeoutMs: 60_000,
        beginTime: now,
        requestId: null,
      });
      expect(begun.ok).toBe(true);
    }
    const registered = await first.submit({
      kind: 'RegisterBranch',
      xid: xid(1),
      branchId: '11',
      type: 'TCC',
      resourceId: 'db',
      lockKey: '',
      applicationData: '',
      clientId: 'rm',
      applicationId: 'app',
      at: now,
      requestId: null,
    });
    expect(registered.ok).toBe(true);
    await first.close();
    // What a version-1 node left behind: no branch_count column, version 1.
    await admin.query(`ALTER TABLE ${old}global_table DROP COLUMN branch_count`);
    await admin.query(`UPDATE ${old}schema_version SET version = 1 WHERE id = 1`);
    await admin.query(
      `INSERT INTO ${old}distributed_lock (lock_key, holder, holder_address, epoch, expire_at) VALUES ('concord-phase-two-driver', 'old-node', '', 1, ?)`,
      [Date.now() + 600_000],
    );
    await expect(openStore(dialect, old, { lease: false })).rejects.toBeInstanceOf(
      DbSchemaUpgradeBlockedError,
    );

    await admin.query(`UPDATE ${old}distributed_lock SET expire_at = 0`);
    const upgraded = await openStore(dialect, old, { lease: false });
    try {
      const version = await admin.query(`SELECT version FROM ${old}schema_version`);
      expect(version.map((r) => Number(r.version))).toEqual([DB_SCHEMA_VERSION]);
      const counts = await admin.query(
        `SELECT xid, branch_count FROM ${old}global_table ORDER BY xid`,
      );
      expect(counts.map((r) => [String(r.xid), Number(r.branch_count)])).toEqual([
        [xid(1), 1],
        [xid(2), 0],
      ]);
      // The one-statement decision must see the TCC branch: AsyncCommitting is refused.
      const async = await upgraded.submit({
        kind: 'ChangeGlobalStatus',
        xid: xid(1),
        from: GlobalStatus.Begin,
        to: GlobalStatus.AsyncCommitting,
        at: Date.now(),
        term: 0,
      });
      expect(async.ok ? 'accepted' : async.rejection.code).toBe('ILLEGAL_STATUS');
      await upgraded.exportState(); // asserts branch_count against branch_table
    } finally {
      await upgraded.close();
      await admin.dropTables(old);
    }
  });

  it('the only node holds the lease and drives phase two; every node serves TC requests', () => {
    expect(store.isLeader()).toBe(true);
    expect(store.drivesPhaseTwo()).toBe(true);
    expect(store.term()).toBeGreaterThanOrEqual(1);
    expect(w.coordinator.driver.isActive).toBe(true);
  });

  it('commits: branches in registration order, locks released, the final status kept after the session left the tables', async () => {
    const xid = await begin();
    const b1 = await register(xid, 'AT', 't:1,2');
    const b2 = await register(xid, 'TCC', 'u:7');
    const b3 = await register(xid, 'SAGA');
    expect(await lockRows(xid)).toEqual(['db1^^^t^^^1', 'db1^^^t^^^2', 'db1^^^u^^^7']);
    await w.coordinator.branchReport({
      xid,
      branchId: b1,
      status: BranchStatus.PhaseOne_Done,
      applicationData: '{"undo":1}',
    });

    const session = await w.coordinator.getSession({ xid });
    expect(
      session.live &&
        session.session.branches.map((b) => [b.branchId, b.status, b.lockedRows.length]),
    ).toEqual([
      [b1, 'PhaseOne_Done', 2],
      [b2, 'Registered', 1],
      [b3, 'Registered', 0],
    ]);
    expect(session.live && session.session.branches[0]!.applicationData).toBe('{"undo":1}');

    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    expect(w.gateway.callsFor(xid).map((c) => `${c.kind} ${c.branchId}`)).toEqual([
      `commit ${b1}`,
      `commit ${b2}`,
      `commit ${b3}`,
    ]);
    expect(await lockRows(xid)).toEqual([]);
    expect(await admin.query(`SELECT xid FROM ${prefix}global_table WHERE xid = ?`, [xid])).toEqual(
      [],
    );
    expect(await admin.query(`SELECT xid FROM ${prefix}branch_table WHERE xid = ?`, [xid])).toEqual(
      [],
    );
    expect(await w.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    expect(await w.coordinator.getSession({ xid })).toMatchObject({
      live: false,
      finished: { xid, status: 'Committed' },
    });
    // A retried commit answers the status reached.
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
  });

  it('rolls back in reverse registration order', async () => {
    const xid = await begin();
    const b1 = await register(xid, 'TCC', 'r:1');
    const b2 = await register(xid, 'TCC', 'r:2');
    expect(await w.coordinator.rollback({ xid })).toBe(GlobalStatus.Rollbacked);
    expect(w.gateway.callsFor(xid).map((c) => `${c.kind} ${c.branchId}`)).toEqual([
      `rollback ${b2}`,
      `rollback ${b1}`,
    ]);
    expect(await lockRows(xid)).toEqual([]);
  });

  it('an all-AT transaction commits asynchronously: answered AsyncCommitting, finished by the driver', async () => {
    const xid = await begin();
    await register(xid, 'AT', 'a:1');
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.AsyncCommitting);
    await waitFor('async commit to finish', async () =>
      (await w.coordinator.getStatus({ xid })) === GlobalStatus.Committed ? true : undefined,
    );
    expect(await lockRows(xid)).toEqual([]);
  });

  it('a lock conflict names the holder and the rows, changes nothing, and the rows are free once the holder ends', async () => {
    const holder = await begin();
    await register(holder, 'TCC', 'acct:1,2,3');
    const other = await begin();
    await register(other, 'AT', 'acct:9');
    const before = await admin.query(
      `SELECT row_key, xid, branch_id FROM ${prefix}lock_table ORDER BY row_key`,
    );

    const err = await w.coordinator
      .registerBranch({
        xid: other,
        branchType: 'AT',
        resourceId: 'db1',
        lockKey: 'acct:8,3,2',
        clientId: 'rm',
        applicationId: 'app',
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockConflictError);
    expect((err as LockConflictError).holdingXid).toBe(holder);
    expect((err as LockConflictError).rows).toEqual(['db1^^^acct^^^2', 'db1^^^acct^^^3']);
    expect((err as LockConflictError).retryable).toBe(true);
    // All or nothing: acct:8 was free, and is still free; no branch row was written.
    expect(
      await admin.query(`SELECT row_key, xid, branch_id FROM ${prefix}lock_table ORDER BY row_key`),
    ).toEqual(before);
    const live = await w.coordinator.getSession({ xid: other });
    expect(live.live && live.session.branches).toHaveLength(1);
    expect(
      await w.coordinator.lockQuery({ xid: other, resourceId: 'db1', lockKey: 'acct:8,3' }),
    ).toBe(false);
    expect(
      await w.coordinator.lockQuery({ xid: holder, resourceId: 'db1', lockKey: 'acct:8,3' }),
    ).toBe(true);
    expect(await w.coordinator.lockQuery({ resourceId: 'db1', lockKey: 'acct:8' })).toBe(true);

    expect(await w.coordinator.commit({ xid: holder })).toBe(GlobalStatus.Committed);
    await register(other, 'AT', 'acct:8,3,2');
    expect(await lockRows(other)).toEqual([
      'db1^^^acct^^^2',
      'db1^^^acct^^^3',
      'db1^^^acct^^^8',
      'db1^^^acct^^^9',
    ]);
    expect(await w.coordinator.rollback({ xid: other })).toBe(GlobalStatus.Rollbacked);
    expect(await lockRows(other)).toEqual([]);
  });

  it('a transaction may lock its own rows again; a row stays held while any of its branches names it', async () => {
    const xid = await begin();
    const b1 = await register(xid, 'AT', 'own:1,2');
    const b2 = await register(xid, 'AT', 'own:2,3');
    expect(await lockRows(xid)).toEqual(['db1^^^own^^^1', 'db1^^^own^^^2', 'db1^^^own^^^3']);
    const holder = await store.read((s) => s.lockHolder('db1^^^own^^^2'));
    expect(holder).toEqual({ xid, branchIds: [b1, b2].sort() });
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.AsyncCommitting);
    await waitFor('commit to finish', async () =>
      (await lockRows(xid)).length === 0 ? true : undefined,
    );
  });

  it('a duplicate requestId is applied once: Begin and RegisterBranch answer their first result', async () => {
    const first = await w.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
      requestId: `begin-${prefix}`,
    });
    const again = await w.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
      requestId: `begin-${prefix}`,
    });
    expect(again.xid).toBe(first.xid);
    const reg = {
      xid: first.xid,
      branchType: 'AT' as const,
      resourceId: 'db1',
      lockKey: 'dup:1',
      clientId: 'rm',
      applicationId: 'app',
      requestId: `reg-${prefix}`,
    };
    const r1 = await w.coordinator.registerBranch(reg);
    const r2 = await w.coordinator.registerBranch(reg);
    expect(r2.branchId).toBe(r1.branchId);
    const session = await w.coordinator.getSession({ xid: first.xid });
    expect(session.live && session.session.branches.map((b) => b.branchId)).toEqual([r1.branchId]);
    // 'r' and 'r ' are two requests (MySQL would pad them equal in a _bin VARCHAR key).
    const spaced = await w.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
      requestId: `begin-${prefix} `,
    });
    expect(spaced.xid).not.toBe(first.xid);
    await w.coordinator.rollback({ xid: first.xid });
    await w.coordinator.rollback({ xid: spaced.xid });
  });

  it('two nodes racing the same requestId begin one transaction', async () => {
    const node2 = await openStore(dialect, prefix, { lease: false });
    try {
      const w2 = dbWorld(node2, { host: '10.0.0.2' });
      const requestId = `race-${prefix}`;
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 === 0 ? w : w2).coordinator.begin({
            applicationId: 'app',
            transactionServiceGroup: 'g',
            timeoutMs: 60_000,
            requestId,
          }),
        ),
      );
      expect(new Set(answers.map((a) => a.xid)).size).toBe(1);
      const rows = await admin.query(
        `SELECT COUNT(*) AS n FROM ${prefix}request_dedup WHERE kind = 'Begin' AND request_id = ?`,
        [requestId],
      );
      expect(Number(rows[0]!.n)).toBe(1);
      await w.coordinator.rollback({ xid: answers[0]!.xid });
      w2.coordinator.stop();
    } finally {
      await node2.close();
    }
  });

  it('a Begin transaction past its deadline is rolled back by the driver (TimeoutRollbacked)', async () => {
    const xid = await begin(5_000);
    await register(xid, 'TCC', 'to:1');
    await w.clock.advance(5_000);
    await waitFor('timeout rollback', async () =>
      (await w.coordinator.getStatus({ xid })) === GlobalStatus.TimeoutRollbacked
        ? true
        : undefined,
    );
    expect(w.gateway.callsFor(xid).map((c) => c.kind)).toEqual(['rollback']);
    expect(await lockRows(xid)).toEqual([]);
    // A commit after the decision answers it.
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.TimeoutRollbacked);
  });

  it('a retryable phase-two failure is retried with backoff; a failed transaction keeps its locks until marked resolved', async () => {
    const xid = await begin();
    const b1 = await register(xid, 'TCC', 'f:1');
    w.gateway.script(
      b1,
      BranchStatus.PhaseTwo_CommitFailed_Retryable,
      BranchStatus.PhaseTwo_CommitFailed_Unretryable,
    );
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    const retry = await store.read((s) => s.getSession(xid)!.retry);
    expect(retry).toMatchObject({ attempts: 1, stopped: false });
    await w.clock.advance(1_000);
    await waitFor('commit to fail', async () =>
      (await w.coordinator.getStatus({ xid })) === GlobalStatus.CommitFailed ? true : undefined,
    );
    expect(await lockRows(xid)).toEqual(['db1^^^f^^^1']);
    const resolved = await w.coordinator.markResolved({ xid, confirmXid: xid, operator: 'ops' });
    expect(resolved.status).toBe(GlobalStatus.CommitFailed);
    expect(await lockRows(xid)).toEqual([]);
    expect(await w.coordinator.getSession({ xid })).toMatchObject({
      live: false,
      finished: { status: 'CommitFailed', resolvedBy: 'ops' },
    });
  });

  it('refused commands change nothing and come back as the coordinator’s typed errors', async () => {
    const xid = await begin();
    const branchId = await register(xid, 'TCC', 'z:1');
    const snapshot = async () => ({
      g: await admin.query(`SELECT * FROM ${prefix}global_table WHERE xid = ?`, [xid]),
      b: await admin.query(`SELECT * FROM ${prefix}branch_table WHERE xid = ?`, [xid]),
      l: await lockRows(xid),
    });
    const before = await snapshot();
    await expect(
      w.coordinator.branchReport({ xid, branchId, status: BranchStatus.PhaseTwo_Committed }),
    ).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(
      w.coordinator.markResolved({ xid, confirmXid: xid, operator: 'ops' }),
    ).rejects.toMatchObject({ code: 'ILLEGAL_STATUS' });
    await expect(
      w.coordinator.registerBranch({
        xid: requireXid('10.0.0.1:8091:1'),
        branchType: 'AT',
        resourceId: 'db1',
        lockKey: 'q:1',
        clientId: 'rm',
        applicationId: 'app',
      }),
    ).rejects.toMatchObject({ code: 'UNKNOWN_XID' });
    const nul = await store.submit({
      kind: 'BranchReport',
      xid,
      branchId,
      status: BranchStatus.PhaseOne_Done,
      applicationData: 'a\u0000b',
    });
    expect(nul).toMatchObject({ ok: false, rejection: { code: 'BAD_REQUEST' } });
    expect(await snapshot()).toEqual(before);
    await w.coordinator.rollback({ xid });
  });

  it('the term fence: a command stamped with an epoch older than the transaction’s driver is refused', async () => {
    const xid = await begin();
    const branchId = await register(xid, 'TCC');
    const epoch = store.term();
    await store.submit({
      kind: 'ChangeGlobalStatus',
      xid,
      from: 'Begin',
      to: 'Rollbacking',
      at: w.clock.now(),
      term: epoch,
    });
    // A newer epoch's driver acquires the transaction...
    const acquired = await store.submit({ kind: 'AcquireDriver', xid, term: epoch + 5 });
    expect(acquired.ok).toBe(true);
    // ...and the old epoch's late result is refused.
    const late = await store.submit({
      kind: 'BranchPhaseTwoResult',
      xid,
      branchId,
      status: BranchStatus.PhaseTwo_Rollbacked,
      term: epoch,
    });
    expect(late).toMatchObject({
      ok: false,
      rejection: { code: 'STALE_TERM', term: epoch, driverTerm: epoch + 5 },
    });
    const session = await store.read((s) => s.getSession(xid));
    expect(session?.branches[0]?.status).toBe(BranchStatus.Registered);
    // The typed error a driver would see; and the node learned the newer epoch from it
    // (terms are 2·epoch, +1 on the holder: src/store/db/terms.ts).
    await expect(
      store
        .submit({
          kind: 'RetryScheduled',
          xid,
          attempt: 1,
          nextRetryAt: w.clock.now() + 1_000,
          retryDeadline: w.clock.now() + 60_000,
          term: epoch,
        })
        .then((o) => o.ok || o.rejection.code),
    ).resolves.toBe('STALE_TERM');
    expect(store.epoch()).toBe(Math.floor((epoch + 5) / 2));
    // An operator's command is no driver's: refused by the driver term, it is submitted again
    // at that term (an operator stops the retries whoever drives them).
    const lifted = store.stats.lifted;
    await expect(
      store
        .submit({ kind: 'RetryStopped', xid, at: w.clock.now(), term: epoch })
        .then((o) => o.ok || o.rejection.code),
    ).resolves.toBe(true);
    expect(store.stats.lifted).toBe(lifted + 1);
  });

  it('reads: a bounded page of live xids, most urgent first; counts', async () => {
    const soon = await begin(2_000);
    const later = await begin(600_000);
    const page = await store.read((s) => s.liveXids());
    expect(page.indexOf(soon)).toBeLessThan(page.indexOf(later));
    const counts = await store.read((s) => ({
      live: s.liveSessionCount(),
      locked: s.lockedRowCount(),
    }));
    expect(counts.live).toBeGreaterThanOrEqual(2);
    expect(counts.locked).toBeGreaterThanOrEqual(0);
    // fn's own error comes out as it was thrown.
    await expect(
      store.read(() => {
        throw new RangeError('mine');
      }),
    ).rejects.toThrow('mine');
    await w.coordinator.rollback({ xid: soon });
    await w.coordinator.rollback({ xid: later });
  });

  it('due xids: a Begin transaction only once its deadline passed, a decided one at once', async () => {
    const now = w.clock.now();
    const open = await begin(600_000);
    const expiring = await begin(2_000);
    const due = async (at: number) => store.dueXids(at, 1_000);
    expect(await due(now)).not.toContain(open);
    expect(await due(now)).not.toContain(expiring);
    expect(await due(now + 2_000)).toContain(expiring);
    expect(await due(now + 2_000)).not.toContain(open);
    // Decided with a branch whose phase two has not run: due now, most urgent first.
    await register(open, 'TCC');
    await store.submit({ kind: 'CommitGlobal', xid: open, at: now, term: store.term() });
    const page = await due(now);
    expect(page).toContain(open);
    expect((await due(now + 2_000)).indexOf(open)).toBeLessThan(
      (await due(now + 2_000)).indexOf(expiring),
    );
    expect(await store.dueXids(now + 2_000, 1)).toHaveLength(1);
    await w.coordinator.rollback({ xid: expiring });
  });

  it('exports a state that passes the coordinator’s invariant checks', async () => {
    const machine = await store.exportState();
    expect(() => machine.checkInvariants()).not.toThrow();
  });
});
