/**
 * A real Concord cluster for a chaos run: three node processes started through the CLI
 * (`node --import tsx src/cli/main.ts start --config <generated yaml>`), each on free
 * loopback ports with a tmp data dir and a short Raft tick, and a fault proxy in front of
 * each of their ports.
 *
 * ## Addresses
 *
 * A node BINDS 127.0.0.1:{http,tc,raft} and ADVERTISES PROXY_HOST (127.0.0.2) on the same
 * ports (`server.advertiseHost`), where its three proxies listen. So the membership every
 * replica holds names the proxies, peers and clients reach the node only through them, and
 * the fault table decides what gets through. The harness itself talks to the nodes
 * directly on 127.0.0.1 (health polls, membership changes), so it sees the truth during a
 * partition. Both addresses are loopback (Linux routes all of 127.0.0.0/8 to `lo`).
 *
 * Only the Raft port's proxy identifies sources (per-link partitions); the TC and HTTP
 * proxies pass through unless a rule names `* → node` (isolating a node from everyone,
 * clients included, as a real partition would).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { stringify } from 'yaml';
import {
  changeCluster,
  fetchHealth,
  type HealthAnswer,
  type MemberSpec,
} from '../src/client/http-metadata.ts';
import {
  CHAOS_AUTH_TOKEN,
  HEALTH_POLL_TIMEOUT_MS,
  MEMBERSHIP_CHANGE_TIMEOUT_MS,
  NODE_HOST,
  NODE_START_TIMEOUT_MS,
  PROXY_HOST,
} from './limits.ts';
import type { ManagedProcess, ProcessManager } from './processes.ts';
import { tsxImport } from './processes.ts';
import { FaultProxy, FaultTable, raftSenderSniffer } from './proxy.ts';

export interface ClusterOptions {
  runDir: string;
  repoRoot: string;
  size: number;
  tickMs: number;
  electionTicks: number;
  snapshotEveryEntries: number;
  /** Node log level (pino). */
  nodeLogLevel: string;
  pm: ProcessManager;
  logger: Logger;
}

export interface NodePorts {
  http: number;
  tc: number;
  raft: number;
}

export interface NodeSlot {
  id: string;
  ports: NodePorts;
  dataDir: string;
  /** The config the next start uses (bootstrap, or join after a re-add). */
  configFile: string;
  proc: ManagedProcess | null;
  /** Starts so far (the log file of each start is `<id>.<incarnation>.log`). */
  incarnation: number;
  /** In the Raft membership, as far as the harness changed it. */
  member: boolean;
}

export interface LeaderInfo {
  id: string;
  term: number;
}

/** Reserves `n` distinct ports free on both NODE_HOST and PROXY_HOST. */
export async function reservePorts(n: number): Promise<number[]> {
  const held: Array<{ close: (cb: () => void) => void }> = [];
  const out: number[] = [];
  const listen = (port: number, host: string) =>
    new Promise<{ port: number; server: ReturnType<typeof createServer> } | null>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(null));
      s.listen(port, host, () =>
        resolve({ port: (s.address() as { port: number }).port, server: s }),
      );
    });
  try {
    for (let attempts = 0; out.length < n; attempts++) {
      if (attempts > n * 20)
        throw new Error(`could not find ${n} ports free on both ${NODE_HOST} and ${PROXY_HOST}`);
      const a = await listen(0, NODE_HOST);
      if (!a) continue;
      held.push(a.server);
      const b = await listen(a.port, PROXY_HOST);
      if (!b) continue;
      held.push(b.server);
      out.push(a.port);
    }
    return out;
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

const hp = (host: string, port: number) => ({ host, port });

export class ChaosCluster {
  readonly table = new FaultTable();
  readonly nodes: NodeSlot[];
  private readonly proxies: FaultProxy[] = [];
  private readonly log: Logger;

  private constructor(
    private readonly opts: ClusterOptions,
    nodes: NodeSlot[],
  ) {
    this.nodes = nodes;
    this.log = opts.logger.child({ component: 'cluster' });
  }

  /** Reserves ports, writes the bootstrap configs and starts the proxies (not the nodes). */
  static async create(opts: ClusterOptions): Promise<ChaosCluster> {
    const ports = await reservePorts(opts.size * 3);
    const nodes: NodeSlot[] = [];
    for (let i = 0; i < opts.size; i++) {
      const id = `node${i + 1}`;
      nodes.push({
        id,
        ports: { http: ports[3 * i]!, tc: ports[3 * i + 1]!, raft: ports[3 * i + 2]! },
        dataDir: join(opts.runDir, 'data', id),
        configFile: join(opts.runDir, 'config', `${id}.yaml`),
        proc: null,
        incarnation: 0,
        member: true,
      });
    }
    const c = new ChaosCluster(opts, nodes);
    mkdirSync(join(opts.runDir, 'config'), { recursive: true });
    for (const n of nodes) c.writeConfig(n, false);
    try {
      await c.startProxies();
    } catch (err) {
      await c.closeProxies();
      throw err;
    }
    return c;
  }

  node(id: string): NodeSlot {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  ids(): string[] {
    return this.nodes.map((n) => n.id);
  }

  /** The HTTP control addresses clients are given (through the proxies). */
  clientSeeds(): string[] {
    return this.nodes.map((n) => `${PROXY_HOST}:${n.ports.http}`);
  }

  /** The TC addresses through the proxies. */
  tcAddresses(): string[] {
    return this.nodes.map((n) => `${PROXY_HOST}:${n.ports.tc}`);
  }

  /** Direct (unproxied) control endpoint of a node: the harness's own view. */
  directControl(id: string): { host: string; port: number } {
    return hp(NODE_HOST, this.node(id).ports.http);
  }

  /** Direct TC endpoint of a node. */
  directTc(id: string): { host: string; port: number } {
    return hp(NODE_HOST, this.node(id).ports.tc);
  }

  // ---------------------------------------------------------------- configs

  private peerEntry(n: NodeSlot) {
    return {
      nodeId: n.id,
      host: PROXY_HOST,
      raftPort: n.ports.raft,
      tcPort: n.ports.tc,
      httpPort: n.ports.http,
    };
  }

  /**
   * Writes the node's config: the bootstrap one, or a `join: true` one for a re-add with a wiped
   * data dir.
   */
  writeConfig(n: NodeSlot, joining: boolean): void {
    const peers = joining
      ? this.nodes.filter((x) => x.id !== n.id && x.member).map((x) => this.peerEntry(x))
      : this.nodes.map((x) => this.peerEntry(x));
    const config = {
      node: { id: n.id, group: 'default' },
      server: {
        host: NODE_HOST,
        advertiseHost: PROXY_HOST,
        httpPort: n.ports.http,
        tcPort: n.ports.tc,
        raftPort: n.ports.raft,
      },
      raft: {
        dataDir: n.dataDir,
        tickMs: this.opts.tickMs,
        electionTicks: this.opts.electionTicks,
        heartbeatTicks: 1,
        snapshotEveryEntries: this.opts.snapshotEveryEntries,
        ...(joining ? { join: true } : {}),
        peers,
      },
      store: { mode: 'raft' },
      http: { authToken: CHAOS_AUTH_TOKEN },
      limits: {
        changeTimeoutMs: MEMBERSHIP_CHANGE_TIMEOUT_MS,
        learnerCatchUpTimeoutMs: MEMBERSHIP_CHANGE_TIMEOUT_MS / 2,
        transferTimeoutMs: 10_000,
      },
      log: { level: this.opts.nodeLogLevel },
    };
    const file = join(this.opts.runDir, 'config', joining ? `${n.id}-join.yaml` : `${n.id}.yaml`);
    writeFileSync(
      file,
      `# Generated by the chaos harness (chaos/cluster.ts).\n${stringify(config)}`,
    );
    n.configFile = file;
  }

  // ---------------------------------------------------------------- proxies

  private async startProxies(): Promise<void> {
    const sniff = raftSenderSniffer(() => this.ids());
    for (const n of this.nodes) {
      for (const kind of ['raft', 'tc', 'http'] as const) {
        const port = n.ports[kind];
        const p = new FaultProxy({
          name: `${n.id}.${kind}`,
          dst: n.id,
          listen: hp(PROXY_HOST, port),
          target: hp(NODE_HOST, port),
          table: this.table,
          logger: this.log,
          ...(kind === 'raft' ? { identify: sniff } : {}),
        });
        await p.listen();
        this.proxies.push(p);
      }
    }
  }

  proxyStats(): Record<string, FaultProxy['stats']> {
    return Object.fromEntries(this.proxies.map((p) => [p.name, { ...p.stats }]));
  }

  private async closeProxies(): Promise<void> {
    await Promise.all(this.proxies.map((p) => p.close().catch(() => undefined)));
    this.proxies.length = 0;
  }

  // ---------------------------------------------------------------- processes

  /** Starts a node process and waits until it answers /health as that process. */
  async start(id: string): Promise<ManagedProcess> {
    const n = this.node(id);
    if (n.proc?.alive) throw new Error(`${id} is already running (pid ${n.proc.pid})`);
    n.incarnation++;
    const proc = this.opts.pm.spawn({
      name: `${id}.${n.incarnation}`,
      args: [
        '--import',
        tsxImport(),
        join(this.opts.repoRoot, 'src/cli/main.ts'),
        'start',
        '--config',
        n.configFile,
      ],
      logFile: join(this.opts.runDir, 'logs', `${id}.${n.incarnation}.log`),
      cwd: this.opts.repoRoot,
      env: { ...process.env, CONCORD_LOG_LEVEL: this.opts.nodeLogLevel, NO_COLOR: '1' },
    });
    n.proc = proc;
    await this.waitForOwnHealth(n, proc);
    return proc;
  }

  private async waitForOwnHealth(n: NodeSlot, proc: ManagedProcess): Promise<HealthAnswer> {
    const deadline = Date.now() + NODE_START_TIMEOUT_MS;
    for (;;) {
      if (!proc.alive)
        throw new Error(
          `${n.id} exited while starting (${JSON.stringify(proc.exit)}); see ${proc.spec.logFile}`,
        );
      const h = await this.health(n.id);
      if (h && h.pid === proc.pid) return h;
      if (Date.now() > deadline)
        throw new Error(
          `${n.id} did not answer /health within ${NODE_START_TIMEOUT_MS} ms; see ${proc.spec.logFile}`,
        );
      await sleep(100);
    }
  }

  async startAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.start(n.id)));
  }

  /** SIGKILL (the node's whole process group); resolves when it is reaped. */
  async kill(id: string): Promise<void> {
    const p = this.node(id).proc;
    if (p?.alive) await p.kill();
  }

  pause(id: string): void {
    this.node(id).proc?.pause();
  }

  resume(id: string): void {
    this.node(id).proc?.resume();
  }

  isRunning(id: string): boolean {
    return this.node(id).proc?.alive === true;
  }

  // ---------------------------------------------------------------- views

  /** The node's own /health, directly; null if it does not answer in time. */
  async health(id: string): Promise<HealthAnswer | null> {
    try {
      return await fetchHealth(this.directControl(id), { timeoutMs: HEALTH_POLL_TIMEOUT_MS });
    } catch {
      return null;
    }
  }

  async healthAll(): Promise<Map<string, HealthAnswer | null>> {
    const answers = await Promise.all(
      this.nodes.map(async (n) => [n.id, await this.health(n.id)] as const),
    );
    return new Map(answers);
  }

  /**
   * The leader a majority of the voters (as the harness changed them) agree on — the node
   * says it leads, and enough members name it — or null.
   */
  async leader(): Promise<LeaderInfo | null> {
    return agreedLeader(
      await this.healthAll(),
      this.nodes.filter((n) => n.member).map((n) => n.id),
    );
  }

  async waitForLeader(timeoutMs: number, what = 'a leader'): Promise<LeaderInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = await this.leader();
      if (l) return l;
      if (Date.now() > deadline)
        throw new Error(`no agreed leader within ${timeoutMs} ms (${what})`);
      await sleep(100);
    }
  }

  // ---------------------------------------------------------------- membership

  private async changeMembers(members: MemberSpec[], why: string): Promise<void> {
    const deadline = Date.now() + MEMBERSHIP_CHANGE_TIMEOUT_MS;
    let lastErr: unknown = null;
    while (Date.now() < deadline) {
      const l = await this.leader();
      if (!l) {
        await sleep(200);
        continue;
      }
      try {
        const r = await changeCluster(
          this.directControl(l.id),
          { members },
          { token: CHAOS_AUTH_TOKEN, timeoutMs: Math.max(1_000, deadline - Date.now()) },
        );
        this.log.info({ why, steps: r.steps }, 'membership changed');
        return;
      } catch (err) {
        lastErr = err;
        this.log.info(
          { why, err: (err as Error).message },
          'membership change attempt failed; retrying',
        );
        await sleep(500);
      }
    }
    throw new Error(
      `membership change (${why}) did not succeed within ${MEMBERSHIP_CHANGE_TIMEOUT_MS} ms: ${(lastErr as Error)?.message ?? 'no leader'}`,
    );
  }

  /** Removes `id` from the membership (through the leader's changeCluster, with the token). */
  async removeMember(id: string): Promise<void> {
    const keep = this.nodes.filter((n) => n.member && n.id !== id).map((n) => ({ nodeId: n.id }));
    await this.changeMembers(keep, `remove ${id}`);
    this.node(id).member = false;
  }

  /**
   * Brings a removed node back as operations.md says: stop it, wipe its data dir, start it
   * with `raft.join: true`, then add it (learner, promoted to voter once caught up).
   */
  async readdMember(id: string): Promise<void> {
    const n = this.node(id);
    await this.kill(id);
    rmSync(n.dataDir, { recursive: true, force: true });
    this.writeConfig(n, true);
    await this.start(id);
    const members: MemberSpec[] = this.nodes
      .filter((x) => x.member || x.id === id)
      .map((x) =>
        x.id === id
          ? {
              nodeId: x.id,
              raft: `${PROXY_HOST}:${x.ports.raft}`,
              transaction: `${PROXY_HOST}:${x.ports.tc}`,
              control: `${PROXY_HOST}:${x.ports.http}`,
            }
          : { nodeId: x.id },
      );
    await this.changeMembers(members, `re-add ${id}`);
    n.member = true;
  }

  async close(): Promise<void> {
    this.table.heal();
    await Promise.all(this.nodes.map((n) => n.proc?.stop()));
    await this.closeProxies();
  }
}

/** The leader a majority of `voters` name, that also says it leads; null if none. Pure. */
export function agreedLeader(
  health: ReadonlyMap<string, HealthAnswer | null>,
  voters: readonly string[],
): LeaderInfo | null {
  const votes = new Map<string, number>();
  for (const v of voters) {
    const id = health.get(v)?.leader?.nodeId;
    if (id) votes.set(id, (votes.get(id) ?? 0) + 1);
  }
  for (const [id, count] of votes) {
    const h = health.get(id);
    if (h?.role === 'leader' && count > voters.length / 2) return { id, term: h.term };
  }
  return null;
}
