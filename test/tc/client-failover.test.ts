/**
 * How fast the typed TC client fails over, on a real three-node cluster, and that it never
 * leaves a retryable outcome unretried (the chaos suite's findings):
 *  (a) a SIGSTOPped leader: calls in flight to it are failed fast and re-issued on the new
 *      leader as soon as discovery sees it — not after the per-attempt timeout;
 *  (b) every node SIGKILLed and restarted: the same client resumes without being recreated;
 *  (c) a Commit whose connection is reset mid-call (the leader killed right after it was
 *      sent) is retried: it ends Committed, as GetStatus confirms — never an internal error.
 * Every scenario prints what it measured (`[client-failover] …`).
 *
 * First, without a cluster: the error classification, the budget and the outcome-unknown
 * error against a scripted gRPC server, and the SDK's handling of a commit whose outcome is
 * unknown (FakeTc).
 */
import { requireXid, type Xid } from '../../src/shared/ids.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import {
  createServer as createTcpServer,
  connect,
  type AddressInfo,
  type Server as TcpServer,
  type Socket,
} from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterDiscovery } from '../../src/client/discovery.ts';
import {
  createClient,
  TransactionOutcomeUnknownError,
  TransactionTimeoutError,
} from '../../src/client/sdk/index.ts';
import {
  ConnectFailedError,
  OutcomeUnknownError,
  TcClient,
  TcInternalError,
  TransportError,
  UnavailableError,
  grpcToError,
  isOutcomeUnknown,
  retryClassOf,
  type BranchStatus,
  type GlobalStatus,
} from '../../src/client/tc-client.ts';
import { wireToError } from '../../src/client/tc/errors.ts';
import { tcServiceConstructor } from '../../src/shared/tc-wire.ts';
import {
  BadRequestError,
  NotLeaderError,
  ProposalDroppedError,
  TimeoutError,
} from '../../src/shared/errors.ts';
import { FakeTc } from '../sdk/helpers/fake-tc.ts';
import { TestCluster, TestRm, waitFor, waitForStatus, type TestNode } from './helpers.ts';

// ---------------------------------------------------------------------------------------
// Unit: what a failure means for a retry

const grpcError = (code: grpc.status, details: string) =>
  Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {
    code,
    details,
    metadata: new grpc.Metadata(),
  });

describe('error classification', () => {
  it('transport failures are outcome-unknown, never internal: RST_STREAM of any code, resets, server CANCELLED, UNAVAILABLE, DEADLINE_EXCEEDED', () => {
    const cases: Array<[grpc.status, string]> = [
      [grpc.status.INTERNAL, 'Received RST_STREAM with code 1 (Call ended without gRPC status)'],
      [grpc.status.INTERNAL, 'Received RST_STREAM with code 2 (Internal server error)'],
      [grpc.status.INTERNAL, 'Received RST_STREAM with code 8'],
      [grpc.status.UNAVAILABLE, 'Connection dropped'],
      [grpc.status.UNAVAILABLE, 'read ECONNRESET'],
      [grpc.status.CANCELLED, 'Call cancelled'],
      [grpc.status.UNKNOWN, 'stream closed'],
      [grpc.status.RESOURCE_EXHAUSTED, 'this node holds 4096 call streams, the limit'],
    ];
    for (const [code, details] of cases) {
      const err = grpcToError(grpcError(code, details), 'Commit at n1');
      expect(err, details).toBeInstanceOf(TransportError);
      expect(err, details).toBeInstanceOf(UnavailableError);
      expect(retryClassOf(err), details).toBe('unknown-outcome');
      expect(retryClassOf(grpcError(code, details)), `raw ${details}`).toBe('unknown-outcome');
    }
    const deadline = grpcToError(
      grpcError(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'),
      'Commit at n1',
    );
    expect(deadline).toBeInstanceOf(TimeoutError);
    expect(retryClassOf(deadline)).toBe('unknown-outcome');
  });

  it('a call that never left is "not sent"; NOT_LEADER is "not-leader"; answers are definite', () => {
    for (const details of [
      'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1',
      'Channel has been shut down',
    ]) {
      const err = grpcToError(grpcError(grpc.status.UNAVAILABLE, details), 'Begin at n1');
      expect(err).toBeInstanceOf(ConnectFailedError);
      expect(retryClassOf(err)).toBe('not-sent');
    }
    expect(retryClassOf(new NotLeaderError('n2'))).toBe('not-leader');
    expect(
      retryClassOf(
        wireToError(
          { code: 'ERROR_CODE_NOT_LEADER', message: 'no', retryable: true, leader: null },
          'x',
        ),
      ),
    ).toBe('not-leader');
    expect(retryClassOf(new ProposalDroppedError('lost the leadership'))).toBe('unknown-outcome');
    expect(
      retryClassOf(
        wireToError({ code: 'ERROR_CODE_TIMEOUT', message: 'slow', retryable: true }, 'x'),
      ),
    ).toBe('unknown-outcome');
    expect(
      retryClassOf(
        wireToError({ code: 'ERROR_CODE_UNAVAILABLE', message: 'stopping', retryable: true }, 'x'),
      ),
    ).toBe('unknown-outcome');
    for (const code of [
      'ERROR_CODE_UNKNOWN_XID',
      'ERROR_CODE_ILLEGAL_STATUS',
      'ERROR_CODE_LOCK_CONFLICT',
      'ERROR_CODE_BAD_REQUEST',
      'ERROR_CODE_INTERNAL',
    ] as const) {
      expect(retryClassOf(wireToError({ code, message: 'm', retryable: false }, 'x')), code).toBe(
        'definite',
      );
    }
    // An INTERNAL that is no transport failure is a bug report, not retried; so is a malformed
    // call.
    expect(
      grpcToError(grpcError(grpc.status.INTERNAL, 'Failed to parse server response'), 'x'),
    ).toBeInstanceOf(TcInternalError);
    expect(
      grpcToError(grpcError(grpc.status.INVALID_ARGUMENT, 'too many calls'), 'x'),
    ).toBeInstanceOf(BadRequestError);
    expect(
      grpcToError(
        grpcError(
          grpc.status.RESOURCE_EXHAUSTED,
          'Received message larger than max (9000000 vs 8388608)',
        ),
        'x',
      ),
    ).toBeInstanceOf(BadRequestError);
    expect(retryClassOf(new TypeError('a bug'))).toBe('definite');
  });

  it('OutcomeUnknownError says so, and is a TimeoutError that is not blindly retryable', () => {
    const err = new OutcomeUnknownError(
      'Commit',
      4,
      30_000,
      new TransportError('Commit at n1: Connection dropped'),
    );
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err).toMatchObject({
      name: 'OutcomeUnknownError',
      outcomeUnknown: true,
      method: 'Commit',
      attempts: 4,
      retryable: false,
    });
    expect(err.message).toMatch(/outcome unknown/);
    expect(isOutcomeUnknown(err)).toBe(true);
    expect(isOutcomeUnknown(new TimeoutError('plain'))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------
// Unit: the budget, against a scripted TC (one gRPC server, one metadata endpoint)

type Script = (
  kind: string,
  request: Record<string, unknown>,
  n: number,
) => Record<string, unknown> | null | 'reset';

/**
 * A one-node "cluster": metadata naming it leader, a Calls stream answered by `script`, behind a
 * TCP proxy that can reset connections.
 */
class ScriptedTc {
  script: Script = () => null;
  readonly received: string[] = [];
  private grpcServer!: grpc.Server;
  private http!: HttpServer;
  private proxy!: TcpServer;
  private readonly sockets = new Set<Socket>();
  httpPort = 0;
  tcPort = 0;

  async start(): Promise<void> {
    this.grpcServer = new grpc.Server();
    this.grpcServer.addService(tcServiceConstructor().service, {
      Calls: (
        call: grpc.ServerDuplexStream<
          { calls: Array<Record<string, unknown> & { id: number }> },
          unknown
        >,
      ) => {
        call.on('data', (batch: { calls: Array<Record<string, unknown> & { id: number }> }) => {
          for (const c of batch.calls) {
            const kind =
              typeof c.call === 'string'
                ? c.call
                : Object.keys(c).find((k) => k !== 'id' && c[k] !== null && c[k] !== undefined)!;
            this.received.push(kind);
            const answer = this.script(
              kind,
              c[kind] as Record<string, unknown>,
              this.received.length,
            );
            if (answer === 'reset') {
              for (const s of this.sockets) s.resetAndDestroy();
              return;
            }
            if (answer) call.write({ results: [{ id: c.id, [kind]: answer }] });
          }
        });
        call.on('error', () => undefined);
        call.on('end', () => call.end());
      },
    });
    const grpcPort = await new Promise<number>((res, rej) =>
      this.grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? rej(e) : res(p),
      ),
    );
    this.proxy = createTcpServer((client) => {
      const upstream = connect(grpcPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => this.proxy.listen(0, '127.0.0.1', r));
    this.tcPort = (this.proxy.address() as AddressInfo).port;
    const tcPort = this.tcPort;
    this.http = createHttpServer((req, res) => {
      const md = {
        storeMode: 'raft',
        group: 'default',
        term: 1,
        leaderId: 'n1',
        metadataVersion: 'v1',
        answeredBy: 'n1',
        nodes: [
          {
            nodeId: 'n1',
            role: 'LEADER',
            term: 1,
            control: { host: '127.0.0.1', port: this.httpPort },
            transaction: { host: '127.0.0.1', port: tcPort },
          },
        ],
      };
      res.writeHead(req.url?.startsWith('/metadata/v1/cluster') ? 200 : 404, {
        'content-type': 'application/json',
      });
      res.end(JSON.stringify(md));
    });
    await new Promise<void>((r) => this.http.listen(0, '127.0.0.1', r));
    this.httpPort = (this.http.address() as AddressInfo).port;
  }

  /**
   * The TC port refuses connections (the node is down; its metadata still names it leader, as a
   * stale follower would).
   */
  async down(): Promise<void> {
    const closed = new Promise((r) => this.proxy.close(r));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  async up(): Promise<void> {
    await new Promise<void>((r) => this.proxy.listen(this.tcPort, '127.0.0.1', r));
  }

  client(opts: { attemptTimeoutMs: number; callDeadlineMs: number }): TcClient {
    const discovery = new ClusterDiscovery({
      seeds: [`127.0.0.1:${this.httpPort}`],
      watch: false,
      tls: null, // the fake's metadata port is plain HTTP
    });
    // The scripted TC speaks plaintext.
    return new TcClient({ discovery, tls: null, ...opts });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.grpcServer.forceShutdown();
    await new Promise((r) => this.http.close(r));
    await new Promise((r) => this.proxy.close(r));
  }
}

describe('the call budget (scripted TC)', () => {
  let fake: ScriptedTc;
  beforeAll(async () => {
    fake = new ScriptedTc();
    await fake.start();
  });
  afterAll(async () => {
    await fake?.stop();
  });

  const ok = (kind: string) => ({
    resultCode: 'RESULT_CODE_OK',
    ...(kind === 'begin' ? { xid: requireXid('127.0.0.1:1:1') } : { globalStatus: 9 }),
  });

  it('a Commit that never gets an answer is retried per attempt timeout, then fails with OutcomeUnknownError', async () => {
    fake.received.length = 0;
    fake.script = () => null;
    // Room for several attempts even on a loaded box (the first connect can take 100s of ms).
    const tc = fake.client({ attemptTimeoutMs: 300, callDeadlineMs: 3_000 });
    try {
      const t0 = Date.now();
      const err = await tc.commit(requireXid('127.0.0.1:1:1')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OutcomeUnknownError);
      expect(err).toMatchObject({ outcomeUnknown: true, method: 'Commit' });
      // Retried (more than one attempt), and given up at the 3 s call deadline rather than the
      // default 30 s budget; the bound is loose so that a loaded machine cannot fail it.
      expect((err as OutcomeUnknownError).attempts).toBeGreaterThanOrEqual(2);
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(fake.received.filter((k) => k === 'commit').length).toBeGreaterThanOrEqual(2);
    } finally {
      await tc.close();
    }
  });

  it('NOT_LEADER naming no leader is retried until the budget, not a fixed count; then "not applied", not "unknown"', async () => {
    fake.received.length = 0;
    fake.script = () => ({
      resultCode: 'RESULT_CODE_FAILED',
      error: {
        code: 'ERROR_CODE_NOT_LEADER',
        message: 'election in progress',
        retryable: true,
        leader: null,
      },
    });
    const tc = fake.client({ attemptTimeoutMs: 500, callDeadlineMs: 1_500 });
    try {
      const err = await tc.rollback(requireXid('127.0.0.1:1:1')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect(isOutcomeUnknown(err)).toBe(false);
      expect((err as Error).message).toMatch(/not applied/);
      expect(fake.received.length).toBeGreaterThanOrEqual(3);
    } finally {
      await tc.close();
    }
  });

  it('a node that refuses connections: retried with backoff (no hot loop) until the budget, "not applied"; the same client re-dials once it is back', async () => {
    fake.received.length = 0;
    fake.script = (kind) => ok(kind);
    const tc = fake.client({ attemptTimeoutMs: 500, callDeadlineMs: 1_500 });
    let down = false;
    try {
      expect(await tc.getStatus(requireXid('127.0.0.1:1:1'))).toBe('Committed');
      await fake.down();
      down = true;
      // the client sees its connection drop (a call caught in the drop would have an unknown
      // outcome)
      await sleep(200);
      const err = await tc.rollback(requireXid('127.0.0.1:1:1')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect(isOutcomeUnknown(err)).toBe(false);
      const attempts = Number(/\((\d+) attempt/.exec((err as Error).message)?.[1]);
      expect(attempts).toBeGreaterThanOrEqual(2);
      expect(attempts).toBeLessThanOrEqual(20);
      await fake.up();
      down = false;
      const t0 = Date.now();
      expect(await tc.commit(requireXid('127.0.0.1:1:1'))).toBe('Committed');
      expect(Date.now() - t0).toBeLessThan(1_500);
    } finally {
      if (down) await fake.up();
      await tc.close();
    }
  });

  // Issue 13 item 6. Before the fix the client threw UnknownXidError, a definite failure,
  // although its first attempt may have committed and ended the transaction.
  it('UNKNOWN_XID after an attempt with an unknown outcome is no definite failure: OutcomeUnknownError', async () => {
    fake.received.length = 0;
    fake.script = (_kind, _req, n) =>
      n === 1
        ? 'reset'
        : {
            resultCode: 'RESULT_CODE_FAILED',
            error: {
              code: 'ERROR_CODE_UNKNOWN_XID',
              message: 'unknown global transaction',
              retryable: false,
            },
          };
    const tc = fake.client({ attemptTimeoutMs: 2_000, callDeadlineMs: 10_000 });
    try {
      const err = await tc.commit(requireXid('127.0.0.1:1:1')).catch((e: unknown) => e);
      expect(fake.received).toEqual(['commit', 'commit']);
      expect(err).toBeInstanceOf(OutcomeUnknownError);
      expect(isOutcomeUnknown(err)).toBe(true);
    } finally {
      await tc.close();
    }
  });

  it('a Commit whose connection is reset mid-call is retried on a fresh connection and answered', async () => {
    fake.received.length = 0;
    fake.script = (kind, _req, n) => (n === 1 ? 'reset' : ok(kind));
    const tc = fake.client({ attemptTimeoutMs: 2_000, callDeadlineMs: 10_000 });
    try {
      const t0 = Date.now();
      expect(await tc.commit(requireXid('127.0.0.1:1:1'))).toBe('Committed');
      expect(fake.received).toEqual(['commit', 'commit']);
      // Retried at once on a new connection, not after the attempt timeout.
      expect(Date.now() - t0).toBeLessThan(1_500);
    } finally {
      await tc.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Unit: the SDK never rolls back a commit whose outcome is unknown

describe('the SDK after a commit whose outcome is unknown', () => {
  const unknown = () =>
    new OutcomeUnknownError('Commit', 9, 30_000, new TransportError('Connection dropped'));

  it('asks GetStatus: a commit that took effect is reported as committed', async () => {
    const tc = new FakeTc();
    const commit = tc.commit.bind(tc);
    let lost = true;
    tc.commit = async (xid: string) => {
      const status = await commit(xid);
      if (lost) {
        lost = false;
        throw unknown(); // applied, but the answer was lost
      }
      return status;
    };
    const client = createClient({ servers: 'unused:1', applicationId: 'unit', tc });
    await expect(client.transaction({}, () => 5)).resolves.toBe(5);
    expect(tc.calls).toEqual(['begin', 'commit', 'getStatus']);
  });

  it('asks GetStatus: still Begin means the commit did not take effect, so it commits again', async () => {
    const tc = new FakeTc();
    tc.failNext.commit = unknown();
    const client = createClient({ servers: 'unused:1', applicationId: 'unit', tc });
    await expect(client.transaction({}, () => 6)).resolves.toBe(6);
    expect(tc.calls).toEqual(['begin', 'commit', 'getStatus', 'commit']);
    expect([...tc.sessions.values()][0]!.status).toBe('Committed');
  });

  it('when GetStatus cannot tell either: TransactionOutcomeUnknownError, and no rollback', async () => {
    const tc = new FakeTc();
    tc.failNext.commit = unknown();
    tc.failNext.getStatus = unknown();
    const client = createClient({ servers: 'unused:1', applicationId: 'unit', tc });
    const err = await client.transaction({}, () => 7).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionOutcomeUnknownError);
    expect(err).toBeInstanceOf(TransactionTimeoutError);
    expect(err).toMatchObject({ outcomeUnknown: true, phase: 'commit' });
    expect((err as Error).message).toMatch(/outcome unknown/);
    expect(tc.calls).toEqual(['begin', 'commit', 'getStatus']);
    expect([...tc.sessions.values()][0]!.status).toBe('Begin');
  });
});

// ---------------------------------------------------------------------------------------
// On a real cluster

const TICK_MS = 50;
const APP = { applicationId: 'failover-app', transactionServiceGroup: 'default' };
/** Transaction loops of the steady load (the machine has two cores, shared). */
const LOAD_LOOPS = 3;
/**
 * The bound the chaos runs broke: an in-flight call used to wait out the 10–15 s attempt timeout.
 */
const RECOVERY_BOUND_MS = 5_000;
/** How long every node stays down in (b), ms; with the restart, the outage is about 9 s. */
const RESTART_ALL_DOWN_MS = 6_000;

function log(line: string): void {
  console.log(`[client-failover] ${line}`);
}

interface Outcome {
  t0: number;
  t1: number;
  xid?: string;
  status?: GlobalStatus;
  error?: Error;
}

/** A steady stream of begin + commit on one client, every outcome recorded. */
class Load {
  readonly outcomes: Outcome[] = [];
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(private readonly tc: TcClient) {
    this.loops = Array.from({ length: LOAD_LOOPS }, () => this.loop());
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const t0 = Date.now();
      let xid: Xid | undefined;
      try {
        xid = await this.tc.begin({ ...APP, name: 'load', timeoutMs: 60_000 });
        const status = await this.tc.commit(xid);
        this.outcomes.push({ t0, t1: Date.now(), xid, status });
      } catch (err) {
        this.outcomes.push({ t0, t1: Date.now(), ...(xid ? { xid } : {}), error: err as Error });
        await sleep(50);
      }
      await sleep(10);
    }
  }

  committed(): Outcome[] {
    return this.outcomes.filter((o) => o.status !== undefined);
  }

  errors(): Outcome[] {
    return this.outcomes.filter((o) => o.error !== undefined);
  }

  /** When the first commit acknowledged after `t` came back. */
  firstCommitAfter(t: number): number | undefined {
    let best: number | undefined;
    for (const o of this.outcomes)
      if (o.status === 'Committed' && o.t1 > t && (best === undefined || o.t1 < best)) best = o.t1;
    return best;
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

let cluster: TestCluster;
let tc: TcClient;
let rm: TestRm;

/** The leader the given nodes agree on, or undefined. */
async function agreedLeader(nodes: TestNode[]): Promise<string | undefined> {
  const mds = await Promise.all(nodes.map((n) => cluster.metadata(n)));
  const ids = new Set(mds.map((m) => m.leaderId));
  const id = mds[0]?.leaderId ?? null;
  return ids.size === 1 && id !== null ? id : undefined;
}

async function rejoined(n: TestNode): Promise<void> {
  await waitFor(
    `${n.id} to rejoin`,
    async () => {
      const md = await cluster.metadata(n);
      return md.leaderId !== null && md.leaderId !== n.id ? true : undefined;
    },
    30_000,
    100,
  );
}

describe('client failover on a real cluster', () => {
  beforeAll(async () => {
    cluster = await TestCluster.start('client-failover', { tickMs: TICK_MS, logLevel: 'warn' });
    // Test (b) keeps every node down for RESTART_ALL_DOWN_MS: a call begun in that window
    // fails fast after connectTimeoutMs (5 s by default: "it was not applied"), by design
    // (test/sdk/fail-fast.test.ts). Here the client is one that chose to ride a restart out.
    tc = cluster.client({ connectTimeoutMs: 30_000 });
    rm = new TestRm(tc, ['stock'], {
      clientId: 'rm-client-failover',
      applicationId: APP.applicationId,
    });
    await rm.connect();
  }, 90_000);

  afterAll(async () => {
    for (const n of cluster?.nodes ?? []) n.proc?.kill('SIGCONT');
    await rm?.disconnect();
    await tc?.close();
    await cluster?.stop();
  }, 60_000);

  it('(a) a SIGSTOPped leader: commits resume on the new leader within seconds of its election', async () => {
    const old = await cluster.leader();
    const survivors = cluster.nodes.filter((n) => n !== old);
    const load = new Load(tc);
    let stopped = false;
    try {
      await waitFor(
        'the load to commit',
        () => (load.committed().length >= 5 ? true : undefined),
        20_000,
      );
      // Calls surely in flight to the leader when it stops (sent in this turn of the event loop).
      const probes = Array.from({ length: 4 }, async () => {
        const xid = await tc.begin({ ...APP, name: 'in-flight', timeoutMs: 60_000 });
        const status = await tc.commit(xid);
        return { status, at: Date.now() };
      });
      const tStop = Date.now();
      old.proc!.kill('SIGSTOP');
      stopped = true;
      const elected = await waitFor(
        'a new leader among the survivors',
        async () => {
          const id = await agreedLeader(survivors);
          return id !== undefined && id !== old.id ? { id, at: Date.now() } : undefined;
        },
        20_000,
        25,
      );
      const firstCommit = await waitFor(
        'a commit after the election',
        () => load.firstCommitAfter(elected.at),
        30_000,
        10,
      );
      const rmMoved = await waitFor(
        'the RM channel on the new leader',
        () => (rm.channel!.registeredWith === elected.id ? Date.now() : undefined),
        30_000,
        10,
      );
      // The calls that were in flight at the stop were failed fast and re-issued on the new leader.
      const inflight = await Promise.all(probes);
      const lastInflight = Math.max(...inflight.map((p) => p.at));
      log(
        `SIGSTOP leader: election seen +${elected.at - tStop} ms; first commit +${firstCommit - tStop} ms ` +
          `(${firstCommit - elected.at} ms after the election); RM channel moved +${rmMoved - tStop} ms; ` +
          `the ${inflight.length} begin+commit in flight at the stop all answered by +${lastInflight - tStop} ms`,
      );
      expect(firstCommit - elected.at).toBeLessThan(RECOVERY_BOUND_MS);
      expect(rmMoved - elected.at).toBeLessThan(RECOVERY_BOUND_MS);
      expect(inflight.map((p) => p.status)).toEqual(
        inflight.map(() => expect.stringMatching(/^(Committed|Committing)$/)),
      );
      expect(lastInflight - elected.at).toBeLessThan(RECOVERY_BOUND_MS);
      await sleep(300);
    } finally {
      if (stopped) old.proc?.kill('SIGCONT');
      await load.stop();
    }
    await rejoined(old);
    const errors = load.errors();
    expect(errors.map((o) => `${o.error!.name}: ${o.error!.message}`)).toEqual([]);
  });

  it('(b) all three nodes SIGKILLed, down 6 s, restarted: the same client resumes soon after a leader exists, no call lost', async () => {
    const load = new Load(tc);
    try {
      await waitFor(
        'the load to commit',
        () => (load.committed().length >= 5 ? true : undefined),
        20_000,
      );
      const tKill = Date.now();
      await Promise.all(cluster.nodes.map((n) => cluster.kill(n, 'SIGKILL')));
      // Down long enough that the old client's fixed 10 attempts ran out (it failed calls
      // with "No connection established" after 8–9 s); the budget outlasts it.
      await sleep(RESTART_ALL_DOWN_MS);
      for (const n of cluster.nodes) cluster.restart(n);
      // The first moment any node reports itself leader.
      const tLeader = await waitFor(
        'a leader after the restart',
        async () => {
          const mds = await Promise.all(
            cluster.nodes.map((n) => cluster.metadata(n).catch(() => null)),
          );
          return mds.some((m, i) => m !== null && m.leaderId === cluster.nodes[i]!.id)
            ? Date.now()
            : undefined;
        },
        60_000,
        25,
      );
      const firstCommit = await waitFor(
        'a commit after the restart',
        () => load.firstCommitAfter(tKill + 1),
        60_000,
        10,
      );
      const rmBack = await waitFor(
        'the RM channel registered again',
        () => (rm.channel!.registeredWith !== null ? Date.now() : undefined),
        30_000,
        10,
      );
      log(
        `restart-all: leader +${tLeader - tKill} ms after the kill; first commit +${firstCommit - tKill} ms ` +
          `(${firstCommit - tLeader} ms after a leader existed); RM channel registered +${rmBack - tKill} ms`,
      );
      expect(firstCommit - tLeader).toBeLessThan(RECOVERY_BOUND_MS);
      await sleep(300);
    } finally {
      await load.stop();
    }
    const errors = load.errors();
    expect(errors.map((o) => `${o.error!.name}: ${o.error!.message}`)).toEqual([]);
  });

  it('(c) a Commit whose connection is reset mid-call is retried; its answer matches GetStatus', async () => {
    const leader = await cluster.leader();
    // Group B: one branch each whose first phase-two commit hangs — their Commit calls are
    // surely in flight at the kill. Group A: no branch, killed right after the send.
    const hung: Array<(s: BranchStatus) => void> = [];
    rm.behave = (call, attempt) =>
      call.kind === 'commit' && attempt === 1
        ? new Promise<BranchStatus>((r) => hung.push(r))
        : call.kind === 'commit'
          ? 'PhaseTwo_Committed'
          : 'PhaseTwo_Rollbacked';
    try {
      const groupB: Xid[] = [];
      for (let i = 0; i < 4; i++) {
        const xid = await tc.begin({ ...APP, name: 'reset-b', timeoutMs: 60_000 });
        await tc.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'stock',
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        });
        groupB.push(xid);
      }
      const groupA: Xid[] = [];
      for (let i = 0; i < 8; i++)
        groupA.push(await tc.begin({ ...APP, name: 'reset-a', timeoutMs: 60_000 }));

      const settle = (xid: Xid) =>
        tc.commit(xid).then(
          (status) => ({ xid, status, error: null as Error | null }),
          (error: Error) => ({ xid, status: null as GlobalStatus | null, error }),
        );
      const commitsB = groupB.map(settle);
      await waitFor(
        'the hanging phase-two calls',
        () => (hung.length >= groupB.length ? true : undefined),
        15_000,
        5,
      );
      const commitsA = groupA.map(settle);
      await new Promise((r) => setImmediate(r));
      await sleep(2);
      const tKill = Date.now();
      await cluster.kill(leader, 'SIGKILL');

      const answers = await Promise.all([...commitsA, ...commitsB]);
      log(
        `reset mid-call: ${answers.length} commits answered within ${Date.now() - tKill} ms of the kill: ${[...new Set(answers.map((a) => a.status ?? a.error?.name))].join(', ')}`,
      );
      for (const a of answers) {
        expect(a.error, `${a.xid}: ${a.error?.name}: ${a.error?.message}`).toBeNull();
        expect(['Committing', 'CommitRetrying', 'Committed', 'AsyncCommitting']).toContain(
          a.status,
        );
      }
      for (const r of hung) r('PhaseTwo_Committed');
      // What the client was told is what happened.
      for (const a of answers)
        expect(
          await waitForStatus(tc, a.xid, (s) => s === 'Committed' || s === 'Rollbacked', 30_000),
        ).toBe('Committed');
    } finally {
      rm.behave = null;
      for (const r of hung) r('PhaseTwo_Committed');
      cluster.restart(leader);
    }
    await rejoined(leader);
  });
});
