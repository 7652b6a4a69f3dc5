/**
 * The service step's fallback, end to end, without touching the machine's databases: the
 * configured addresses point at closed ports, so the step must start private servers; the
 * database suites must pass on them; and after the run (or after the run is SIGKILLed) no
 * server process and no file of theirs may remain.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { readMode, setupServices } from './services.ts';
import { installMariadb, MARIADB_FIX } from './services/mariadb-install.ts';
import { isDebian } from './services/host.ts';
import { ROOT_PREFIX } from './services/private-root.ts';
import { FAILS_ON_PURPOSE, FALLBACK_SUITES } from './services/fallback-run.config.ts';

const REPO_ROOT = resolve(import.meta.dirname, '../..');
const VITEST = resolve(REPO_ROOT, 'node_modules/vitest/vitest.mjs');
const FALLBACK_CONFIG = resolve(import.meta.dirname, 'services/fallback-run.config.ts');

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  await new Promise<void>((r) => server.close(() => r()));
  return typeof addr === 'object' && addr ? addr.port : 0;
}

/** The pids whose command line names `dir` (servers and watchdog of one private root). */
function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

async function nothingLeftUnder(dir: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((processesUnder(dir).length > 0 || existsSync(dir)) && Date.now() < deadline)
    await sleep(100);
  expect(processesUnder(dir), `processes still running under ${dir}`).toEqual([]);
  expect(existsSync(dir), `${dir} still exists`).toBe(false);
}

/** The environment of a test run whose configured databases answer nowhere. */
async function unreachableEnv(extra: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  for (const name of Object.keys(env)) if (name.startsWith('VITEST')) delete env[name];
  delete env.CONCORD_TEST_SERVICES;
  env.PGPORT = String(await closedPort());
  env.MYSQL_PORT = String(await closedPort());
  return { ...env, ...extra };
}

function runToEnd(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; output: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('close', (code) => done({ code, output }));
  });
}

describe('service step: private servers when nothing answers', () => {
  it('starts real PostgreSQL and MariaDB on free ports; the database suites pass on them; a failing test still fails the run; nothing stays behind', async () => {
    const env = await unreachableEnv();
    const { code, output } = await runToEnd([VITEST, 'run', '--config', FALLBACK_CONFIG], env);
    const context = `exit ${code}\n${output.slice(-4000)}`;
    expect(output, context).toContain(`nothing usable at postgres@127.0.0.1:${env.PGPORT}/test`);
    expect(output, context).toContain(`nothing usable at root@127.0.0.1:${env.MYSQL_PORT}/test`);
    const port = (name: string) =>
      Number(
        new RegExp(`${name}: private .* ready at \\S+@127\\.0\\.0\\.1:(\\d+)/`).exec(output)?.[1],
      );
    const taken = [5432, 3306, Number(env.PGPORT), Number(env.MYSQL_PORT), NaN];
    expect(taken, context).not.toContain(port('PostgreSQL'));
    expect(taken, context).not.toContain(port('MariaDB'));
    expect(output, context).toContain('max_prepared_transactions=64');
    // Every database suite passed; the one failure is the fixture's, and it fails the run.
    expect(output, context).toMatch(
      new RegExp(`Test Files\\s+1 failed \\| ${FALLBACK_SUITES.length} passed`),
    );
    expect(output, context).toContain(`FAIL  ${FAILS_ON_PURPOSE} > fails on purpose`);
    expect(code, context).toBe(1);
    expect(output, context).toContain('private servers stopped, their files removed');
    const dir = new RegExp(`/\\S*${ROOT_PREFIX}\\w+`).exec(output)?.[0];
    expect(dir, context).toBeDefined();
    await nothingLeftUnder(dir!);
  }, 600_000);

  it('a run killed with SIGKILL leaves no server and no file behind (the watchdog stops them)', async () => {
    const env = await unreachableEnv();
    const fixture = resolve(import.meta.dirname, 'services/hold-fixture.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], { cwd: REPO_ROOT, env });
    let output = '';
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const ready = await new Promise<{ dir: string; env: Record<string, string> }>((done, fail) => {
      let text = '';
      child.stdout.on('data', (c: Buffer) => {
        text += c.toString();
        const line = /READY (.*)\n/.exec(text)?.[1];
        if (line) done(JSON.parse(line));
      });
      child.on('exit', (code) => fail(new Error(`fixture exited (${code}):\n${output}`)));
    });
    expect(ready.env.PGPORT).not.toBe(env.PGPORT);
    expect(processesUnder(ready.dir).length, output).toBe(3); // postgres, mariadbd, watchdog
    child.kill('SIGKILL');
    await nothingLeftUnder(ready.dir);
  }, 180_000);
});

describe('service step: failing loudly', () => {
  it('CONCORD_TEST_SERVICES=existing: names what did not answer and starts nothing', async () => {
    const env = await unreachableEnv({ CONCORD_TEST_SERVICES: 'existing' });
    const failure = await setupServices(env).then(
      async (services) => {
        await services.stop();
        return new Error('set up, yet nothing answers');
      },
      (err: Error) => err,
    );
    // (from …): the variables the run was given, which name the closed port.
    const at = (name: string, where: string, portVar: string) =>
      new RegExp(
        `${name}: nothing usable at ${where}/test \\(from [^)]*${portVar}[^)]*\\): connect ECONNREFUSED`,
      );
    expect(failure.message).toMatch(at('PostgreSQL', `postgres@127.0.0.1:${env.PGPORT}`, 'PGPORT'));
    expect(failure.message).toMatch(
      at('MariaDB', `root@127.0.0.1:${env.MYSQL_PORT}`, 'MYSQL_PORT'),
    );
    expect(failure.message).toContain('CONCORD_TEST_SERVICES=existing forbids starting one');
  });

  it('no MariaDB binaries and no way to install them: names the variables, and the fix', async () => {
    const failure = await installMariadb({ path: '', extraDirs: [] }, false).then(
      () => new Error('found binaries in an empty search path'),
      (err: Error) => err,
    );
    expect(failure.message).toContain('no mariadbd and mariadb-install-db');
    if (isDebian()) expect(MARIADB_FIX).toMatch(/^sudo apt-get install -y mariadb-server, /);
    expect(MARIADB_FIX).toContain('MYSQL_HOST/MYSQL_PORT');
  });

  it('rejects an unknown CONCORD_TEST_SERVICES', () => {
    expect(readMode({})).toBe('auto');
    expect(readMode({ CONCORD_TEST_SERVICES: 'private' })).toBe('private');
    expect(() => readMode({ CONCORD_TEST_SERVICES: 'embedded' })).toThrow(
      /auto, private, existing/,
    );
  });
});
