/**
 * Prepared transactions on a PostgreSQL that is already running: XA branches need
 * `max_prepared_transactions` above 0, which stock servers ship at 0, and only a restart
 * changes it. The service step does this only when asked (CONCORD_TEST_PG_CONFIGURE=1, as
 * `.ci/run` does on CI), only on this machine, and only for a Debian cluster, which
 * `pg_ctlcluster` restarts the way the machine started it. Anywhere else it says how.
 */
import pg from 'pg';
import { findBinary, progress, run, seconds, tail } from './host.ts';
import { describe, type DbSettings } from './settings.ts';

export const CONFIGURE_VAR = 'CONCORD_TEST_PG_CONFIGURE';
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/;
/** Debian's cluster_name: "<version>/<cluster>". */
const DEBIAN_CLUSTER = /^(\d+)\/([\w.-]+)$/;

export function configureFix(s: DbSettings, count: number): string {
  return (
    `psql -h ${s.host} -p ${s.port} -U ${s.user} -c "ALTER SYSTEM SET max_prepared_transactions = ${count}" ` +
    `and restart the server (Debian: pg_ctlcluster <version> <cluster> restart), ` +
    `or run the tests once with ${CONFIGURE_VAR}=1, which does both on a local Debian cluster`
  );
}

async function one(s: DbSettings, sql: string): Promise<Record<string, unknown> | undefined> {
  const client = new pg.Client({ ...s, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query(sql)).rows[0] as Record<string, unknown> | undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** ALTER SYSTEM, then `pg_ctlcluster restart`; throws (changing nothing) where it can't. */
export async function enablePreparedTransactions(s: DbSettings, count: number): Promise<void> {
  const started = Date.now();
  const cluster = String((await one(s, 'SHOW cluster_name'))?.cluster_name ?? '');
  const m = DEBIAN_CLUSTER.exec(cluster);
  const ctl = findBinary(['pg_ctlcluster']);
  if (!m || !ctl || !LOOPBACK.test(s.host))
    throw new Error(
      `cannot restart ${describe(s)} here (cluster_name "${cluster}", ` +
        `pg_ctlcluster ${ctl ? 'found' : 'missing'}, host ${s.host})`,
    );
  progress(`PostgreSQL: ${CONFIGURE_VAR}=1: max_prepared_transactions = ${count} on ${cluster}`);
  await one(s, `ALTER SYSTEM SET max_prepared_transactions = ${count}`);
  const restart = await run(ctl, ['--skip-systemctl-redirect', m[1]!, m[2]!, 'restart']);
  if (restart.code !== 0)
    throw new Error(`pg_ctlcluster ${m[1]} ${m[2]} restart failed:\n${tail(restart.output)}`);
  progress(`PostgreSQL: restarted ${cluster} in ${seconds(started)}`);
}
