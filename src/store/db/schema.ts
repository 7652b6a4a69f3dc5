/**
 * The db store's schema version and the steps that bring older tables up to it. A fresh
 * database gets the current tables (the driver's CREATE statements) and a version row; a
 * database of an older version is migrated one step at a time, under the schema lock that
 * keeps concurrent nodes apart. Every step is idempotent (a node that died half-way through
 * one runs it again) and the version row moves after each. A newer version is refused:
 * this node would not know what its tables mean.
 */
import type { Logger } from '../../shared/logger.ts';
import { DbSchemaUpgradeBlockedError, DbSchemaVersionError } from './errors.ts';
import { intOf, type SqlConn, type SqlDriver, type TableNames } from './sql.ts';

/**
 * The version of the tables this code reads and writes; kept in `<prefix>schema_version`.
 * 2: branch_table.application_id. 3: global_table.branch_count (the one-statement
 * commit's "no branch" check, fast-path.ts).
 */
export const DB_SCHEMA_VERSION = 3;

interface MigrationStep {
  /** The version the step leaves the tables at (one more than before it). */
  to: number;
  what: string;
  run(conn: SqlConn, driver: SqlDriver, t: TableNames): Promise<void>;
}

const STEPS: readonly MigrationStep[] = [
  {
    to: 2,
    what: "branch_table.application_id: the registering RM's application ('' for older branches)",
    async run(conn, driver, t) {
      if (await hasColumn(conn, driver, t.branch, 'application_id')) return;
      await conn.query(
        `ALTER TABLE ${t.branch} ADD COLUMN application_id VARCHAR(256) NOT NULL DEFAULT ''`,
      );
    },
  },
  {
    to: 3,
    what: 'global_table.branch_count, filled from branch_table',
    async run(conn, driver, t) {
      // Nodes of an older version do not keep the column: a node of this version does not
      // upgrade under them. A held lease is the common sign of a running cluster (an old
      // node that does not hold it cannot be seen: docs/db-mode.md asks to stop them all).
      const lease = await conn.query(
        `SELECT holder FROM ${t.distributedLock} WHERE expire_at > ${driver.nowMsSql}`,
      );
      if (lease.rows.length > 0)
        throw new DbSchemaUpgradeBlockedError(
          `the ${t.global} tables are of an older schema version and node ${String(lease.rows[0]!.holder)} holds the driver lease: stop every node of the previous version, then start this one (it upgrades the tables to version ${DB_SCHEMA_VERSION})`,
        );
      if (!(await hasColumn(conn, driver, t.global, 'branch_count')))
        await conn.query(
          `ALTER TABLE ${t.global} ADD COLUMN branch_count INTEGER NOT NULL DEFAULT 0`,
        );
      await conn.query(
        `UPDATE ${t.global} SET branch_count = (SELECT COUNT(*) FROM ${t.branch} b WHERE b.xid = ${t.global}.xid)`,
      );
    },
  },
];

/** Creates missing tables, then migrates or checks the version. Runs under the schema lock. */
export async function prepareSchema(
  conn: SqlConn,
  driver: SqlDriver,
  t: TableNames,
  log: Logger,
): Promise<void> {
  for (const statement of driver.schemaStatements(t)) await conn.query(statement);
  const found = await conn.query(`SELECT version FROM ${t.schemaVersion} WHERE id = 1`);
  const row = found.rows[0];
  if (!row) {
    await conn.query(`INSERT INTO ${t.schemaVersion} (id, version) VALUES (1, ?)`, [
      DB_SCHEMA_VERSION,
    ]);
    log.info({ version: DB_SCHEMA_VERSION }, 'created the db session store tables');
    return;
  }
  const version = intOf(row.version, 'version');
  if (version > DB_SCHEMA_VERSION || version < 1)
    throw new DbSchemaVersionError(version, DB_SCHEMA_VERSION);
  for (const step of STEPS) {
    if (step.to <= version) continue;
    await step.run(conn, driver, t);
    await conn.query(`UPDATE ${t.schemaVersion} SET version = ? WHERE id = 1`, [step.to]);
    log.warn(
      { from: step.to - 1, to: step.to, step: step.what },
      'migrated the db session store tables',
    );
  }
}

async function hasColumn(
  conn: SqlConn,
  driver: SqlDriver,
  table: string,
  column: string,
): Promise<boolean> {
  const r = await conn.query(
    `SELECT COUNT(*) AS n FROM information_schema.columns
      WHERE table_schema = ${driver.currentSchemaSql} AND table_name = ? AND column_name = ?`,
    [table, column],
  );
  return intOf(r.rows[0]?.n, 'n') > 0;
}
