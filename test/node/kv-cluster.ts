/**
 * Test harness: a cluster of real `kv-main` processes on loopback ports, with tmp data
 * dirs, driven over their HTTP API. Every process it starts is tracked and killed by
 * `destroy()` (and on the test process's exit, should a test forget).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../support/ports.ts';
import { createTestPki, type TestPki } from '../support/pki.ts';
import { sleep } from '../support/wait.ts';

export { freePort, sleep };

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const KV_MAIN = 'test/node/kv-main.ts';

/** A process must print its listening line within this. */
const SPAWN_TIMEOUT_MS = 30_000;
/** One HTTP call to a node. */
const REQUEST_TIMEOUT_MS = 5_000;

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

const DUMP_RETRY_MS = 10_000;

export async function eventually<T>(
  what: string,
  fn: () => Promise<T>,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}: ${(last as Error)?.message ?? last}`,
      );
    await sleep(everyMs);
  }
}

export interface NodeStatus {
  id: string;
  clusterId: string;
  nodeUid: string;
  role: string;
  term: number;
  leader: string | null;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  snapshotIndex: number;
  durableLastIndex: number;
  snapshotsRestored: number;
  transport: { peers: Record<string, { connected: boolean; queued: number; dropped: number }> };
  conf: { voters: string[]; learners: string[]; context: Record<string, string> };
  memberContext: string;
  kvKeys: number;
}

export interface ClusterOptions {
  ids?: string[];
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  snapshotInterval?: number;
  /** Mutual TLS on the raft port (default true): one CA for the cluster, a cert per node. */
  tls?: boolean;
}

interface NodeSlot {
  id: string;
  raftPort: number;
  httpPort: number;
  dataDir: string;
  logPath: string;
  proc: ChildProcess | null;
  /** Resolves when the current process exits. */
  exited: Promise<void> | null;
  starts: number;
}

export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}: ${JSON.stringify(body).slice(0, 300)}`);
  }
}

export class KvCluster {
  readonly ids: string[];
  root = '';
  private readonly slots = new Map<string, NodeSlot>();
  private readonly opts: Required<ClusterOptions>;
  private leaderHint: string | null = null;
  /** The cluster's CA and node certificates (under `<root>/pki`), once started with TLS. */
  pki: TestPki | null = null;

  constructor(options: ClusterOptions = {}) {
    this.opts = {
      ids: options.ids ?? ['n1', 'n2', 'n3'],
      tickMs: options.tickMs ?? 25,
      electionTicks: options.electionTicks ?? 20,
      heartbeatTicks: options.heartbeatTicks ?? 2,
      snapshotInterval: options.snapshotInterval ?? 10_000,
      tls: options.tls ?? true,
    };
    this.ids = this.opts.ids;
  }

  /** Allocates ports and dirs and starts every node. */
  async start(): Promise<void> {
    this.root = await mkdtemp(join(tmpdir(), 'concord-kv-'));
    if (this.opts.tls) this.pki = createTestPki(join(this.root, 'pki'));
    for (const id of this.ids) {
      this.slots.set(id, {
        id,
        raftPort: await freePort(),
        httpPort: await freePort(),
        dataDir: join(this.root, id),
        logPath: join(this.root, `${id}.log`),
        proc: null,
        exited: null,
        starts: 0,
      });
    }
    await Promise.all(this.ids.map((id) => this.spawn(id)));
  }

  private slot(id: string): NodeSlot {
    const s = this.slots.get(id);
    if (!s) throw new Error(`no node ${id}`);
    return s;
  }

  httpAddress(id: string): string {
    return `127.0.0.1:${this.slot(id).httpPort}`;
  }

  isRunning(id: string): boolean {
    return this.slot(id).proc !== null;
  }

  running(): string[] {
    return this.ids.filter((id) => this.isRunning(id));
  }

  /** The command line of a node's kv-main process. */
  private nodeArgs(id: string, options: { join?: boolean }): string[] {
    const s = this.slot(id);
    const peers = this.ids
      .filter((p) => p !== id)
      .map((p) => `${p}=127.0.0.1:${this.slot(p).raftPort}`)
      .join(',');
    return [
      '--import',
      'tsx',
      KV_MAIN,
      '--id',
      id,
      '--raft',
      `127.0.0.1:${s.raftPort}`,
      '--http',
      `127.0.0.1:${s.httpPort}`,
      '--peers',
      peers,
      '--data-dir',
      s.dataDir,
      '--tick-ms',
      String(this.opts.tickMs),
      '--election-ticks',
      String(this.opts.electionTicks),
      '--heartbeat-ticks',
      String(this.opts.heartbeatTicks),
      '--snapshot-interval',
      String(this.opts.snapshotInterval),
      ...(options.join ? ['--join'] : []),
      ...this.tlsArgs(id),
    ];
  }

  /** Starts (or restarts) a node's process and waits for its listening line. */
  async spawn(id: string, options: { join?: boolean } = {}): Promise<void> {
    const s = this.slot(id);
    if (s.proc) throw new Error(`${id} is already running`);
    const args = this.nodeArgs(id, options);
    const proc = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CONCORD_LOG_LEVEL: process.env.KV_LOG_LEVEL ?? 'info' },
    });
    live.add(proc);
    s.proc = proc;
    s.starts++;
    const log = createWriteStream(s.logPath, { flags: 'a' });
    log.write(`--- start #${s.starts} ${args.join(' ')}\n`);
    proc.stderr!.pipe(log);
    s.exited = new Promise((r) =>
      proc.once('exit', (code, signal) => {
        live.delete(proc);
        if (s.proc === proc) s.proc = null;
        log.write(`--- exit code=${code} signal=${signal}\n`);
        r();
      }),
    );
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(
        () =>
          fail(
            new Error(
              `${id} printed no listening line within ${SPAWN_TIMEOUT_MS} ms; see ${s.logPath}`,
            ),
          ),
        SPAWN_TIMEOUT_MS,
      );
      const lines = createInterface({ input: proc.stdout! });
      lines.on('line', (line) => {
        if (line.includes('"event":"listening"')) {
          clearTimeout(timer);
          ok();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`${id} exited with ${code} before listening; see ${s.logPath}`));
      });
    });
  }

  private tlsArgs(id: string): string[] {
    if (!this.pki) return [];
    const f = this.pki.node(id);
    return ['--tls-ca', f.ca, '--tls-cert', f.cert, '--tls-key', f.key];
  }

  /** A node's data directory. */
  dataDir(id: string): string {
    return this.slot(id).dataDir;
  }

  raftPort(id: string): number {
    return this.slot(id).raftPort;
  }

  /** Kills a node's process (SIGKILL by default) and waits for it to be gone. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const s = this.slot(id);
    if (!s.proc) return;
    s.proc.kill(signal);
    await s.exited;
    if (this.leaderHint === id) this.leaderHint = null;
  }

  async wipe(id: string): Promise<void> {
    const s = this.slot(id);
    if (s.proc) throw new Error(`wipe ${id} while running`);
    await rm(s.dataDir, { recursive: true, force: true });
  }

  async logOf(id: string): Promise<string> {
    return readFile(this.slot(id).logPath, 'utf8').catch(() => '');
  }

  async destroy(): Promise<void> {
    await Promise.all(this.ids.map((id) => this.kill(id)));
    if (this.root) await rm(this.root, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- HTTP

  async request(
    id: string,
    method: string,
    path: string,
    body?: string | object,
  ): Promise<unknown> {
    const res = await fetch(`http://${this.httpAddress(id)}${path}`, {
      method,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep text
    }
    if (!res.ok) throw new HttpStatusError(res.status, parsed);
    return parsed;
  }

  status(id: string): Promise<NodeStatus> {
    return this.request(id, 'GET', '/status') as Promise<NodeStatus>;
  }

  /** Waits until a running node is leader and every other running member agrees; returns its id. */
  async waitForLeader(timeoutMs = 20_000): Promise<string> {
    return eventually(
      'a leader',
      async () => {
        const statuses = await Promise.all(
          this.running().map((id) => this.status(id).catch(() => null)),
        );
        const leaders = statuses.filter((s): s is NodeStatus => s?.role === 'leader');
        const top = leaders.sort((a, b) => b.term - a.term)[0];
        if (!top) throw new Error('no leader yet');
        const agreeing = statuses.filter(
          (s) => s && s.term === top.term && s.leader === top.id,
        ).length;
        if (agreeing * 2 <= top.conf.voters.length)
          throw new Error(`leader ${top.id} not yet acknowledged by a quorum`);
        this.leaderHint = top.id;
        return top.id;
      },
      timeoutMs,
    );
  }

  /** PUT through whichever node leads, rediscovering the leader on NOT_LEADER or a dead node. */
  async put(key: string, value: string, timeoutMs = 20_000): Promise<number> {
    return eventually(
      `put ${key}`,
      async () => {
        const leader = this.leaderHint ?? (await this.waitForLeader());
        try {
          const r = (await this.request(
            leader,
            'PUT',
            `/kv/${encodeURIComponent(key)}`,
            value,
          )) as { index: number };
          return r.index;
        } catch (err) {
          this.leaderHint = null;
          throw err;
        }
      },
      timeoutMs,
      50,
    );
  }

  /** A single PUT attempt against the current leader hint, for load generators. */
  async tryPut(key: string, value: string): Promise<boolean> {
    const leader = this.leaderHint;
    if (leader === null || !this.isRunning(leader)) {
      this.leaderHint = null;
      try {
        await this.waitForLeader(2_000);
      } catch {
        // no leader yet
      }
      return false;
    }
    try {
      await this.request(leader, 'PUT', `/kv/${encodeURIComponent(key)}`, value);
      return true;
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 421) {
        const hint = (err.body as { error?: { leaderId?: string | null } }).error?.leaderId ?? null;
        this.leaderHint = hint !== null && this.isRunning(hint) ? hint : null;
      } else {
        this.leaderHint = null;
      }
      return false;
    }
  }

  /**
   * All keys with a prefix on one node: linearizable (through the leader) or that node's applied
   * state.
   */
  /**
   * Reads every key under a prefix. A linearizable read that the node drops (503: a ReadIndex
   * dropped while the leader is busy or changing) changed nothing and is asked again, for up to
   * DUMP_RETRY_MS; any other refusal is the answer.
   */
  async dump(id: string, prefix: string, stale = false): Promise<Record<string, string>> {
    const path = `/kv?prefix=${encodeURIComponent(prefix)}${stale ? '&stale=1' : ''}`;
    const deadline = Date.now() + DUMP_RETRY_MS;
    for (;;) {
      try {
        const r = (await this.request(id, 'GET', path)) as { entries: Record<string, string> };
        return r.entries;
      } catch (err) {
        const dropped = err instanceof HttpStatusError && err.status === 503;
        if (!dropped || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  }

  /**
   * Proposes a membership change through the leader, retrying until the leader's
   * membership shows it (a retry after a lost answer finds it already done).
   */
  async changeMembership(body: {
    type: 'addVoter' | 'addLearner' | 'removeNode';
    nodeId: string;
    context?: string;
  }): Promise<void> {
    const done = (conf: NodeStatus['conf']) =>
      body.type === 'removeNode'
        ? !conf.voters.includes(body.nodeId) && !conf.learners.includes(body.nodeId)
        : (body.type === 'addVoter' ? conf.voters : conf.learners).includes(body.nodeId);
    await eventually(
      `membership ${body.type} ${body.nodeId}`,
      async () => {
        const leader = await this.waitForLeader();
        if (done((await this.status(leader)).conf)) return;
        await this.request(leader, 'POST', '/membership', body);
      },
      20_000,
      200,
    );
  }

  /** Waits until every running node's applied state under a prefix is the same map; returns it. */
  async converged(prefix: string, timeoutMs = 20_000): Promise<Record<string, string>> {
    return eventually(
      `the nodes to converge on ${prefix}*`,
      async () => {
        const dumps = await Promise.all(this.running().map((id) => this.dump(id, prefix, true)));
        const first = JSON.stringify(dumps[0]);
        for (const [i, d] of dumps.entries()) {
          if (JSON.stringify(d) !== first)
            throw new Error(
              `${this.running()[i]} differs (${Object.keys(d).length} vs ${Object.keys(dumps[0]!).length} keys)`,
            );
        }
        return dumps[0]!;
      },
      timeoutMs,
    );
  }
}

/**
 * Writers that keep putting unique keys through the leader until stopped. Only writes the
 * cluster acknowledged (HTTP 200) are recorded; a failed one may or may not have committed.
 */
export class Load {
  readonly acked = new Map<string, string>();
  attempts = 0;
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(cluster: KvCluster, prefix: string, writers: number) {
    const runs: Promise<void>[] = [];
    for (let w = 0; w < writers; w++) {
      runs.push(
        (async () => {
          for (let i = 0; !this.stopped; i++) {
            const key = `${prefix}-${w}-${i}`;
            const value = `v-${w}-${i}`;
            this.attempts++;
            if (await cluster.tryPut(key, value)) this.acked.set(key, value);
            else await sleep(20);
          }
        })(),
      );
    }
    this.done = Promise.all(runs).then(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}
