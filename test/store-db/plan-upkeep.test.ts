/**
 * PostgreSQL: the lease holder analyzes a session table once it has grown (plan-upkeep.ts),
 * so the cached generic plans of the batched statements, made while the tables were
 * empty, are made again with the sizes as they are (without it a fresh cluster's batched
 * Begin read the whole finished table on every statement until autovacuum came by).
 * `pg_class.reltuples` is -1 for a table never analyzed and the row count after ANALYZE:
 * the test's eyes on whether an ANALYZE ran.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DbSessionStore } from '../../src/store/db/index.ts';
import { DB_PLAN_ANALYZE_GROWTH, DB_PLAN_ANALYZE_MIN_PAGES } from '../../src/store/db/limits.ts';
import { connectAdmin, openStore, uniquePrefix, waitFor, type Admin } from './helpers.ts';

/** Rows of the finished table that fill `pages` 8 KiB pages, with a margin. */
function rowsFor(pages: number): number {
  return pages * 120;
}

describe('plan upkeep on postgres', () => {
  const prefix = uniquePrefix('plan');
  let admin: Admin;
  let store: DbSessionStore;
  let seq = 0;

  const finished = `${prefix}finished_table`;
  const reltuples = async (table: string): Promise<number> =>
    Number(
      (await admin.query(`SELECT reltuples FROM pg_class WHERE relname = ?`, [table]))[0]
        ?.reltuples,
    );
  const pages = async (table: string): Promise<number> =>
    Number((await admin.query(`SELECT pg_relation_size(?) / 8192 AS p`, [table]))[0]?.p);
  const addFinished = (n: number) => {
    const from = seq;
    seq += n;
    return admin.query(
      `INSERT INTO ${finished} (xid, status, finished_at) SELECT '10.0.0.9:8091:' || g, 'Committed', g FROM generate_series(?::int, ?::int) g`,
      [from + 1, from + n],
    );
  };

  beforeAll(async () => {
    admin = await connectAdmin('postgres');
    store = await openStore('postgres', prefix, { nodeId: 'plan', lease: false });
  });

  afterAll(async () => {
    await store?.close();
    await admin?.dropTables(prefix);
    await admin?.close();
  });

  it('leaves small tables alone, analyzes one that reached the minimum, and again only once it doubled', async () => {
    await addFinished(10);
    expect(await store.planUpkeepNow()).toEqual([]);
    expect(await reltuples(finished)).toBe(-1);

    await addFinished(rowsFor(DB_PLAN_ANALYZE_MIN_PAGES));
    expect(await pages(finished)).toBeGreaterThanOrEqual(DB_PLAN_ANALYZE_MIN_PAGES);
    expect(await store.planUpkeepNow()).toEqual([finished]);
    expect(await reltuples(finished)).toBe(seq);

    // Grown, but not doubled: no second ANALYZE (the statistics still say the old count).
    const analyzedAt = seq;
    await addFinished(Math.floor(seq / 4));
    expect(await store.planUpkeepNow()).toEqual([]);
    expect(await reltuples(finished)).toBe(analyzedAt);

    await addFinished(seq * DB_PLAN_ANALYZE_GROWTH);
    expect(await store.planUpkeepNow()).toEqual([finished]);
    expect(await reltuples(finished)).toBe(seq);
  });

  it('the node that drives phase two does it by itself; the others do not', async () => {
    const global = `${prefix}global_table`;
    await admin.query(
      `INSERT INTO ${global} (xid, transaction_id, application_id, transaction_service_group, transaction_name, timeout_ms, begin_time, deadline, status, status_changed_at, retry_attempts, retry_stopped, driver_term, due_at)
       SELECT '10.0.0.9:8091:' || g, g::text, 'app', 'g', 'n', 60000, 1, 60001, 'Begin', 1, 0, FALSE, 0, 60001 FROM generate_series(1, ?::int) g`,
      [rowsFor(DB_PLAN_ANALYZE_MIN_PAGES)],
    );
    // Not driving: a check never runs (the store's own timer is already ticking).
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await reltuples(global)).toBe(-1);
    store.setLeadership(true, 1);
    await waitFor('the holder to analyze the global table', async () =>
      (await reltuples(global)) >= 0 ? true : undefined,
    );
    await admin.query(`DELETE FROM ${global}`);
  });
});
