/**
 * An RM killed (SIGKILL) between its branch's local commit and phase two: the undo row is
 * in the service's database, so when the service comes back (a new process of the same
 * application serving the same resource), the TC's rollback reaches it and the row is
 * restored. Real cluster, real child process, real PostgreSQL and MariaDB/MySQL.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type ConcordClient } from '../../src/index.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { killAll, killHard, runFixture } from '../support/process.ts';
import { waitFor } from '../support/wait.ts';
import { startCluster, type TestCluster } from '../sdk/helpers/cluster.ts';
import { openDb } from './helpers.ts';

const FIXTURE = resolve(import.meta.dirname, 'fixtures/at-rm.ts');
const logger = createLogger({ name: 'at-restart', level: 'silent' });
let cluster: TestCluster;
const clients: ConcordClient[] = [];
const children = new Set<ChildProcess>();

beforeAll(async () => {
  for (const db of ['pg', 'mysql'] as const) await (await openDb(db, 'READ COMMITTED')).close();
  cluster = await startCluster('at-restart');
}, 180_000);

afterAll(async () => {
  killAll(children);
  await Promise.allSettled(clients.map((c) => c.close()));
  await cluster?.stop();
}, 60_000);

describe.each(['pg', 'mysql'] as const)('AT RM restart on %s', (dbName) => {
  it('the undo row survives the kill and the restarted service rolls the branch back', async () => {
    const db = await openDb(dbName, 'READ COMMITTED');
    const tag = `${dbName}_${randomBytes(3).toString('hex')}`;
    const table = `at_restart_${tag}`;
    const undo = `undo_restart_${tag}`;
    const applicationId = `restart-${tag}`;
    const resourceId = `restart-db-${tag}`;
    try {
      await db.sql(`CREATE TABLE ${table} (id INT PRIMARY KEY, v VARCHAR(20))`);
      await db.sql(`INSERT INTO ${table} (id, v) VALUES (1, 'before')`);
      const tm = createClient({
        servers: cluster.servers,
        applicationId,
        logger,
        closeTimeoutMs: 2_000,
      });
      clients.push(tm);
      const tx = await tm.begin({ name: 'restart', timeoutMs: 120_000 });
      // The undo table must exist before the child writes its undo row.
      const setup = createClient({
        servers: cluster.servers,
        applicationId: `${applicationId}-setup`,
        logger,
      });
      clients.push(setup);
      await db.dataSource(setup, { resourceId: `setup-${tag}`, undoTable: undo }).ensureSchema();

      const { child, ready: branchId } = await runFixture(FIXTURE, {
        env: {
          CONCORD_SERVERS: cluster.servers.join(','),
          AT_DB: dbName,
          AT_XID: tx.xid,
          AT_APPLICATION_ID: applicationId,
          AT_RESOURCE_ID: resourceId,
          AT_UNDO_TABLE: undo,
          AT_SQL: `UPDATE ${table} SET v = 'after' WHERE id = 1`,
        },
        readyLine: /^COMMITTED (.+)$/m,
        readyTimeoutMs: 60_000,
        label: 'the child (its branch committed locally)',
        children,
      });
      await killHard(child);
      children.delete(child);
      expect((await db.sql(`SELECT v FROM ${table} WHERE id = 1`))[0]?.v).toBe('after');
      const undoRows = await db.sql(
        `SELECT log_status FROM ${undo} WHERE xid = ${db.p(1)} AND branch_id = ${db.p(2)}`,
        [tx.xid, branchId],
      );
      expect(undoRows.map((r) => Number(r.log_status))).toEqual([0]);

      // Rollback decided while no RM of the resource is alive; the TC keeps retrying.
      const rolledBack = tx.rollback().catch((e: unknown) => e);
      // The service restarts: a new process (here, a new client) serving the same resource.
      const restarted = createClient({
        servers: cluster.servers,
        applicationId,
        logger,
        closeTimeoutMs: 2_000,
      });
      clients.push(restarted);
      db.dataSource(restarted, { resourceId, undoTable: undo });
      await restarted.connect();
      await waitFor(
        'the restarted RM restored the row',
        async () =>
          (await db.sql(`SELECT v FROM ${table} WHERE id = 1`))[0]?.v === 'before'
            ? true
            : undefined,
        60_000,
        200,
      );
      await waitFor(
        'undo row gone',
        async () =>
          (await db.sql(`SELECT 1 FROM ${undo} WHERE xid = ${db.p(1)}`, [tx.xid])).length === 0
            ? true
            : undefined,
        30_000,
      );
      await rolledBack;
    } finally {
      await db.sql(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
      await db.sql(`DROP TABLE IF EXISTS ${undo}`).catch(() => {});
      await db.close();
    }
  }, 180_000);
});
