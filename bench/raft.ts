/**
 * Raft benchmark: committed writes/s and p50/p99 latency at 1, 16 and 64 concurrent
 * proposers, on a local three-node Concord cluster (test/node/kv-main.ts: LevelDB +
 * gRPC + the Raft core, a KV state machine) and, in the same run, on a local three-member
 * etcd cluster (Debian's etcd-server; installed with apt-get if missing).
 *
 *   npm run bench -- raft [--duration 10] [--warmup 2] [--concurrency 1,16,64]
 *                         [--value-bytes 100] [--only concord|etcd] [--keep]
 *
 * Same client for both: HTTP/1.1 keep-alive (node:http Agent, one socket per proposer),
 * each proposer writes a fresh key per request and waits for the answer, all requests go
 * to the leader. Concord: PUT /kv/<key> (answered once the entry is applied on the
 * leader). etcd: POST /v3/kv/put through its grpc-gateway (answered once committed and
 * applied). Both fsync every write batch (LevelDB sync batches / etcd's WAL), both on the
 * same tmp disk, both with 100 ms heartbeats and ~1 s election timeouts. One system runs
 * at a time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Command } from 'commander';
import { freePort } from '../test/support/ports.ts';
import { sleep } from '../test/support/wait.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..');
const NODE_IDS = ['n1', 'n2', 'n3'] as const;
/** Upper bound on the wait for a cluster to come up and elect a leader. */
const CLUSTER_START_TIMEOUT_MS = 60_000;
/** One request's timeout; a timed-out request counts as an error. */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long a stopped cluster gets to exit on SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

interface Options {
  durationS: number;
  warmupS: number;
  concurrency: number[];
  valueBytes: number;
  only: 'concord' | 'etcd' | null;
  keep: boolean;
  /** Extra node flags for the Concord processes (e.g. --cpu-prof). */
  nodeArgs: string[];
}

interface Result {
  system: 'concord' | 'etcd';
  concurrency: number;
  writes: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

const children = new Set<ChildProcess>();
function killAll(): void {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killAll);

const log = (msg: string) => process.stdout.write(`[bench raft] ${msg}\n`);

function httpCall(
  agent: Agent | undefined,
  port: number,
  method: string,
  path: string,
  body?: string,
  contentType = 'text/plain',
): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: agent ?? false,
        timeout: REQUEST_TIMEOUT_MS,
        headers:
          body === undefined
            ? {}
            : { 'content-type': contentType, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', fail);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', fail);
    req.end(body);
  });
}

async function until<T>(
  what: string,
  fn: () => Promise<T | null>,
  timeoutMs = CLUSTER_START_TIMEOUT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------
// The systems under test

interface System {
  name: 'concord' | 'etcd';
  /** The leader's client port. */
  leaderPort(): Promise<number>;
  /** A line of internal counters after a level (Concord: group commit per node), or null. */
  diagnostics(): Promise<string | null>;
  /** One write; resolves true on success. */
  put(agent: Agent, port: number, key: string, value: string): Promise<boolean>;
  stop(): Promise<void>;
}

/** SIGTERM, then SIGKILL whatever is still there after a grace period. */
async function stopAll(procs: ChildProcess[]): Promise<void> {
  const exits = procs
    .filter((p) => p.exitCode === null && p.signalCode === null)
    .map((p) => new Promise((r) => p.once('exit', r)));
  for (const p of procs) p.kill('SIGTERM');
  await Promise.race([Promise.all(exits), sleep(STOP_GRACE_MS)]);
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

interface ConcordNode {
  id: string;
  raft: number;
  http: number;
}

/** Starts one kv-main node; resolves once it listens, rejects if it exits first. */
function spawnConcordNode(
  n: ConcordNode,
  nodes: ConcordNode[],
  dir: string,
  nodeArgs: string[],
  procs: ChildProcess[],
): Promise<void> {
  return new Promise<void>((ok, fail) => {
    const peers = nodes
      .filter((p) => p.id !== n.id)
      .map((p) => `${p.id}=127.0.0.1:${p.raft}`)
      .join(',');
    const proc = spawn(
      process.execPath,
      [
        ...nodeArgs,
        '--import',
        'tsx',
        'test/node/kv-main.ts',
        '--id',
        n.id,
        '--raft',
        `127.0.0.1:${n.raft}`,
        '--http',
        `127.0.0.1:${n.http}`,
        '--peers',
        peers,
        '--data-dir',
        join(dir, n.id),
        '--log-level',
        'warn',
      ],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(proc);
    procs.push(proc);
    proc.once('exit', () => children.delete(proc));
    proc.stderr!.pipe(createWriteStream(join(dir, `${n.id}.log`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (line.includes('"event":"listening"')) ok();
    });
    proc.once('exit', (code) =>
      fail(new Error(`concord ${n.id} exited with ${code}; see ${dir}/${n.id}.log`)),
    );
  });
}

/** A Concord node's counters at one moment (from GET /status). */
interface Totals {
  syncedWrites: number;
  entriesWritten: number;
  syncMsTotal: number;
  rounds: number;
  roundEntries: number;
  reads: number;
  snapshots: number;
  at: number;
}

interface ConcordStatus {
  role: string;
  storage: { syncedWrites: number; entriesWritten: number; syncMsTotal: number };
  counters?: {
    rounds: number;
    entriesPersisted: number;
    readsCompleted: number;
    snapshotsTaken: number;
  };
}

function totalsOf(st: ConcordStatus): Totals {
  const c = st.counters;
  return {
    ...st.storage,
    rounds: c?.rounds ?? 0,
    roundEntries: c?.entriesPersisted ?? 0,
    reads: c?.readsCompleted ?? 0,
    snapshots: c?.snapshotsTaken ?? 0,
    at: Date.now(),
  };
}

/** One node's part of the diagnostics line: what changed since `p`. */
function describeDelta(id: string, role: string, now: Totals, p: Totals | undefined): string {
  const d = (k: keyof Totals) => now[k] - (p?.[k] ?? 0);
  const writes = d('syncedWrites');
  const rounds = d('rounds');
  const secs = p ? d('at') / 1000 : NaN;
  return (
    `${id}(${role}) ${writes} synced writes, ${(d('entriesWritten') / Math.max(1, writes)).toFixed(1)} entries/write, ${(d('syncMsTotal') / Math.max(1, writes)).toFixed(2)} ms/write, ` +
    `${Number.isNaN(secs) ? '-' : (rounds / secs).toFixed(0)} rounds/s, ${(d('roundEntries') / Math.max(1, rounds)).toFixed(2)} entries/round, ${(d('reads') / Math.max(1, rounds)).toFixed(2)} reads/round, ${d('snapshots')} snapshots`
  );
}

/** The diagnostics of a Concord cluster: each call describes the change since the last. */
function concordDiagnostics(nodes: ConcordNode[]): () => Promise<string> {
  let previous = new Map<string, Totals>();
  return async () => {
    const parts: string[] = [];
    const next = new Map<string, Totals>();
    for (const n of nodes) {
      const r = await httpCall(undefined, n.http, 'GET', '/status').catch(() => null);
      if (!r || r.status !== 200) continue;
      const st = JSON.parse(r.body) as ConcordStatus;
      const now = totalsOf(st);
      next.set(n.id, now);
      parts.push(describeDelta(n.id, st.role, now, previous.get(n.id)));
    }
    previous = next;
    return parts.join('; ');
  };
}

async function startConcord(dir: string, nodeArgs: string[]): Promise<System> {
  const procs: ChildProcess[] = [];
  const nodes = await Promise.all(
    NODE_IDS.map(async (id) => ({ id, raft: await freePort(), http: await freePort() })),
  );
  await Promise.all(nodes.map((n) => spawnConcordNode(n, nodes, dir, nodeArgs, procs)));
  const leaderPort = () =>
    until('a Concord leader', async () => {
      for (const n of nodes) {
        const r = await httpCall(undefined, n.http, 'GET', '/status').catch(() => null);
        if (r && r.status === 200 && (JSON.parse(r.body) as { role: string }).role === 'leader')
          return n.http;
      }
      return null;
    });
  return {
    name: 'concord',
    leaderPort,
    diagnostics: concordDiagnostics(nodes),
    async put(agent, port, key, value) {
      const r = await httpCall(agent, port, 'PUT', `/kv/${encodeURIComponent(key)}`, value);
      return r.status === 200;
    },
    stop: () => stopAll(procs),
  };
}

function ensureEtcd(): string {
  const have = () => spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
  let bin = have();
  if (bin) return bin;
  log(
    "etcd not found; installing Debian's etcd-server (apt-get update && apt-get install -y etcd-server)",
  );
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update'], ['install', '-y', 'etcd-server']]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env });
    if (r.status !== 0)
      throw new Error(
        `apt-get ${args.join(' ')} failed (${r.status}); run as root or install etcd-server yourself`,
      );
  }
  bin = have();
  if (!bin) throw new Error('etcd-server installed but no etcd binary on PATH');
  return bin;
}

interface EtcdMember {
  id: string;
  client: number;
  peer: number;
}

function etcdArgs(m: EtcdMember, dir: string, initialCluster: string): string[] {
  return [
    '--name',
    m.id,
    '--data-dir',
    join(dir, m.id),
    '--listen-client-urls',
    `http://127.0.0.1:${m.client}`,
    '--advertise-client-urls',
    `http://127.0.0.1:${m.client}`,
    '--listen-peer-urls',
    `http://127.0.0.1:${m.peer}`,
    '--initial-advertise-peer-urls',
    `http://127.0.0.1:${m.peer}`,
    '--initial-cluster',
    initialCluster,
    '--initial-cluster-token',
    'concord-bench',
    '--initial-cluster-state',
    'new',
    '--heartbeat-interval',
    '100',
    '--election-timeout',
    '1000',
    '--logger',
    'zap',
    '--log-level',
    'warn',
  ];
}

function etcdLeaderPort(members: EtcdMember[]): Promise<number> {
  return until('an etcd leader', async () => {
    for (const m of members) {
      const r = await httpCall(
        undefined,
        m.client,
        'POST',
        '/v3/maintenance/status',
        '{}',
        'application/json',
      ).catch(() => null);
      if (!r || r.status !== 200) continue;
      const s = JSON.parse(r.body) as { header?: { member_id?: string }; leader?: string };
      if (s.leader && s.header?.member_id === s.leader) return m.client;
    }
    return null;
  });
}

async function startEtcd(dir: string, bin: string): Promise<System> {
  const procs: ChildProcess[] = [];
  const members = await Promise.all(
    NODE_IDS.map(async (id) => ({
      id: `e${id.slice(1)}`,
      client: await freePort(),
      peer: await freePort(),
    })),
  );
  const initialCluster = members.map((m) => `${m.id}=http://127.0.0.1:${m.peer}`).join(',');
  for (const m of members) {
    const proc = spawn(bin, etcdArgs(m, dir, initialCluster), {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(proc);
    procs.push(proc);
    proc.once('exit', () => children.delete(proc));
    proc.stderr!.pipe(createWriteStream(join(dir, `${m.id}.log`)));
  }
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return {
    name: 'etcd',
    leaderPort: () => etcdLeaderPort(members),
    diagnostics: async () => null,
    async put(agent, port, key, value) {
      const r = await httpCall(
        agent,
        port,
        'POST',
        '/v3/kv/put',
        JSON.stringify({ key: b64(key), value: b64(value) }),
        'application/json',
      );
      return r.status === 200;
    },
    stop: () => stopAll(procs),
  };
}

// ---------------------------------------------------------------------------------------
// The workload

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[
    Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  ]!;
}

async function runLevel(
  sys: System,
  concurrency: number,
  opts: Options,
  round: number,
): Promise<Result> {
  const port = await sys.leaderPort();
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const value = 'x'.repeat(opts.valueBytes);
  const latencies: number[] = [];
  let errors = 0;
  let measuring = false;
  let stopped = false;
  const worker = async (w: number) => {
    for (let i = 0; !stopped; i++) {
      const key = `bench-${round}-${w}-${i}`;
      const t0 = process.hrtime.bigint();
      let ok = false;
      try {
        ok = await sys.put(agent, port, key, value);
      } catch {
        ok = false;
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (!measuring) continue;
      if (ok) latencies.push(ms);
      else errors++;
    }
  };
  const workers = Array.from({ length: concurrency }, (_, w) => worker(w));
  await sleep(opts.warmupS * 1000);
  measuring = true;
  const t0 = process.hrtime.bigint();
  await sleep(opts.durationS * 1000);
  measuring = false;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  stopped = true;
  await Promise.all(workers);
  agent.destroy();
  const sorted = Float64Array.from(latencies).sort();
  return {
    system: sys.name,
    concurrency,
    writes: latencies.length,
    errors,
    seconds,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
  };
}

async function bringUp(
  name: 'concord' | 'etcd',
  opts: Options,
  etcdBin: string | null,
  dirs: string[],
): Promise<System> {
  const dir = await mkdtemp(join(tmpdir(), `concord-bench-${name}-`));
  dirs.push(dir);
  log(`starting a three-node ${name} cluster in ${dir}`);
  const sys =
    name === 'concord' ? await startConcord(dir, opts.nodeArgs) : await startEtcd(dir, etcdBin!);
  log(`${name}: leader's client port ${await sys.leaderPort()}`);
  return sys;
}

function table(results: Result[], opts: Options): string {
  const rows: string[][] = [
    [
      'concurrency',
      'concord w/s',
      'concord p50',
      'concord p99',
      'etcd w/s',
      'etcd p50',
      'etcd p99',
      'w/s ratio (concord/etcd)',
    ],
  ];
  const f = (n: number | undefined, d = 0) =>
    n === undefined || Number.isNaN(n) ? '-' : n.toFixed(d);
  for (const c of opts.concurrency) {
    const a = results.find((r) => r.system === 'concord' && r.concurrency === c);
    const b = results.find((r) => r.system === 'etcd' && r.concurrency === c);
    rows.push([
      String(c),
      f(a?.perSecond),
      a ? `${f(a.p50Ms, 2)} ms` : '-',
      a ? `${f(a.p99Ms, 2)} ms` : '-',
      f(b?.perSecond),
      b ? `${f(b.p50Ms, 2)} ms` : '-',
      b ? `${f(b.p99Ms, 2)} ms` : '-',
      a && b ? `${(a.perSecond / b.perSecond).toFixed(2)}x` : '-',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padStart(widths[i]!)).join(' | ')} |`;
  return [
    line(rows[0]!),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

function parseOptions(args: string[]): Options {
  const program = new Command()
    .name('bench raft')
    .option('--duration <s>', 'measured seconds per concurrency level', '10')
    .option('--warmup <s>', 'warm-up seconds per level (not measured)', '2')
    .option('--concurrency <list>', 'concurrent proposers per level', '1,16,64')
    .option('--value-bytes <n>', 'bytes per value', '100')
    .option('--only <system>', 'run only concord or etcd')
    .option('--keep', 'keep data dirs and logs')
    .option(
      '--node-args <args>',
      'extra node flags for the Concord processes, space-separated (e.g. "--cpu-prof")',
    )
    .exitOverride();
  program.parse(args, { from: 'user' });
  const o = program.opts<{
    duration: string;
    warmup: string;
    concurrency: string;
    valueBytes: string;
    only?: string;
    keep?: boolean;
    nodeArgs?: string;
  }>();
  const opts: Options = {
    durationS: Number(o.duration),
    warmupS: Number(o.warmup),
    concurrency: o.concurrency.split(',').map(Number),
    valueBytes: Number(o.valueBytes),
    only: o.only === 'concord' || o.only === 'etcd' ? o.only : null,
    keep: o.keep ?? false,
    nodeArgs: (o.nodeArgs ?? '').split(' ').filter(Boolean),
  };
  if (
    !(opts.durationS > 0) ||
    !(opts.warmupS >= 0) ||
    opts.concurrency.some((c) => !Number.isInteger(c) || c < 1) ||
    !(opts.valueBytes >= 1)
  ) {
    throw new Error(
      'bad options: --duration > 0, --warmup ≥ 0, --concurrency positive integers, --value-bytes ≥ 1',
    );
  }
  if (o.only !== undefined && opts.only === null) throw new Error('--only takes concord or etcd');
  return opts;
}

/** Runs every concurrency level on every system, alternating between them. */
async function runLevels(systems: System[], opts: Options, results: Result[]): Promise<void> {
  for (const sys of systems) await sys.diagnostics(); // baseline for the per-level deltas
  for (const [round, c] of opts.concurrency.entries()) {
    for (const sys of systems) {
      log(
        `${sys.name}: ${c} concurrent proposer(s), ${opts.warmupS}s warm-up + ${opts.durationS}s measured ...`,
      );
      const r = await runLevel(sys, c, opts, round);
      log(
        `${sys.name}: c=${c}  ${r.perSecond.toFixed(0)} writes/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  errors ${r.errors}`,
      );
      const diag = await sys.diagnostics();
      if (diag) log(`${sys.name}:   disk (warm-up included): ${diag}`);
      results.push(r);
    }
  }
}

function printResults(results: Result[], opts: Options): void {
  process.stdout.write(
    `\nThree-node clusters on loopback, ${opts.valueBytes}-byte values, ${opts.durationS}s per level; writes/s and latency of acknowledged writes.\n\n`,
  );
  process.stdout.write(`${table(results, opts)}\n`);
  const errs = results.filter((r) => r.errors > 0);
  if (errs.length > 0)
    process.stdout.write(
      `\nerrors: ${errs.map((r) => `${r.system} c=${r.concurrency}: ${r.errors}`).join(', ')}\n`,
    );
}

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions(args);
  if (!existsSync(join(REPO_ROOT, 'test/node/kv-main.ts')))
    throw new Error('run from the Concord repository');

  log(
    `settings: duration ${opts.durationS}s, warm-up ${opts.warmupS}s, concurrency ${opts.concurrency.join(',')}, value ${opts.valueBytes} B, tmp ${tmpdir()}`,
  );
  const etcdBin = opts.only === 'concord' ? null : ensureEtcd();
  if (etcdBin)
    log(`etcd: ${spawnSync(etcdBin, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}`);
  // Both clusters run side by side (the idle one only heartbeats) and the levels
  // alternate between them, so a slow minute on a shared machine hits both alike.
  const names = (['concord', 'etcd'] as const).filter((n) => opts.only === null || opts.only === n);
  const dirs: string[] = [];
  const systems: System[] = [];
  const results: Result[] = [];
  try {
    for (const n of names) systems.push(await bringUp(n, opts, etcdBin, dirs));
    await runLevels(systems, opts, results);
  } finally {
    for (const sys of systems) await sys.stop();
    killAll();
    for (const d of dirs) {
      if (opts.keep) log(`data and logs kept in ${d}`);
      else await rm(d, { recursive: true, force: true });
    }
  }
  printResults(results, opts);
}
