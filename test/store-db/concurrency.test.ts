/**
 * Several nodes (store instances with their own connection pools) on one database, racing
 * branch registers for overlapping row sets. What the database must guarantee, whatever
 * the interleaving: a register takes all its rows or none, and no row ever has two holders.
 */
import type { Xid } from '../../src/shared/ids.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockConflictError } from '../../src/coordinator/errors.ts';
import { parseLockKey } from '../../src/coordinator/lock-key.ts';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  closeWorlds,
  connectAdmin,
  dbWorld,
  openStore,
  uniquePrefix,
  waitFor,
  type Admin,
  type DbWorld,
} from './helpers.ts';

const NODES = 3;
const XIDS = 6;
const REGISTERS = 90;
const ROWS = 12;

/** A deterministic spread of overlapping lock keys: 1..3 rows out of ROWS, in two tables. */
function lockKeyOf(i: number): string {
  const a = (i * 7) % ROWS;
  const b = (i * 5 + 3) % ROWS;
  const c = (i * 11 + 1) % ROWS;
  const picks = i % 3 === 0 ? [a] : i % 3 === 1 ? [a, b] : [a, b, c];
  const t = picks.filter((p) => p % 2 === 0).map(String);
  const u = picks.filter((p) => p % 2 === 1).map(String);
  return [t.length ? `t:${t.join(',')}` : '', u.length ? `u:${u.join(',')}` : '']
    .filter(Boolean)
    .join(';');
}

describe.each(DIALECTS)('concurrent nodes on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgc' : 'myc');
  let admin: Admin;
  const stores: DbSessionStore[] = [];
  const worlds: DbWorld[] = [];

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
    for (let i = 0; i < NODES; i++) {
      const store = await openStore(dialect, prefix, { nodeId: `node${i + 1}`, maxConnections: 8 });
      stores.push(store);
      worlds.push(dbWorld(store, { host: `10.0.0.${i + 1}`, idBase: (i + 1) * 10_000_000 }));
    }
  });

  afterAll(() => closeWorlds(admin, prefix, worlds));

  it('racing branch registers from several nodes: all rows or none, never two holders of a row', async () => {
    const xids: Xid[] = [];
    for (let i = 0; i < XIDS; i++) {
      xids.push(
        (
          await worlds[i % NODES]!.coordinator.begin({
            applicationId: 'app',
            transactionServiceGroup: 'g',
            timeoutMs: 600_000,
          })
        ).xid,
      );
    }
    type Attempt = {
      xid: string;
      lockKey: string;
      rows: string[];
      result: 'ok' | LockConflictError;
    };
    const attempts = await Promise.all(
      Array.from({ length: REGISTERS }, async (_, i): Promise<Attempt> => {
        const xid = xids[(i * 5) % XIDS]!;
        const lockKey = lockKeyOf(i);
        const world = worlds[i % NODES]!;
        try {
          await world.coordinator.registerBranch({
            xid,
            branchType: 'TCC',
            resourceId: 'db',
            lockKey,
            clientId: `rm-${i}`,
            applicationId: 'app',
          });
          return { xid, lockKey, rows: parseLockKey('db', lockKey), result: 'ok' };
        } catch (err) {
          if (!(err instanceof LockConflictError)) throw err;
          return { xid, lockKey, rows: parseLockKey('db', lockKey), result: err };
        }
      }),
    );
    const won = attempts.filter((a) => a.result === 'ok');
    const lost = attempts.filter((a) => a.result !== 'ok');
    // The spread must really race: some registers win, some lose.
    expect(won.length).toBeGreaterThan(XIDS - 1);
    expect(lost.length).toBeGreaterThan(10);

    // Never two holders: rows won by different transactions are disjoint (nothing was released
    // during the race).
    const winner = new Map<string, string>();
    for (const a of won) {
      for (const row of a.rows) {
        const held = winner.get(row);
        expect(held === undefined || held === a.xid, `${row} won by ${held} and ${a.xid}`).toBe(
          true,
        );
        winner.set(row, a.xid);
      }
    }
    // All or nothing: what lock_table holds is exactly the union of the winning registers, by xid.
    const table = await admin.query(`SELECT row_key, xid FROM ${prefix}lock_table`);
    const held = new Map(table.map((r) => [String(r.row_key), String(r.xid)]));
    expect(held).toEqual(winner);
    // Every loser was told the truth: its holder is another transaction that won those rows.
    for (const a of lost) {
      const err = a.result as LockConflictError;
      expect(err.holdingXid).not.toBe(a.xid);
      expect(err.rows.length).toBeGreaterThan(0);
      for (const row of err.rows) {
        expect(a.rows).toContain(row);
        expect(winner.get(row)).toBe(err.holdingXid);
      }
    }
    // Branch rows: exactly the winners.
    const branches = await admin.query(`SELECT xid FROM ${prefix}branch_table`);
    expect(branches.length).toBe(won.length);
    const state = await stores[0]!.exportState();
    expect(() => state.checkInvariants()).not.toThrow();

    // Every transaction ends, from whichever node, and no row outlives it.
    const ends = await Promise.all(
      xids.map((xid, i) => worlds[(i + 1) % NODES]!.coordinator.rollback({ xid })),
    );
    for (const status of ends)
      expect([GlobalStatus.Rollbacked, GlobalStatus.Rollbacking]).toContain(status);
    await waitFor(
      'every transaction to end',
      async () => {
        for (const w of worlds) await w.clock.advance(200);
        const live = await stores[0]!.read((s) => s.liveSessionCount());
        return live === 0 ? true : undefined;
      },
      20_000,
    );
    expect(await admin.query(`SELECT row_key FROM ${prefix}lock_table`)).toEqual([]);
  });

  it('concurrent phase-two commands on one transaction from several nodes serialize on its row', async () => {
    const xid = (
      await worlds[0]!.coordinator.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: 600_000,
      })
    ).xid;
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        worlds[i % NODES]!.coordinator.registerBranch({
          xid,
          branchType: 'TCC',
          resourceId: 'db',
          lockKey: `s:${i}`,
          clientId: 'rm',
          applicationId: 'app',
        }),
      ),
    );
    // Every node tries to decide at once: exactly one decision is recorded, every caller learns it.
    const answers = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        i % 2 === 0
          ? worlds[i % NODES]!.coordinator.commit({ xid })
          : worlds[i % NODES]!.coordinator.rollback({ xid }),
      ),
    );
    const final = await waitFor(
      'the decision to be driven to its end',
      async () => {
        for (const w of worlds) await w.clock.advance(200);
        const status = await worlds[0]!.coordinator.getStatus({ xid });
        return status === GlobalStatus.Committed || status === GlobalStatus.Rollbacked
          ? status
          : undefined;
      },
      20_000,
    );
    const decision = final === GlobalStatus.Committed ? 'commit' : 'rollback';
    for (const a of answers)
      expect(a.startsWith(decision === 'commit' ? 'Commit' : 'Rollback'), `${a} vs ${final}`).toBe(
        true,
      );
    expect(
      await admin.query(`SELECT row_key FROM ${prefix}lock_table WHERE xid = ?`, [xid]),
    ).toEqual([]);
  });

  it('a lock row inserted by a transaction that commits after our read is caught by the key: re-read, LockConflict naming it', async () => {
    const w = worlds[1]!;
    const xid = (
      await w.coordinator.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: 600_000,
      })
    ).xid;
    const racer = '10.9.9.9:8091:4242';
    for (const outcome of ['commit', 'rollback'] as const) {
      // Another node's transaction has inserted the row but not committed yet: our read cannot see
      // it.
      const tx = await admin.begin();
      await tx.query(
        `INSERT INTO ${prefix}lock_table (row_key, xid, branch_id, resource_id, table_name, pk) VALUES (?, ?, ?, ?, ?, ?)`,
        ['db^^^race^^^1', racer, '1', 'db', 'race', '1'],
      );
      const retriesBefore = stores[1]!.stats.raceRetries;
      const register = w.coordinator
        .registerBranch({
          xid,
          branchType: 'TCC',
          resourceId: 'db',
          lockKey: 'race:1,2',
          clientId: 'rm',
          applicationId: 'app',
        })
        .then(
          () => 'registered' as const,
          (err: unknown) => err,
        );
      // Our INSERT waits on the racer's uncommitted key...
      await waitFor('the register to block on the racing row', async () => {
        const rows = await admin.query(`SELECT row_key FROM ${prefix}lock_table WHERE xid = ?`, [
          xid,
        ]);
        return rows.length === 0 ? true : undefined;
      });
      await new Promise((resolve) => setTimeout(resolve, 150));
      if (outcome === 'commit') {
        await tx.commit();
        // ...fails on the key once the racer commits, retries, re-reads, and is refused by the
        // coordinator's lock table.
        const err = await register;
        expect(err).toBeInstanceOf(LockConflictError);
        expect((err as LockConflictError).holdingXid).toBe(racer);
        expect((err as LockConflictError).rows).toEqual(['db^^^race^^^1']);
        expect(stores[1]!.stats.raceRetries).toBeGreaterThan(retriesBefore);
        expect(
          await admin.query(`SELECT row_key FROM ${prefix}lock_table WHERE xid = ?`, [xid]),
        ).toEqual([]);
        await admin.query(`DELETE FROM ${prefix}lock_table WHERE xid = ?`, [racer]);
      } else {
        await tx.rollback();
        // ...and goes through once the racer rolls back.
        expect(await register).toBe('registered');
        const rows = await admin.query(
          `SELECT row_key FROM ${prefix}lock_table WHERE xid = ? ORDER BY row_key`,
          [xid],
        );
        expect(rows.map((r) => String(r.row_key))).toEqual(['db^^^race^^^1', 'db^^^race^^^2']);
      }
    }
    await w.coordinator.rollback({ xid });
  });
});
