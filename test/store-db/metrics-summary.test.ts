/**
 * The transaction gauges in db mode: the lease holder counts live transactions by status
 * and locked rows with one read of the real database (PostgreSQL and MySQL/MariaDB); a
 * node that does not hold the lease counts nothing (the gauges sum across nodes).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { GlobalStatus } from '../../src/coordinator/index.ts';
import { dbTcSessions } from '../../src/server/tc/index.ts';
import { TcMetrics, summarize } from '../../src/server/tc/tc-metrics.ts';
import type { DbSessionStore } from '../../src/store/db/index.ts';
import { DIALECTS, connectAdmin, dbWorld, openStore, uniquePrefix, waitFor } from './helpers.ts';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
}, 30_000);

describe.each(DIALECTS)('db mode transaction gauges (%s)', (dialect) => {
  it('the lease holder counts live transactions by status and locked rows; another node counts none', async () => {
    const prefix = uniquePrefix('txm');
    const admin = await connectAdmin(dialect);
    cleanups.push(async () => {
      await admin.dropTables(prefix);
      await admin.close();
    });
    const holder: DbSessionStore = await openStore(dialect, prefix, { nodeId: 'holder' });
    cleanups.push(() => holder.close());
    await waitFor('the lease', async () => (holder.drivesPhaseTwo() ? true : undefined), 10_000);
    const other = await openStore(dialect, prefix, { nodeId: 'other' });
    cleanups.push(() => other.close());
    const world = dbWorld(holder);
    cleanups.push(async () => world.coordinator.stop());
    const tm = {
      applicationId: 'app',
      transactionServiceGroup: 'group',
      name: 'tx',
      timeoutMs: 60_000,
    };
    const { xid } = await world.coordinator.begin(tm);
    await world.coordinator.begin(tm);
    await world.coordinator.registerBranch({
      xid,
      branchType: 'TCC',
      resourceId: 'db',
      lockKey: 'orders:1,2',
      clientId: 'rm-1',
      applicationId: 'app',
    });

    const summary = await holder.read(summarize);
    expect(summary.byStatus.get(GlobalStatus.Begin)).toBe(2);
    expect(summary.lockedRows).toBe(2);
    expect(summary.stuck).toBe(0);

    const scrape = async (store: DbSessionStore) => {
      const registry = new Registry();
      const sessions = dbTcSessions(store);
      new TcMetrics(registry, {
        stuckAfterMs: 600_000,
        liveSummary: () => sessions.liveSummary!(),
      });
      return registry.metrics();
    };
    const onHolder = await scrape(holder);
    expect(onHolder).toMatch(/^concord_tc_global_sessions\{status="Begin"\} 2$/m);
    expect(onHolder).toMatch(/^concord_tc_locked_rows 2$/m);
    const onOther = await scrape(other);
    expect(onOther).not.toMatch(/^concord_tc_global_sessions\{/m);
    expect(onOther).toMatch(/^concord_tc_locked_rows 0$/m);
  }, 60_000);
});
