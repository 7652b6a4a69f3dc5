/**
 * Helpers of the TC integration tests: a three-node cluster of REAL node processes
 * (`node --import tsx src/cli/main.ts start --config <tmp yaml>`) on free loopback ports
 * with tmp data dirs, and a test RM that records every phase-two call it receives.
 */
import {
  clientTlsFromEnv,
  tcChannelCredentials,
  tcTlsChannelOptions,
  type ClientTls,
} from '../../src/client/tls.ts';
import type { Xid } from '../../src/shared/ids.ts';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  TcClient,
  type BranchStatus,
  type PhaseTwoRequest,
  type RmChannelSet,
  type TcClientOptions,
} from '../../src/client/tc-client.ts';

import { freePort } from '../support/ports.ts';
import { waitFor } from '../support/wait.ts';
import {
  allocateNodes,
  raftNodeConfig,
  writeConfig,
  type NodeConfigOptions,
} from '../support/cluster.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

export { freePort, waitFor };

export const REPO_ROOT = resolve(import.meta.dirname, '../..');

export interface TestNode {
  id: string;
  http: number;
  tc: number;
  raft: number;
  file: string;
  logFile: string;
  proc: ChildProcess | null;
}

export interface ClusterOptions {
  /** Raft tick, ms (short: the suite's wall time). */
  tickMs?: number;
  electionTicks?: number;
  logLevel?: string;
  /** The nodes' `phaseTwo` config section. */
  phaseTwo?: NodeConfigOptions['phaseTwo'];
  /** The nodes' `limits` section. */
  limits?: Record<string, number>;
  /** The nodes' `security.quotas` section. */
  quotas?: object;
  /** The nodes' http.viewerToken (the console's read-only role). */
  viewerToken?: string;
}

export class TestCluster {
  readonly root: string;
  readonly nodes: TestNode[] = [];
  private readonly opts: Required<
    Omit<ClusterOptions, 'limits' | 'phaseTwo' | 'quotas' | 'viewerToken'>
  > &
    Pick<ClusterOptions, 'limits' | 'phaseTwo' | 'quotas' | 'viewerToken'>;

  private constructor(name: string, opts: ClusterOptions) {
    this.root = mkdtempSync(join(tmpdir(), `concord-tc-${name}-`));
    this.opts = {
      tickMs: opts.tickMs ?? 30,
      electionTicks: opts.electionTicks ?? 10,
      logLevel: opts.logLevel ?? 'info',
      phaseTwo: opts.phaseTwo,
      ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
      ...(opts.quotas !== undefined ? { quotas: opts.quotas } : {}),
      ...(opts.viewerToken !== undefined ? { viewerToken: opts.viewerToken } : {}),
    };
  }

  /** Starts three nodes and waits until they agree on a leader. */
  static async start(name: string, opts: ClusterOptions = {}): Promise<TestCluster> {
    const c = new TestCluster(name, opts);
    for (const ports of await allocateNodes(3)) {
      c.nodes.push({
        ...ports,
        file: join(c.root, `${ports.id}.yaml`),
        logFile: join(c.root, `${ports.id}.log`),
        proc: null,
      });
    }
    for (const n of c.nodes) c.writeConfig(n);
    for (const n of c.nodes) c.spawnNode(n);
    await c.leader(60_000);
    return c;
  }

  seeds(): string[] {
    return this.nodes.map((n) => `127.0.0.1:${n.http}`);
  }

  byId(id: string): TestNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  byTcPort(port: number): TestNode | undefined {
    return this.nodes.find((n) => n.tc === port);
  }

  live(): TestNode[] {
    return this.nodes.filter((n) => n.proc !== null);
  }

  async metadata(n: TestNode): Promise<{
    term: number;
    leaderId: string | null;
    lastIndex: number;
    appliedIndex: number;
    answeredBy: string;
  }> {
    const res = await fetchNode(`${nodeBase(n.http)}/metadata/v1/cluster?group=default`, {
      signal: AbortSignal.timeout(2_000),
    });
    if (res.status !== 200) throw new Error(`metadata of ${n.id}: HTTP ${res.status}`);
    return (await res.json()) as never;
  }

  /** The leader every live node agrees on. */
  async leader(timeoutMs = 20_000): Promise<TestNode> {
    return waitFor(
      'a leader every live node agrees on',
      async () => {
        const live = this.live();
        const mds = await Promise.all(live.map((n) => this.metadata(n)));
        const ids = new Set(mds.map((m) => m.leaderId));
        const id = mds[0]?.leaderId ?? null;
        if (ids.size !== 1 || id === null || !live.some((n) => n.id === id)) return undefined;
        return this.byId(id);
      },
      timeoutMs,
      50,
    );
  }

  followers(leader: TestNode): TestNode[] {
    return this.live().filter((n) => n.id !== leader.id);
  }

  /** Kills a node's process (SIGKILL by default) and waits until it is gone. */
  async kill(n: TestNode, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = n.proc;
    if (!proc) return;
    n.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    await Promise.race([exited, sleep(10_000)]);
  }

  /** Starts a killed node again on its data dir. */
  restart(n: TestNode): void {
    if (n.proc) return;
    this.spawnNode(n);
  }

  tail(n: TestNode, lines = 40): string {
    try {
      return readFileSync(n.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n, 'SIGKILL')));
    rmSync(this.root, { recursive: true, force: true });
  }

  client(opts: Partial<TcClientOptions> = {}): TcClient {
    return new TcClient({ seeds: this.seeds(), ...opts });
  }

  private writeConfig(n: TestNode): void {
    const config = raftNodeConfig(n, {
      peers: this.nodes,
      dataRoot: join(this.root, 'data'),
      tickMs: this.opts.tickMs,
      electionTicks: this.opts.electionTicks,
      authToken: 'tc-test-token-0123456789',
      logLevel: this.opts.logLevel,
      ...(this.opts.phaseTwo !== undefined ? { phaseTwo: this.opts.phaseTwo } : {}),
      ...(this.opts.limits !== undefined ? { limits: this.opts.limits } : {}),
      ...(this.opts.quotas !== undefined ? { quotas: this.opts.quotas } : {}),
      ...(this.opts.viewerToken !== undefined ? { viewerToken: this.opts.viewerToken } : {}),
    });
    mkdirSync(join(this.root, 'data'), { recursive: true });
    writeConfig(n.file, config);
  }

  private spawnNode(n: TestNode): void {
    const fd = openSync(n.logFile, 'a');
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', resolve(REPO_ROOT, 'src/cli/main.ts'), 'start', '--config', n.file],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, CONCORD_LOG_LEVEL: this.opts.logLevel, NO_COLOR: '1' },
        stdio: ['ignore', fd, fd],
      },
    );
    closeSync(fd);
    n.proc = proc;
    proc.once('exit', () => {
      if (n.proc === proc) n.proc = null;
    });
  }
}

/** What the test RM should answer a phase-two call with, or a promise it resolves later. */
export type RmBehaviour = (
  call: PhaseTwoRequest,
  attempt: number,
) => BranchStatus | Promise<BranchStatus>;

export interface RecordedCall extends PhaseTwoRequest {
  at: number;
  /** The node the channel was registered with when the call arrived. */
  node: string | null;
}

/**
 * A test RM: registers resources over the RM channel and records every phase-two call.
 * By default it answers success; `behave` overrides per call (counts attempts per branch).
 */
export class TestRm {
  readonly calls: RecordedCall[] = [];
  readonly clientId: string;
  channel: RmChannelSet | null = null;
  behave: RmBehaviour | null = null;
  private readonly attempts = new Map<string, number>();

  constructor(
    private readonly client: TcClient,
    readonly resourceIds: string[],
    opts: { clientId?: string; applicationId?: string } = {},
  ) {
    this.clientId = opts.clientId ?? `test-rm-${Math.random().toString(36).slice(2, 10)}`;
    this.applicationId = opts.applicationId ?? 'test-app';
  }

  readonly applicationId: string;

  async connect(timeoutMs = 15_000): Promise<void> {
    const channel = this.client.openRmChannel({
      applicationId: this.applicationId,
      transactionServiceGroup: 'default',
      clientId: this.clientId,
      resourceIds: () => this.resourceIds,
      handler: async (call) => {
        const key = `${call.kind}:${call.branchId}`;
        const attempt = (this.attempts.get(key) ?? 0) + 1;
        this.attempts.set(key, attempt);
        this.calls.push({ ...call, at: Date.now(), node: this.channel?.registeredWith ?? null });
        if (this.behave) return this.behave(call, attempt);
        return call.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked';
      },
    });
    this.channel = channel;
    await channel.ready(timeoutMs);
  }

  async disconnect(): Promise<void> {
    await this.channel?.close();
    this.channel = null;
  }

  callsFor(xid: string): RecordedCall[] {
    return this.calls.filter((c) => c.xid === xid);
  }
}

/** Polls the status until `accept` says yes. */
export async function waitForStatus(
  client: TcClient,
  xid: Xid,
  accept: (status: string) => boolean,
  timeoutMs = 20_000,
): Promise<string> {
  return waitFor(
    `${xid} to reach the expected status`,
    async () => {
      const s = await client
        .getStatus(xid)
        .catch((err: Error) =>
          err.name === 'UnknownXidError' ? 'UnknownXid' : Promise.reject(err),
        );
      return accept(s) ? s : undefined;
    },
    timeoutMs,
    50,
  );
}

// ---------------------------------------------------------------------------------------
// A raw gRPC client of proto/tc.proto, for requests the typed client would refuse to send.

export type RawClient = grpc.Client & Record<string, any>;

let rawCtor: grpc.ServiceClientConstructor | null = null;

/**
 * A raw TC client. `tls`: the credential to present (default: the environment's, the run's
 * operator credential — support/tls.ts); null: plaintext.
 */
export function rawClient(
  port: number,
  options: grpc.ChannelOptions = {},
  tls: ClientTls | null | undefined = undefined,
): RawClient {
  const creds = tls === undefined ? clientTlsFromEnv() : tls;
  if (!rawCtor) {
    const def = protoLoader.loadSync(resolve(REPO_ROOT, 'proto/tc.proto'), {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    rawCtor = (grpc.loadPackageDefinition(def) as any).concord.tc.v1
      .TransactionCoordinator as grpc.ServiceClientConstructor;
  }
  return new rawCtor(`127.0.0.1:${port}`, tcChannelCredentials(creds), {
    ...tcTlsChannelOptions(creds),
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...options,
  }) as RawClient;
}

/** One raw unary call: resolves with the response or the gRPC error. */
export function rawCall(
  client: RawClient,
  method: string,
  request: unknown,
  timeoutMs = 10_000,
): Promise<{ response?: any; error?: grpc.ServiceError }> {
  return new Promise((res) => {
    client[method](
      request,
      { deadline: Date.now() + timeoutMs },
      (error: grpc.ServiceError | null, response: any) => res(error ? { error } : { response }),
    );
  });
}

/** A test file's cluster, a TC client of it, and one TestRm connected through that client. */
export interface ClusterWithRm {
  cluster: TestCluster;
  tc: TcClient;
  rm: TestRm;
}

/**
 * Starts a cluster, a client of it and a TestRm serving `resourceIds`, connected; should a
 * step fail, what was started is stopped before the error is thrown.
 */
export async function startClusterWithRm(
  name: string,
  opts: ClusterOptions,
  resourceIds: string[],
  rmOpts: { clientId?: string; applicationId?: string; behave?: RmBehaviour },
): Promise<ClusterWithRm> {
  const cluster = await TestCluster.start(name, opts);
  const tc = cluster.client();
  const rm = new TestRm(tc, resourceIds, rmOpts);
  rm.behave = rmOpts.behave ?? null;
  try {
    await rm.connect();
  } catch (err) {
    await stopClusterWithRm({ cluster, tc, rm });
    throw err;
  }
  return { cluster, tc, rm };
}

/** Stops what startClusterWithRm started (parts not started are skipped). */
export async function stopClusterWithRm(s: Partial<ClusterWithRm>): Promise<void> {
  await s.rm?.disconnect();
  await s.tc?.close();
  await s.cluster?.stop();
}

/**
 * A TestRm behaviour: every phase-two call fails retryably while `failing()` says so (a
 * broken RM), and succeeds once it says no more (the RM healed).
 */
export function failingUntilHealed(failing: () => boolean): RmBehaviour {
  return (call) => {
    const commit = call.kind === 'commit';
    if (failing())
      return commit ? 'PhaseTwo_CommitFailed_Retryable' : 'PhaseTwo_RollbackFailed_Retryable';
    return commit ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked';
  };
}

/** Progress rank of a status as a client sees it: every legal step raises it. */
export function statusRank(s: string): number {
  if (s === 'Begin') return 0;
  if (['Committing', 'Rollbacking', 'TimeoutRollbacking', 'AsyncCommitting'].includes(s)) return 1;
  if (['CommitRetrying', 'RollbackRetrying', 'TimeoutRollbackRetrying'].includes(s)) return 2;
  return 3;
}
