/**
 * The db store's schema steps, against real PostgreSQL and MariaDB/MySQL: tables of
 * version 1 (before branches kept their application) are migrated to version 2 in place —
 * live sessions survive, their branches read with an empty application (routed only to the
 * client that registered them), new branches record theirs — and the step is idempotent.
 */
import { requireXid } from '../../src/shared/ids.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DB_SCHEMA_VERSION, type DialectName } from '../../src/store/db/index.ts';
import { DIALECTS, connectAdmin, dbWorld, openStore, uniquePrefix, type Admin } from './helpers.ts';

describe.each(DIALECTS)('schema migration on %s', (dialect: DialectName) => {
  let admin: Admin;
  const prefixes: string[] = [];

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
  });

  afterAll(async () => {
    for (const p of prefixes) await admin?.dropTables(p);
    await admin?.close();
  });

  const version = async (prefix: string) =>
    (await admin.query(`SELECT version FROM ${prefix}schema_version WHERE id = 1`)).map((r) =>
      Number(r.version),
    );

  /** Tables of version 1 holding one live transaction with one branch; answers its xid. */
  async function versionOneTables(prefix: string): Promise<string> {
    const store = await openStore(dialect, prefix, { lease: false });
    const w = dbWorld(store);
    const { xid } = await w.coordinator.begin({
      applicationId: 'tm-app',
      transactionServiceGroup: 'g',
      timeoutMs: 600_000,
    });
    await w.coordinator.registerBranch({
      xid,
      branchType: 'TCC',
      resourceId: 'debit',
      clientId: 'rm-old',
      applicationId: 'team-a',
    });
    w.coordinator.stop();
    await store.close();
    // What version 1 had: branch_table without application_id, global_table without branch_count.
    await admin.query(`ALTER TABLE ${prefix}branch_table DROP COLUMN application_id`);
    await admin.query(`ALTER TABLE ${prefix}global_table DROP COLUMN branch_count`);
    await admin.query(`UPDATE ${prefix}schema_version SET version = 1 WHERE id = 1`);
    return xid;
  }

  it('migrates version 1 in place: a live branch reads with no application, new ones record theirs', async () => {
    const prefix = uniquePrefix('mig');
    prefixes.push(prefix);
    const xid = requireXid(await versionOneTables(prefix));
    expect(await version(prefix)).toEqual([1]);

    const store = await openStore(dialect, prefix, { lease: false });
    try {
      expect(await version(prefix)).toEqual([DB_SCHEMA_VERSION]);
      const w = dbWorld(store);
      const before = await w.coordinator.getSession({ xid });
      expect(before.live && before.session.branches.map((b) => b.applicationId)).toEqual(['']);
      await w.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'debit',
        clientId: 'rm-new',
        applicationId: 'team-a',
      });
      const after = await w.coordinator.getSession({ xid });
      expect(after.live && after.session.branches.map((b) => b.applicationId)).toEqual([
        '',
        'team-a',
      ]);
      w.coordinator.stop();
    } finally {
      await store.close();
    }
  });

  it('is idempotent: a node that died between the column and the version row runs the step again', async () => {
    const prefix = uniquePrefix('mig');
    prefixes.push(prefix);
    await (await openStore(dialect, prefix, { lease: false })).close();
    // The column is there (version 2 tables) but the row still says 1.
    await admin.query(`UPDATE ${prefix}schema_version SET version = 1 WHERE id = 1`);
    await (await openStore(dialect, prefix, { lease: false })).close();
    expect(await version(prefix)).toEqual([DB_SCHEMA_VERSION]);
    // And a second node opening migrated tables changes nothing.
    await (await openStore(dialect, prefix, { lease: false })).close();
    expect(await version(prefix)).toEqual([DB_SCHEMA_VERSION]);
  });
});
