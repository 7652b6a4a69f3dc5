/**
 * `concord cluster up [--dir cluster-configs] [--pattern node]`: starts every
 * `<pattern><N>.yaml` of the directory (default `node<N>.yaml`; `--pattern db-pg-node` for
 * the db-mode configs) as a child process, shows a live progress line until a leader (in db
 * mode: a driver-lease holder) is agreed on,
 * prints the endpoints, and keeps running in the foreground. Ctrl-C / SIGTERM stops all
 * nodes (SIGTERM, then SIGKILL after a grace period). The children hold an IPC channel to
 * this process and exit when it goes away, so even a SIGKILLed parent leaves no orphans.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fetchHealth, formatHostPort, type HealthAnswer } from '../client/http-metadata.ts';
import { loadConfig, selfEndpoints, type NodeConfig } from '../server/config.ts';
import { ConfigError } from '../shared/errors.ts';
import { ensureDevPki } from '../server/security/pki-dir.ts';
import { nodeScheme, type NodeHttpTls } from '../shared/node-fetch.ts';
import { isTty, renderTable, style } from './table.ts';

/** `--pattern`: the file-name prefix before the number (`db-pg-node` → db-pg-node1.yaml, ...). */
export const DEFAULT_CONFIG_PREFIX = 'node';
const CONFIG_PREFIX_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The file names `cluster up` starts for a prefix: `<prefix><N>.yaml`. */
export function nodeConfigPattern(prefix: string = DEFAULT_CONFIG_PREFIX): RegExp {
  if (!CONFIG_PREFIX_PATTERN.test(prefix))
    throw new ConfigError(
      '--pattern',
      `${JSON.stringify(prefix)} is not a file-name prefix (letters, digits, "_", "." or "-")`,
    );
  return new RegExp(`^${prefix.replace(/[.]/g, '\\.')}\\d+\\.ya?ml$`);
}
/** Node config files `cluster up` starts by default: node1.yaml, node2.yaml, ... */
export const NODE_CONFIG_PATTERN = nodeConfigPattern();
/** Health polling while the cluster runs, in ms. */
export const PROGRESS_POLL_MS = 250;
/** Per-request timeout of a health poll, in ms. */
export const HEALTH_TIMEOUT_MS = 1_000;
/** After this long without a leader, print a hint (the cluster keeps trying), in ms. */
export const LEADER_WAIT_HINT_MS = 30_000;
/** How long stopping children may take before they are killed, in ms. */
export const STOP_GRACE_MS = 10_000;
/** Lines of a crashed node's log shown, at most. */
const LOG_TAIL_LINES = 15;

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

interface Member {
  file: string;
  config: NodeConfig;
  logFile: string;
  child: ChildProcess | null;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  health: HealthAnswer | null;
  /** The CA its HTTPS port is checked against (null: insecure mode, plain HTTP). */
  httpTls: NodeHttpTls | null;
}

/**
 * How a child node is started: the compiled CLI with plain Node when this file runs from
 * dist/ (the package), the TypeScript sources through tsx when it runs from src/ (the repo's
 * dev loop, `npm start`).
 */
function nodeCommand(): string[] {
  if (!import.meta.url.endsWith('.ts'))
    return [fileURLToPath(new URL('./main.js', import.meta.url))];
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  return ['--import', tsx, fileURLToPath(new URL('./main.ts', import.meta.url))];
}

export function findNodeConfigs(dir: string, prefix: string = DEFAULT_CONFIG_PREFIX): string[] {
  const pattern = nodeConfigPattern(prefix);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new ConfigError('(dir)', `cannot read ${dir}: ${(err as Error).message}`);
  }
  const number = (n: string) => Number(/(\d+)\.ya?ml$/.exec(n)![1]);
  const files = names.filter((n) => pattern.test(n)).sort((a, b) => number(a) - number(b));
  if (files.length === 0) throw new ConfigError('(dir)', `${dir} holds no ${prefix}<N>.yaml files`);
  return files.map((f) => join(dir, f));
}

export async function runClusterUp(opts: {
  dir: string;
  pattern?: string;
  verbose?: boolean;
}): Promise<void> {
  const dir = resolve(opts.dir);
  const { members, dbMode } = loadMembers(dir, opts.pattern);
  await refuseBusyPorts(members);
  console.log(
    style(
      'bold',
      `Starting ${members.length} Concord nodes from ${relative(process.cwd(), dir) || '.'}`,
    ),
  );
  const run: RunState = { stopping: false, up: false };
  const stopAll = async (code: number, why: string) => {
    if (run.stopping) return;
    run.stopping = true;
    clearLine();
    console.log(`${why}; stopping ${members.filter((m) => m.child && !m.exit).length} node(s)…`);
    await Promise.all(members.map((m) => stopChild(m)));
    console.log('All nodes stopped.');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0, 'Interrupted'));
  process.on('SIGTERM', () => void stopAll(0, 'Terminated'));
  process.on('SIGHUP', () => void stopAll(0, 'Hang-up'));
  for (const m of members)
    spawnMember(m, { members, verbose: opts.verbose ?? false, run, stopAll });
  await watchCluster(members, { dir, dbMode, verbose: opts.verbose ?? false, run });
}

/** Whether the cluster is being stopped, and whether it came up (a leader was agreed). */
interface RunState {
  stopping: boolean;
  up: boolean;
}

/** The node configs of `dir`: one store mode, distinct node ids (else exit 2). */
function loadMembers(
  dir: string,
  pattern: string | undefined,
): { members: Member[]; dbMode: boolean } {
  let members: Member[];
  try {
    members = findNodeConfigs(dir, pattern).map((file) => {
      const config = loadConfig(file);
      // The dev PKI is made here, once, before the nodes start (each would make its own
      // part otherwise): the CA, the node certificates, the dev and operator credentials.
      const tls = config.security.tls;
      if (tls?.auto)
        ensureDevPki(tls, config.node.id, [config.server.host, config.server.advertiseHost]);
      const logDir = join(dirname(config.raft.dataDir), 'logs');
      return {
        file,
        config,
        logFile: join(logDir, `${config.node.id}.log`),
        child: null,
        exit: null,
        health: null,
        httpTls: tls === null ? null : { ca: readCaOf(tls.ca) },
      };
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`concord: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const modes = new Set(members.map((m) => m.config.store.mode));
  if (modes.size > 1) {
    console.error(
      `concord: the configs in ${dir} mix store modes (raft and db); use --pattern to pick one set`,
    );
    process.exit(2);
  }
  // db mode: the "leader" is the holder of the driver lease (every node serves TC calls).
  const dbMode = modes.has('db');
  const ids = new Set<string>();
  for (const m of members) {
    if (ids.has(m.config.node.id)) {
      console.error(`concord: node id ${m.config.node.id} is used by two configs in ${dir}`);
      process.exit(2);
    }
    ids.add(m.config.node.id);
  }
  return { members, dbMode };
}

async function refuseBusyPorts(members: Member[]): Promise<void> {
  const busy = await busyPorts(members);
  if (busy.length > 0) {
    for (const b of busy) console.error(`concord: port ${b.port} (${b.what}) is already in use`);
    console.error('concord: is another cluster (or an earlier `cluster up`) still running?');
    process.exit(2);
  }
}

/** Starts one node's process; its exit before the cluster is up stops them all. */
function spawnMember(
  m: Member,
  ctx: {
    members: Member[];
    verbose: boolean;
    run: RunState;
    stopAll: (code: number, why: string) => Promise<void>;
  },
): void {
  const { members, verbose, run, stopAll } = ctx;
  mkdirSync(dirname(m.logFile), { recursive: true });
  const fd = verbose ? null : openSync(m.logFile, 'a');
  const child = spawn(process.execPath, [...nodeCommand(), 'start', '--config', m.file], {
    stdio: ['ignore', fd ?? 'inherit', fd ?? 'inherit', 'ipc'],
    env: process.env,
  });
  if (fd !== null) closeSync(fd);
  m.child = child;
  child.on('exit', (code, signal) => {
    m.exit = { code, signal };
    m.health = null;
    if (run.stopping) return;
    clearLine();
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    console.log(style('red', `node ${m.config.node.id} ${how}.`));
    printLogTail(m);
    if (!run.up) void stopAll(1, `Node ${m.config.node.id} failed to start`);
    else if (members.every((x) => x.exit)) void stopAll(1, 'Every node has exited');
  });
  child.on('error', (err) => {
    clearLine();
    console.error(`concord: could not start ${m.config.node.id}: ${err.message}`);
  });
}

/** Asks every running node for its health; only our own child's answer counts. */
async function refreshHealth(members: Member[]): Promise<void> {
  await Promise.all(
    members.map(async (m) => {
      if (m.exit) return;
      try {
        const h = await fetchHealth(selfEndpoints(m.config).control, {
          timeoutMs: HEALTH_TIMEOUT_MS,
          tls: m.httpTls,
        });
        // Only our own child counts (not some other process on the same port).
        m.health = h.pid === m.child?.pid ? h : null;
      } catch {
        m.health = null;
      }
    }),
  );
}

/** Polls the nodes until stopped: prints when the cluster is up and when the leader changes. */
async function watchCluster(
  members: Member[],
  { dir, dbMode, verbose, run }: { dir: string; dbMode: boolean; verbose: boolean; run: RunState },
): Promise<void> {
  const leaderWord = dbMode ? 'lease holder' : 'leader';
  const started = performance.now();
  let frame = 0;
  let hinted = false;
  let lastLeader: string | null = null;
  for (;;) {
    if (run.stopping) return;
    await refreshHealth(members);
    if (run.stopping) return;
    const leader = agreedLeader(members);
    if (!run.up) {
      if (leader) {
        run.up = true;
        lastLeader = leader.id;
        clearLine();
        printSummary(members, leader, dir, dbMode);
      } else {
        if (isTty() && !verbose)
          process.stdout.write(
            `\r\u001b[K${SPINNER[frame++ % SPINNER.length]} ${progressLine(members)}`,
          );
        if (!hinted && performance.now() - started > LEADER_WAIT_HINT_MS) {
          hinted = true;
          clearLine();
          console.log(
            style(
              'yellow',
              `No ${leaderWord} after ${LEADER_WAIT_HINT_MS / 1000} s; still trying. Logs: ${members.map((m) => relative(process.cwd(), m.logFile)).join(', ')}`,
            ),
          );
        }
      }
    } else if (leader && leader.id !== lastLeader) {
      lastLeader = leader.id;
      console.log(
        `${timestamp()} ${leaderWord} is now ${style('bold', leader.id)} (${dbMode ? 'epoch' : 'term'} ${leader.term})`,
      );
    } else if (!leader && lastLeader !== null && members.some((m) => m.health)) {
      lastLeader = null;
      console.log(
        `${timestamp()} ${dbMode ? 'no lease holder: the lease is changing hands' : 'no leader: election in progress'}`,
      );
    }
    await new Promise((r) => setTimeout(r, PROGRESS_POLL_MS));
  }
}

/** The configured ports some other process already listens on. */
async function busyPorts(members: Member[]): Promise<Array<{ port: number; what: string }>> {
  const checks = members.flatMap((m) =>
    (m.config.store.mode === 'db'
      ? (['httpPort', 'tcPort'] as const)
      : (['httpPort', 'tcPort', 'raftPort'] as const)
    ).map(async (k) => {
      const port = m.config.server[k];
      const free = await new Promise<boolean>((res) => {
        const s = createServer();
        s.once('error', () => res(false));
        s.listen(port, m.config.server.host, () => s.close(() => res(true)));
      });
      return free ? null : { port, what: `${m.config.node.id} server.${k}` };
    }),
  );
  return (await Promise.all(checks)).filter((x): x is { port: number; what: string } => x !== null);
}

/** The leader a majority of the answering nodes name, if any. */
function agreedLeader(members: Member[]): { id: string; term: number } | null {
  const votes = new Map<string, number>();
  let term = 0;
  for (const m of members) {
    const id = m.health?.leader?.nodeId;
    if (id) {
      votes.set(id, (votes.get(id) ?? 0) + 1);
      term = Math.max(term, m.health!.term);
    }
  }
  for (const [id, n] of votes) {
    const leaderSaysSo = members.some(
      (m) => m.config.node.id === id && m.health?.role === 'leader',
    );
    if (leaderSaysSo && n > members.length / 2) return { id, term };
  }
  return null;
}

function progressLine(members: Member[]): string {
  return members
    .map((m) => {
      const id = m.config.node.id;
      if (m.exit) return `${id}: ${style('red', 'exited')}`;
      if (!m.health) return `${id}: ${style('dim', 'starting')}`;
      const role = m.health.role === 'leader' ? style('green', 'leader') : m.health.role;
      return `${id}: ${role} t${m.health.term}`;
    })
    .join('  ·  ');
}

function printSummary(
  members: Member[],
  leader: { id: string; term: number },
  dir: string,
  dbMode: boolean,
): void {
  const group = members[0]!.config.node.group;
  if (dbMode) {
    console.log(
      `${style('green', '✔')} Cluster is up (db mode: every node serves TC calls): group ${style('bold', group)}, lease epoch ${leader.term}, lease holder ${style('bold', leader.id)}\n`,
    );
  } else {
    console.log(
      `${style('green', '✔')} Cluster is up: group ${style('bold', group)}, term ${leader.term}, leader ${style('bold', leader.id)}\n`,
    );
  }
  const rows = members.map((m) => {
    const e = selfEndpoints(m.config);
    const health = m.health?.role === 'leader' && dbMode ? 'lease holder' : m.health?.role;
    const role = m.exit ? 'exited' : (health ?? 'starting');
    return [
      m.config.node.id,
      role,
      `${nodeScheme(m.httpTls)}://${formatHostPort(e.control)}`,
      formatHostPort(e.transaction),
      dbMode ? '-' : formatHostPort(e.raft),
      String(m.child?.pid ?? '-'),
    ];
  });
  console.log(renderTable(['NODE', 'ROLE', 'OPENAPI (HTTP)', 'TC (gRPC)', 'RAFT', 'PID'], rows));
  const first = selfEndpoints(members[0]!.config).control;
  const logs = members.map((m) => relative(process.cwd(), m.logFile));
  const tls = members[0]!.config.security.tls;
  const caFile = tls === null ? null : relative(process.cwd(), tls.ca) || tls.ca;
  const scheme = nodeScheme(members[0]!.httpTls);
  console.log('');
  console.log(
    `  metadata  curl ${caFile === null ? '' : `--cacert ${caFile} `}'${scheme}://${formatHostPort(first)}/metadata/v1/cluster?group=${group}'`,
  );
  console.log(`  console   ${scheme}://${formatHostPort(first)}/console`);
  console.log(`  status    npx concord cluster status --server ${formatHostPort(first)}`);
  console.log(`  logs      ${logs.join('  ')}`);
  console.log(
    `  configs   ${relative(process.cwd(), dir) || '.'}/${members.map((m) => basename(m.file)).join(', ')}`,
  );
  if (tls === null) {
    console.log(
      `  security  ${style('red', 'insecure mode')}: plaintext, no client authentication`,
    );
  } else {
    const dir = relative(process.cwd(), tls.dir) || '.';
    console.log(`  tls       CA ${dir}/ca.pem (every port: raft, TC, and HTTPS for the openapi)`);
    console.log(
      `  clients   CONCORD_TLS_DIR=${dir} (the SDK, the example: dev credential ${dir}/client-dev.pem)`,
    );
    console.log(`  operator  ${dir}/admin.pem, ${dir}/admin-key.pem (admin role)`);
  }
  console.log(`\nPress Ctrl-C to stop all nodes.`);
}

/** A node's CA file (made by ensureDevPki, or the operator's); unreadable: exit 2. */
function readCaOf(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(
      'security.tls.ca',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
    );
  }
}

function printLogTail(m: Member): void {
  try {
    const lines = readFileSync(m.logFile, 'utf8').trimEnd().split('\n').slice(-LOG_TAIL_LINES);
    if (lines.length === 0 || lines[0] === '') return;
    console.log(style('dim', `--- last lines of ${relative(process.cwd(), m.logFile)} ---`));
    for (const l of lines) console.log(style('dim', l));
  } catch {
    // no log yet
  }
}

function stopChild(m: Member): Promise<void> {
  const child = m.child;
  if (!child || m.exit || child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve();
  return new Promise((resolveStop) => {
    const killer = setTimeout(() => {
      console.log(
        style(
          'yellow',
          `node ${m.config.node.id} did not stop within ${STOP_GRACE_MS / 1000} s; killing it`,
        ),
      );
      child.kill('SIGKILL');
    }, STOP_GRACE_MS);
    child.once('exit', () => {
      clearTimeout(killer);
      resolveStop();
    });
    child.kill('SIGTERM');
  });
}

function clearLine(): void {
  if (isTty()) process.stdout.write('\r\u001b[K');
}

function timestamp(): string {
  return style('dim', new Date().toISOString().slice(11, 19));
}
