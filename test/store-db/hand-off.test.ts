/**
 * The decider's hand-off time is the store's option (the node's store.db.deciderHandOffMs), on
 * real PostgreSQL and MariaDB: a session decided at a decider's (even) term is due — what the
 * lease holder's due poll asks for, `due_at <= now` — exactly that long after the decision, by
 * each way a decision is written (the general path, the one-statement ChangeGlobalStatus, and on
 * PostgreSQL the turn's batched commit of an AT-only session); at the holder's (odd) term at once.
 * Before the option, every way wrote the constant 5 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from '../../src/coordinator/commands.ts';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import { DB_DECIDER_HANDOFF_MS } from '../../src/store/db/limits.ts';
import { DIALECTS, connectAdmin, openStore, uniquePrefix, type Admin } from './helpers.ts';

const T0 = 1_700_000_000_000;
const HAND_OFF_MS = 1_234;

describe.each(DIALECTS)('the decider hand-off time on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgh' : 'myh');
  let admin: Admin;
  let store: DbSessionStore;
  let n = 0;

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
    store = await openStore(dialect, prefix, { lease: false, deciderHandOffMs: HAND_OFF_MS });
  });

  afterAll(async () => {
    await store?.close();
    await admin?.dropTables(prefix).catch(() => undefined);
    await admin?.close();
  });

  async function submit(command: Command): Promise<unknown> {
    const outcome = await store.submit(command);
    expect(outcome.ok, JSON.stringify(outcome)).toBe(true);
    return outcome.ok ? outcome.value : null;
  }

  /** A new session begun at T0 with one branch of `type`. */
  async function begun(type: 'TCC' | 'AT', term: number): Promise<string> {
    n += 1;
    const xid = `10.0.0.8:8091:${700_000 + n}`;
    await submit({
      kind: 'Begin',
      xid,
      transactionId: String(700_000 + n),
      applicationId: 'app',
      transactionServiceGroup: 'g',
      name: 'hand-off',
      timeoutMs: 600_000,
      beginTime: T0,
      requestId: null,
      term,
    });
    await submit({
      kind: 'RegisterBranch',
      xid,
      branchId: String(n * 10),
      type,
      resourceId: 'db1',
      lockKey: `h:${n}`,
      applicationData: '',
      clientId: 'rm-1',
      applicationId: 'app',
      at: T0 + 1,
      requestId: null,
    });
    return xid;
  }

  /** True when the holder's due poll at `now` names `xid`. */
  const dueAt = async (xid: string, now: number) => (await store.dueXids(now, 1_000)).includes(xid);

  it('is the store option, checked against its bounds with a typed error', async () => {
    expect(store.handOffMs).toBe(HAND_OFF_MS);
    expect(store.handOffAt({ statusChangedAt: T0, driverTerm: 2 })).toBe(T0 + HAND_OFF_MS);
    expect(store.handOffAt({ statusChangedAt: T0, driverTerm: 3 })).toBe(T0);
    for (const bad of [0, 99, 600_001, 1.5])
      await expect(
        openStore(dialect, prefix, { lease: false, deciderHandOffMs: bad }),
      ).rejects.toBeInstanceOf(ConfigError);
    expect(HAND_OFF_MS).not.toBe(DB_DECIDER_HANDOFF_MS);
  });

  it('a decision at a decider term is due the hand-off time after it, by every way it is written', async () => {
    const at = T0 + 10;
    // The general path (a synchronous commit: TCC).
    const general = await begun('TCC', 2);
    expect(await submit({ kind: 'CommitGlobal', xid: general, at, term: 2 })).toMatchObject({
      status: GlobalStatus.Committing,
      decided: true,
    });
    // The one-statement ChangeGlobalStatus out of Begin.
    const changed = await begun('TCC', 2);
    await submit({
      kind: 'ChangeGlobalStatus',
      xid: changed,
      from: GlobalStatus.Begin,
      to: GlobalStatus.Rollbacking,
      at,
      term: 2,
    });
    // An AT-only commit (PostgreSQL: the turn's batched statement).
    const async = await begun('AT', 2);
    expect(await submit({ kind: 'CommitGlobal', xid: async, at, term: 2 })).toMatchObject({
      status: GlobalStatus.AsyncCommitting,
    });
    for (const xid of [general, changed, async]) {
      expect(await dueAt(xid, at + HAND_OFF_MS - 1), xid).toBe(false);
      expect(await dueAt(xid, at + HAND_OFF_MS), xid).toBe(true);
    }
    // At the holder's (odd) term: due at once.
    const holder = await begun('TCC', 3);
    await submit({ kind: 'CommitGlobal', xid: holder, at, term: 3 });
    expect(await dueAt(holder, at)).toBe(true);
  });
});
