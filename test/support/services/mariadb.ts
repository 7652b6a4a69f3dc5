/**
 * MariaDB for the tests: probe the configured server, or start a private `mariadbd` of the
 * machine's MariaDB (installed from Debian's packages when missing and we are root on
 * Debian) with its own data directory in the private root, on a free port.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { installMariadb, MARIADB_FIX } from './mariadb-install.ts';
import { freePort, isRoot, progress, run, seconds, stopProcess, tail } from './host.ts';
import type { RunningServer } from './postgres.ts';
import type { PrivateRoot } from './private-root.ts';
import { describe, type DbSettings } from './settings.ts';

const PROBE_TIMEOUT_MS = 5_000;
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 30_000;
const READY_POLL_MS = 100;
const START_TRIES = 3;

async function connect(s: DbSettings, database?: string): Promise<mysql.Connection> {
  return mysql.createConnection({
    host: s.host,
    port: s.port,
    user: s.user,
    password: s.password,
    ...(database ? { database } : {}),
    connectTimeout: PROBE_TIMEOUT_MS,
  });
}

/** Reaches the server and its database (created when the server lacks it); throws if it can't. */
export async function probeMariadb(s: DbSettings): Promise<{ version: string }> {
  let conn: mysql.Connection;
  try {
    conn = await connect(s, s.database);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ER_BAD_DB_ERROR') throw err;
    const admin = await connect(s);
    await admin.query(`CREATE DATABASE IF NOT EXISTS \`${s.database.replace(/`/g, '``')}\``);
    await admin.end();
    progress(`MariaDB: created database ${s.database} on ${s.host}:${s.port}`);
    conn = await connect(s, s.database);
  }
  try {
    const [rows] = await conn.query('SELECT VERSION() AS version');
    return { version: String((rows as { version: string }[])[0]?.version) };
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/** Root over TCP from 127.0.0.1 with no password, and the `test` database, at every start. */
const INIT_SQL = [
  "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'",
  "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
  'CREATE DATABASE IF NOT EXISTS test',
].join(';\n'); // an init file holds one statement per line

/** Starts a private mariadbd; resolves when it serves the `test` database on 127.0.0.1. */
export async function startMariadb(root: PrivateRoot): Promise<RunningServer> {
  const started = Date.now();
  const bins = await installMariadb();
  const dir = join(root.dir, 'mariadb');
  await mkdir(dir);
  await writeFile(join(dir, 'init.sql'), `${INIT_SQL};\n`);
  const asUser = isRoot() ? ['--user=root'] : []; // mariadbd runs as root only when told so
  progress(`MariaDB: ${bins.installDb} into ${dir}/data`);
  const init = await run(bins.installDb, [
    '--no-defaults',
    `--datadir=${join(dir, 'data')}`,
    '--auth-root-authentication-method=normal',
    '--skip-test-db',
    ...asUser,
  ]);
  if (init.code !== 0)
    throw new Error(`${bins.installDb} failed (exit ${init.code}):\n${tail(init.output)}`);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const settings: DbSettings = {
      host: '127.0.0.1',
      port,
      user: 'root',
      password: '',
      database: 'test',
    };
    const log = join(dir, `error-${attempt}.log`);
    progress(`MariaDB: starting ${bins.server} on port ${port}`);
    const child = spawn(bins.server, mariadbdArgs(dir, port, log), { stdio: 'ignore' });
    if (child.pid) await root.register({ pid: child.pid, signal: 'SIGTERM' });
    const ready = await waitReady(
      settings,
      () => child.exitCode !== null || child.signalCode !== null,
    );
    if (!ready) {
      await stopProcess(child, 'SIGTERM', STOP_GRACE_MS);
      const text = await readFile(log, 'utf8').catch(() => '');
      if (attempt < START_TRIES && /already in use|Can't start server: Bind/i.test(text)) continue;
      throw new Error(`mariadbd did not start within ${START_TIMEOUT_MS} ms:\n${tail(text)}`);
    }
    const { version } = await probeMariadb(settings);
    progress(`MariaDB: private ${version} ready at ${describe(settings)} in ${seconds(started)}`);
    return { settings, stop: () => stopProcess(child, 'SIGTERM', STOP_GRACE_MS) };
  }
}

function mariadbdArgs(dir: string, port: number, log: string): string[] {
  return [
    '--no-defaults',
    `--datadir=${join(dir, 'data')}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    `--socket=${join(dir, 'mariadbd.sock')}`,
    `--pid-file=${join(dir, 'mariadbd.pid')}`,
    `--init-file=${join(dir, 'init.sql')}`,
    `--log-error=${log}`,
    '--skip-name-resolve',
    // As Debian's packaged server is configured (the compiled-in default is latin1).
    '--character-set-server=utf8mb4',
    '--collation-server=utf8mb4_general_ci',
    ...(isRoot() ? ['--user=root'] : []), // mariadbd runs as root only when told so
  ];
}

async function waitReady(s: DbSettings, gone: () => boolean): Promise<boolean> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && !gone()) {
    try {
      await (await connect(s, s.database)).end();
      return true;
    } catch {
      await sleep(READY_POLL_MS);
    }
  }
  return false;
}

export { MARIADB_FIX };
