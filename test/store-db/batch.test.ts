/**
 * The Begins and commits of one event-loop turn share one statement on PostgreSQL
 * (src/store/db/batch-pg.ts); MySQL runs them one by one. Either way, many at once give
 * every caller its own answer, a requestId begins one transaction, a commit decides once,
 * and the tables agree with the coordinator's rules afterwards (exportState checks them).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import type { Xid } from '../../src/shared/ids.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  closeWorlds,
  openSolo,
  waitFor,
  uniquePrefix,
  type Admin,
  type DbWorld,
} from './helpers.ts';

const MANY = 24;

describe.each(DIALECTS)('batched begins and commits on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgb' : 'myb');
  let admin: Admin;
  let store: DbSessionStore;
  let w: DbWorld;

  beforeAll(async () => {
    ({ admin, store, w } = await openSolo(dialect, prefix));
  });

  afterAll(() => closeWorlds(admin, prefix, [w]));

  const begin = (requestId?: string) =>
    w.coordinator
      .begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: 60_000,
        ...(requestId ? { requestId } : {}),
      })
      .then((r) => r.xid);

  it('many begins at once: one session each, a shared requestId begins one', async () => {
    const before = store.fastPathStats.batches;
    const xids = await Promise.all([
      ...Array.from({ length: MANY }, () => begin()),
      begin('same-request'),
      begin('same-request'),
    ]);
    expect(xids[MANY]).toBe(xids[MANY + 1]);
    expect(new Set(xids).size).toBe(MANY + 1);
    const rows = await admin.query(`SELECT xid FROM ${prefix}global_table`);
    expect(rows.map((r) => String(r.xid)).sort()).toEqual([...new Set(xids)].sort());
    const after = store.fastPathStats.batches;
    // Fewer statements (MySQL: transactions) than begins: they travelled together.
    expect(after.commands - before.commands).toBe(MANY + 2);
    expect(after.statements - before.statements).toBeLessThan(MANY);
  });

  it('many commits at once, one of them twice, some with an AT branch, one with a TCC branch: each decided once, as the rules say', async () => {
    await admin.query(`DELETE FROM ${prefix}global_table`);
    const xids = await Promise.all(Array.from({ length: MANY }, () => begin()));
    const at = new Set(xids.slice(0, 4));
    const tcc = xids[4]!;
    for (const [i, xid] of [...at].entries())
      await w.coordinator.registerBranch({
        xid,
        branchType: 'AT',
        resourceId: 'db1',
        lockKey: `t:${i}`,
        clientId: 'rm-1',
        applicationId: 'app',
      });
    await w.coordinator.registerBranch({
      xid: tcc,
      branchType: 'TCC',
      resourceId: 'db1',
      lockKey: 't:99',
      clientId: 'rm-1',
      applicationId: 'app',
    });
    const twice = xids[MANY - 1]!;
    const answers = await Promise.all([...xids, twice].map((xid) => w.coordinator.commit({ xid })));
    const expected = (xid: Xid) =>
      at.has(xid) ? GlobalStatus.AsyncCommitting : GlobalStatus.Committed;
    expect(answers).toEqual([...xids, twice].map(expected));
    // The driver finishes the AT ones; every transaction ends Committed, no row stays locked.
    await waitFor('the async commits to finish', async () => {
      const rows = await admin.query(`SELECT COUNT(*) AS n FROM ${prefix}global_table`);
      return Number(rows[0]!.n) === 0 ? true : undefined;
    });
    const finished = await admin.query(`SELECT xid, status FROM ${prefix}finished_table`);
    const ended = new Map(finished.map((r) => [String(r.xid), String(r.status)]));
    for (const xid of xids) expect(ended.get(xid), xid).toBe(GlobalStatus.Committed);
    const machine = await store.exportState();
    expect(machine.lockedRowCount()).toBe(0);
  });

  it('the Begins and the commits of one turn share one statement, each answered as alone', async () => {
    const earlier = await Promise.all(Array.from({ length: 6 }, () => begin()));
    const before = store.fastPathStats.batches;
    const [commits, begins] = await Promise.all([
      Promise.all(earlier.map((xid) => w.coordinator.commit({ xid }))),
      Promise.all([...Array.from({ length: 6 }, () => begin()), begin('mixed'), begin('mixed')]),
    ]);
    expect(commits).toEqual(earlier.map(() => GlobalStatus.Committed));
    expect(begins[6]).toBe(begins[7]);
    expect(new Set(begins).size).toBe(7);
    const after = store.fastPathStats.batches;
    if (dialect === 'postgres') {
      expect(after.commands - before.commands).toBe(6 + 8);
      // The 6 commits and 7 of the Begins in one statement; the second 'mixed' waits for
      // the next one (and finds its requestId remembered).
      expect(after.statements - before.statements).toBe(2);
    } else {
      // MySQL batches the Begins only (batch-mysql.ts): the 6 and the first 'mixed' in one
      // transaction, the second 'mixed' in the next (it goes the general way from there).
      expect(after.commands - before.commands).toBe(8);
      expect(after.statements - before.statements).toBe(2);
    }
    const live = await admin.query(`SELECT xid FROM ${prefix}global_table`);
    expect(live.map((r) => String(r.xid)).sort()).toEqual([...new Set(begins)].sort());
    const ended = await admin.query(`SELECT xid FROM ${prefix}finished_table`);
    for (const xid of earlier) expect(ended.map((r) => String(r.xid))).toContain(xid);
    await store.exportState();
  });
});
