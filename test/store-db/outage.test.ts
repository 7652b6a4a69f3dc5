/**
 * A database that is down: typed retryable errors (UNAVAILABLE), fail-fast while it is
 * down, reconnect with backoff when it is back, a lease holder that cannot renew steps
 * down — and never a crash. The outage is played by a TCP proxy in front of the real
 * database (the shared database itself stays up for the other test files).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import { DbSessionStore, DbUnavailableError, type DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  DbProxy,
  TEST_LEASE,
  closedPort,
  connectAdmin,
  dbHostPort,
  dbUrl,
  dbWorld,
  openStore,
  testLogger,
  uniquePrefix,
  waitFor,
  type Admin,
} from './helpers.ts';

describe.each(DIALECTS)('database outages on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgo' : 'myo');
  let admin: Admin;

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
  });

  afterAll(async () => {
    await admin?.dropTables(prefix);
    await admin?.close();
  });

  it('a store pointed at a closed port fails to open with a typed, retryable UNAVAILABLE error', async () => {
    const port = await closedPort();
    const started = Date.now();
    const err = await DbSessionStore.open({
      url: dbUrl(dialect, port),
      nodeId: 'n',
      logger: testLogger(),
      tablePrefix: prefix,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DbUnavailableError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', retryable: true, name: 'DbUnavailableError' });
    expect((err as Error).message).toMatch(/unreachable/);
    expect((err as Error).message).not.toMatch(/:[^@/]*@/); // no password in messages
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('waits for a database that comes up during startupTimeoutMs (reconnect with backoff)', async () => {
    const proxy = new DbProxy(dbHostPort(dialect));
    proxy.port = await closedPort();
    const opening = DbSessionStore.open({
      url: dbUrl(dialect, proxy.port),
      nodeId: 'late',
      logger: testLogger(),
      tablePrefix: prefix,
      lease: TEST_LEASE,
      startupTimeoutMs: 10_000,
    });
    await new Promise((r) => setTimeout(r, 400));
    await proxy.up();
    const store = await opening;
    expect(store.databaseDown).toBe(false);
    await store.close();
    await proxy.down();
  });

  it('down: every call fails fast with DbUnavailableError, the holder steps down, another node takes over; back: it reconnects', async () => {
    const proxy = new DbProxy(dbHostPort(dialect));
    await proxy.up();
    const a = await DbSessionStore.open({
      url: dbUrl(dialect, proxy.port),
      nodeId: 'proxied',
      logger: testLogger(),
      tablePrefix: prefix,
      lease: TEST_LEASE,
      maxConnections: 4,
    });
    const b = await openStore(dialect, prefix, { nodeId: 'direct' });
    const wa = dbWorld(a, { host: '10.0.0.1' });
    const wb = dbWorld(b, { host: '10.0.0.2' });
    try {
      expect(a.drivesPhaseTwo()).toBe(true);
      const { xid } = await wa.coordinator.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: 60_000,
      });
      await wa.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'db',
        lockKey: 'o:1',
        clientId: 'rm',
        applicationId: 'app',
      });

      await proxy.down();
      const first = await wa.coordinator
        .begin({ applicationId: 'app', transactionServiceGroup: 'g', timeoutMs: 60_000 })
        .catch((e: unknown) => e);
      expect(first).toBeInstanceOf(DbUnavailableError);
      expect(first).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(a.databaseDown).toBe(true);
      // While down: fail fast, reads and writes alike, with what is known about the outage.
      const started = Date.now();
      for (let i = 0; i < 20; i++) {
        await expect(wa.coordinator.getStatus({ xid })).rejects.toBeInstanceOf(DbUnavailableError);
        await expect(wa.coordinator.commit({ xid })).rejects.toMatchObject({
          code: 'UNAVAILABLE',
          retryable: true,
        });
      }
      expect(Date.now() - started).toBeLessThan(1_000);
      await expect(a.read((s) => s.liveXids())).rejects.toThrow(/unreachable for \d+ ms/);

      // The holder cannot renew: it steps down before its lease runs out; the other node takes
      // over.
      await waitFor(
        'A to step down',
        () => (a.drivesPhaseTwo() ? undefined : true),
        TEST_LEASE.leaseMs + 1_000,
      );
      expect(wa.coordinator.driver.isActive).toBe(false);
      await waitFor(
        'B to take over',
        () => (b.drivesPhaseTwo() ? true : undefined),
        TEST_LEASE.leaseMs * 3,
      );
      // The other node serves the transaction meanwhile.
      expect(await wb.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);

      // Back: A reconnects on its own (probe with backoff) and serves again, as a non-holder that
      // knows the new epoch.
      await proxy.up();
      await waitFor('A to reconnect', () => (a.databaseDown ? undefined : true), 10_000);
      expect(await wa.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
      await waitFor(
        'A to learn the epoch',
        () => (a.epoch() === b.epoch() ? true : undefined),
        TEST_LEASE.leaseMs * 2,
      );
      expect(a.drivesPhaseTwo()).toBe(false);
      expect(a.stats.unavailable).toBeGreaterThanOrEqual(1);
    } finally {
      wa.coordinator.stop();
      wb.coordinator.stop();
      await a.close();
      await b.close();
      await proxy.down();
    }
  });
});
