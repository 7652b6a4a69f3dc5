/**
 * The TC gRPC service (proto/tc.proto): unary TM/RM/operator calls, the multiplexed
 * `Calls` stream and the `RmChannel` stream, mapped onto the Coordinator.
 *
 * Order for every call: validate at the edge (mapping.ts; a bad request is answered
 * BAD_REQUEST and changes nothing) → refuse at once with NOT_LEADER (and the leader's TC
 * address) unless this node holds the leader role (in db mode every node does) → the
 * coordinator, which submits through the session store and answers only once the command
 * is durable and applied. Every failure is
 * an answer with a typed error, never a thrown handler: a node never crashes on a client.
 */
import * as grpc from '@grpc/grpc-js';
import { Gauge, type Registry } from 'prom-client';
import { PlainCounter, PlainHistogram } from '../plain-metrics.ts';
import {
  isStuck,
  reportedStatus,
  type BeginRequest,
  type BranchReportRequest,
  type Coordinator,
  type CoordinatorStateView,
  type GlobalReportRequest,
  type GlobalStatus,
  type LockQueryRequest,
  type MarkResolvedRequest,
  type ResumeRequest,
  type RegisterBranchRequest,
} from '../../coordinator/index.ts';
import { BadRequestError, CapacityError, NotLeaderError } from '../../shared/errors.ts';
import { DEFAULT_QUOTAS, quotaOf, type QuotasConfig } from '../security/quotas.ts';
import type { Xid } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { globalStatusToCode } from '../../shared/tc-codes.ts';
import {
  DEFAULT_LIST_PAGE_SIZE,
  MAX_CALL_STREAMS,
  MAX_LIST_PAGE_SIZE,
  MAX_TC_MESSAGE_BYTES,
  SERVER_KEEPALIVE_TIME_MS,
  SERVER_KEEPALIVE_TIMEOUT_MS,
} from './limits.ts';
import {
  errorToWire,
  failed,
  isInternal,
  liveSessionToWire,
  ok,
  sessionInfoToWire,
  toBeginRequest,
  toBranchReport,
  toGlobalReport,
  toLockQuery,
  toMarkResolved,
  toRegisterBranch,
  toStatusFilter,
  toResumeRetry,
  toXidRequest,
} from './mapping.ts';
import { tcServiceConstructor } from '../../shared/tc-wire.ts';
import type {
  BeginRequestWire,
  BranchRegisterRequestWire,
  BranchReportRequestWire,
  GlobalReportRequestWire,
  ListSessionsRequestWire,
  LockQueryRequestWire,
  MarkResolvedRequestWire,
  ResumeRetryRequestWire,
  XidRequestWire,
  SessionInfoWire,
  WireLeader,
  WireResponse,
} from '../../shared/tc-wire.ts';
import { SpanStatusCode } from '@opentelemetry/api';
import { ATTR_RESULT, ATTR_TC_METHOD, ATTR_XID, SpanKind, tracer } from '../../shared/tracing.ts';
import type { RmChannelHub, RmHubStats } from './rm-hub.ts';
import { CallStream, type CallDuplex } from './call-stream.ts';
import { upperBound } from './upper-bound.ts';
import { AUDITED_METHODS, OPERATOR_METADATA_KEY, auditOperatorCall } from './audit.ts';
import type { TcMetrics } from './tc-metrics.ts';
import {
  OwnerCache,
  principalOf,
  requireAdmin,
  requireApp,
  requireOwnClientId,
  type Caller,
} from './auth.ts';

/** Sessions one filtered ListSessions page may scan before it returns (with a token to go on). */
export const MAX_LIST_SCAN = 10_000;
/** How long a stopping server waits for calls in flight before cancelling them, ms. */
export const SHUTDOWN_GRACE_MS = 2_000;
/** Latency buckets of TC calls, seconds. */
const CALL_BUCKETS_SECONDS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];

/** What the service needs of the session store beyond the coordinator. */
export interface TcStoreAccess {
  /**
   * This node may serve TC calls: raft — it holds the Raft leader role (it may not have
   * applied its first entry yet: calls then wait briefly); db — always (every node serves).
   */
  hasLeaderRole(): boolean;
  notLeaderError(): NotLeaderError;
  read<T>(fn: (state: CoordinatorStateView) => T): Promise<T>;
}

export interface TcGrpcServiceOptions {
  coordinator: Coordinator;
  store: TcStoreAccess;
  hub: RmChannelHub;
  /** The leader's id and TC address for a NOT_LEADER answer. */
  leaderOf: (leaderId: string | null) => WireLeader | null;
  host: string;
  port: number;
  logger: Logger;
  registry?: Registry;
  /** Transaction metrics fed from each call's answer. */
  txMetrics?: TcMetrics;
  /**
   * TLS with client certificates required (the cluster's CA, this node's certificate and
   * key); callers are authorized by the application their certificate names (auth.ts).
   * Null or absent: plaintext, nothing checked (insecure mode).
   */
  tls?: { ca: Buffer; cert: Buffer; key: Buffer } | null;
  /** Per-application quotas (security/quotas.ts); default DEFAULT_QUOTAS. */
  quotas?: QuotasConfig;
}

/**
 * One TC method at the edge: decode and validate the wire request (a bad one is answered
 * BAD_REQUEST and changes nothing), then — only once this node may serve — call the
 * coordinator and encode its answer.
 */
interface MethodSpec<Request> {
  decode(wire: unknown): Request;
  call(edge: Edge, request: Request): Promise<object>;
}

/** What a method calls: the coordinator, and the RM channels (which know each RM's application). */
interface Edge {
  coordinator: Coordinator;
  hub: RmChannelHub;
}

/** Methods only the admin role may call. */
const OPERATOR_METHODS: ReadonlySet<string> = new Set([
  'retryNow',
  'stopRetry',
  'resumeRetry',
  'markResolved',
  'listSessions',
]);
/** Methods on one transaction that only the application that began it may call. */
const OWNER_METHODS: ReadonlySet<string> = new Set([
  'commit',
  'rollback',
  'getStatus',
  'globalReport',
  'getSession',
]);

/** A method whose request is one xid and whose answer is the global status reached. */
const statusOf = (
  call: (c: Coordinator, r: { xid: Xid }) => Promise<GlobalStatus>,
): MethodSpec<{ xid: Xid }> => ({
  decode: (w) => toXidRequest(w as XidRequestWire),
  call: async ({ coordinator }, r) => ({
    globalStatus: globalStatusToCode(await call(coordinator, r)),
  }),
});

/** A method whose request is one xid and whose answer is empty. */
const doneOf = (
  call: (c: Coordinator, r: { xid: Xid }) => Promise<void>,
): MethodSpec<{ xid: Xid }> => ({
  decode: (w) => toXidRequest(w as XidRequestWire),
  call: async ({ coordinator }, r) => {
    await call(coordinator, r);
    return {};
  },
});

/** Every coordinator method of the TC service, by its name on the multiplexed stream. */
const METHODS = {
  begin: {
    decode: (w) => toBeginRequest(w as BeginRequestWire),
    call: async ({ coordinator }, r) => ({ xid: (await coordinator.begin(r)).xid }),
  } satisfies MethodSpec<BeginRequest>,
  commit: statusOf((c, r) => c.commit(r)),
  rollback: statusOf((c, r) => c.rollback(r)),
  getStatus: statusOf((c, r) => c.getStatus(r)),
  globalReport: {
    decode: (w) => toGlobalReport(w as GlobalReportRequestWire),
    call: async ({ coordinator }, r) => ({
      globalStatus: globalStatusToCode(await coordinator.globalReport(r)),
    }),
  } satisfies MethodSpec<GlobalReportRequest>,
  branchRegister: {
    decode: (w) => toRegisterBranch(w as BranchRegisterRequestWire),
    call: async ({ coordinator, hub }, r) => {
      hub.checkApplication(r.clientId, r.applicationId);
      return { branchId: (await coordinator.registerBranch(r)).branchId };
    },
  } satisfies MethodSpec<RegisterBranchRequest>,
  branchReport: {
    decode: (w) => toBranchReport(w as BranchReportRequestWire),
    call: async ({ coordinator }, r) => {
      await coordinator.branchReport(r);
      return {};
    },
  } satisfies MethodSpec<BranchReportRequest>,
  lockQuery: {
    decode: (w) => toLockQuery(w as LockQueryRequestWire),
    call: async ({ coordinator }, r) => ({ lockable: await coordinator.lockQuery(r) }),
  } satisfies MethodSpec<LockQueryRequest>,
  getSession: {
    decode: (w) => toXidRequest(w as XidRequestWire),
    call: async ({ coordinator }, r) => ({
      session: sessionInfoToWire(await coordinator.getSession(r)),
    }),
  } satisfies MethodSpec<{ xid: Xid }>,
  retryNow: statusOf((c, r) => c.retryNow(r)),
  stopRetry: doneOf((c, r) => c.stopRetry(r)),
  resumeRetry: {
    decode: (w) => toResumeRetry(w as ResumeRetryRequestWire),
    call: async ({ coordinator }, r) => ({
      globalStatus: globalStatusToCode(await coordinator.resumeRetry(r)),
    }),
  } satisfies MethodSpec<ResumeRequest>,
  markResolved: {
    decode: (w) => toMarkResolved(w as MarkResolvedRequestWire),
    call: async ({ coordinator }, r) => ({
      globalStatus: globalStatusToCode((await coordinator.markResolved(r)).status),
    }),
  } satisfies MethodSpec<MarkResolvedRequest>,
} as const;

type Method = keyof typeof METHODS | 'listSessions';

/**
 * The unary methods by their wire name: the method's own name, capitalized (Begin, GetStatus, ...).
 */
const UNARY: ReadonlyMap<string, Method> = new Map(
  [...(Object.keys(METHODS) as Method[]), 'listSessions' as const].map((m) => [
    m[0]!.toUpperCase() + m.slice(1),
    m,
  ]),
);

export class TcGrpcService {
  private readonly opts: TcGrpcServiceOptions;
  private readonly coordinator: Coordinator;
  private readonly store: TcStoreAccess;
  private readonly log: Logger;
  private readonly server: grpc.Server;
  private boundPort = 0;
  private callStreams = 0;
  /** Call streams paused because their client does not read (CallStream backpressure). */
  private pausedCallStreams = 0;
  private readonly owners = new OwnerCache();
  private readonly quotas: QuotasConfig;
  /** Unary calls in flight by connection (its peer address). */
  private readonly unaryInflight = new Map<string, number>();
  /** The open Calls streams: each drains once its calls in flight are answered (close()). */
  private readonly drains = new Set<CallStream>();
  private readonly metrics: {
    count(method: Method, code: string): void;
    observe(method: Method, seconds: number): void;
  } | null;

  constructor(options: TcGrpcServiceOptions) {
    this.opts = options;
    this.quotas = options.quotas ?? DEFAULT_QUOTAS;
    this.coordinator = options.coordinator;
    this.store = options.store;
    this.log = options.logger.child({ component: 'tc-service' });
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_TC_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_TC_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': SERVER_KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': SERVER_KEEPALIVE_TIMEOUT_MS,
    });
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of UNARY) {
      handlers[name] = (
        call: grpc.ServerUnaryCall<unknown, WireResponse>,
        callback: grpc.sendUnaryData<WireResponse>,
      ) => {
        // In-flight unary calls per connection are bounded: beyond, a definite refusal.
        const peer = call.getPeer();
        const inflight = this.unaryInflight.get(peer) ?? 0;
        if (inflight >= this.quotas.maxInflightUnaryPerConnection) {
          callback(
            null,
            failed(
              errorToWire(
                new CapacityError(
                  `${inflight} unary calls in flight on this connection, the limit; wait for answers`,
                ),
                this.opts.leaderOf,
              ),
            ),
          );
          return;
        }
        this.unaryInflight.set(peer, inflight + 1);
        void this.execute(method, call.request, this.callerOf(call)).then((response) => {
          const left = (this.unaryInflight.get(peer) ?? 1) - 1;
          if (left === 0) this.unaryInflight.delete(peer);
          else this.unaryInflight.set(peer, left);
          if (AUDITED_METHODS.has(method))
            auditOperatorCall(
              this.log,
              {
                method,
                request: call.request,
                declaredOperator: call.metadata.get(OPERATOR_METADATA_KEY)[0],
                peer: call.getPeer(),
              },
              response,
            );
          callback(null, response);
        });
      };
    }
    handlers.Calls = (call: CallDuplex) => this.onCallStream(call);
    handlers.RmChannel = (call: Parameters<RmChannelHub['handle']>[0]) =>
      options.hub.handle(call, this.callerOf(call as never));
    this.server.addService(tcServiceConstructor().service, handlers);
    this.metrics = options.registry ? this.createMetrics(options.registry) : null;
  }

  /** Binds host:port; resolves with the bound port. */
  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      const address = this.opts.host.includes(':')
        ? `[${this.opts.host}]:${this.opts.port}`
        : `${this.opts.host}:${this.opts.port}`;
      const tls = this.opts.tls ?? null;
      const credentials =
        tls === null
          ? grpc.ServerCredentials.createInsecure()
          : grpc.ServerCredentials.createSsl(
              tls.ca,
              [{ cert_chain: tls.cert, private_key: tls.key }],
              true,
            );
      this.server.bindAsync(address, credentials, (err, port) => {
        if (err) {
          reject(err);
          return;
        }
        this.boundPort = port;
        this.log.info({ address, port, tls: tls !== null }, 'TC gRPC service listening');
        resolve(port);
      });
    });
  }

  get port(): number {
    return this.boundPort;
  }

  /**
   * Stops taking calls and drains: every Calls stream ends once the calls in flight on it
   * are answered (the client opens a new stream elsewhere for its next calls); unary calls
   * finish. What is still running after SHUTDOWN_GRACE_MS is cancelled.
   */
  close(): Promise<void> {
    for (const stream of [...this.drains]) stream.drain();
    return new Promise((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      force.unref();
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  // -------------------------------------------------------------------------------------
  // One call, unary or multiplexed: never rejects.

  async execute(method: Method, request: unknown, caller: Caller = null): Promise<WireResponse> {
    const started = performance.now();
    // A no-op span unless the process registered a tracer provider.
    const span = tracer().startSpan(`concord.tc.${method}`, { kind: SpanKind.SERVER });
    let response: WireResponse;
    try {
      response = await this.dispatch(method, request, caller);
    } catch (err) {
      if (isInternal(err)) this.log.error({ err, method }, 'TC call failed unexpectedly');
      else if ((err as { cause?: unknown }).cause !== undefined)
        // A wrapped foreign failure (the database's): its details are told only here.
        this.log.warn({ method, err }, 'TC call failed in the session store');
      else this.log.debug({ method, err: (err as Error).message }, 'TC call refused');
      response = failed(errorToWire(err, this.opts.leaderOf));
    }
    const seconds = (performance.now() - started) / 1000;
    if (this.metrics) {
      this.metrics.count(method, response.error ? response.error.code : 'OK');
      this.metrics.observe(method, seconds);
    }
    this.opts.txMetrics?.observeCall(method, response, seconds);
    if (span.isRecording()) {
      const xid = (request as { xid?: unknown } | null)?.xid ?? (response as { xid?: unknown }).xid;
      if (typeof xid === 'string' && xid !== '') span.setAttribute(ATTR_XID, xid);
      span.setAttribute(ATTR_TC_METHOD, method);
      span.setAttribute(ATTR_RESULT, response.error ? response.error.code : 'OK');
      if (response.error)
        span.setStatus({ code: SpanStatusCode.ERROR, message: response.error.message });
    }
    span.end();
    return response;
  }

  private requireLeader(): void {
    if (!this.store.hasLeaderRole()) throw this.store.notLeaderError();
  }

  /**
   * The caller of a call under TLS: the principal its certificate names. A TLS connection
   * always carries one (the handshake requires a certificate of the CA).
   */
  private callerOf(call: Parameters<typeof principalOf>[0]): Caller {
    if ((this.opts.tls ?? null) === null) return null;
    return principalOf(call) ?? { app: null, admin: false };
  }

  private async dispatch(method: Method, request: unknown, caller: Caller): Promise<WireResponse> {
    if (OPERATOR_METHODS.has(method)) requireAdmin(caller, method);
    if (method === 'listSessions') return this.listSessions(request as ListSessionsRequestWire);
    const spec = METHODS[method] as MethodSpec<unknown>;
    const decoded = spec.decode(request);
    this.requireLeader();
    if (caller !== null) await this.authorize(method, decoded, caller);
    if (method === 'begin') this.checkBeginQuota(decoded as BeginRequest);
    const answer = await spec.call({ coordinator: this.coordinator, hub: this.opts.hub }, decoded);
    if (method === 'begin')
      this.owners.set((answer as { xid: string }).xid, (decoded as BeginRequest).applicationId);
    return ok(answer);
  }

  /** Refuses (UnauthorizedError, nothing proposed) what the caller's application may not do. */
  private async authorize(method: Method, decoded: unknown, caller: Caller): Promise<void> {
    if (caller === null || caller.admin) return;
    if (method === 'begin' || method === 'branchRegister') {
      requireApp(caller, (decoded as { applicationId: string }).applicationId, method);
      if (method === 'branchRegister')
        requireOwnClientId(caller, (decoded as RegisterBranchRequest).clientId);
      return;
    }
    const xid = (decoded as { xid?: Xid }).xid;
    if (xid === undefined) return;
    if (OWNER_METHODS.has(method)) {
      const owner = await this.ownerOf(xid);
      if (owner !== null) requireApp(caller, owner, `transaction ${xid}`);
      return;
    }
    if (method === 'branchReport') {
      const branchId = (decoded as BranchReportRequest).branchId;
      const app = await this.store.read(
        (state) =>
          state.getSession(xid)?.branches.find((b) => b.branchId === branchId)?.applicationId ??
          null,
      );
      if (app !== null) requireApp(caller, app, `branch ${branchId}`);
    }
  }

  /** A Begin asking a timeout beyond its application's maximum is refused (nothing proposed). */
  private checkBeginQuota(r: BeginRequest): void {
    const max = quotaOf(this.quotas, r.applicationId).maxTransactionTimeoutMs;
    if (r.timeoutMs > max)
      throw new CapacityError(
        `timeoutMs ${r.timeoutMs} exceeds the maximum transaction timeout of application ${r.applicationId} (${max} ms)`,
      );
  }

  /** The application that began `xid`, or null if it is not live (finished or unknown). */
  private async ownerOf(xid: Xid): Promise<string | null> {
    const known = this.owners.get(xid);
    if (known !== undefined) return known;
    const app = await this.store.read((state) => state.getSession(xid)?.applicationId ?? null);
    if (app !== null) this.owners.set(xid, app);
    return app;
  }

  /** A bounded page of live sessions in xid order (linearizable, like every read). */
  private async listSessions(w: ListSessionsRequestWire | null): Promise<WireResponse> {
    if (!w || typeof w !== 'object') throw new BadRequestError('request is missing');
    const pageSize = w.pageSize === 0 ? DEFAULT_LIST_PAGE_SIZE : w.pageSize;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_LIST_PAGE_SIZE)
      throw new BadRequestError(`pageSize must be 0..${MAX_LIST_PAGE_SIZE}`);
    const after = decodePageToken(w.pageToken);
    const filter = toStatusFilter(w.globalStatus);
    if (w.stuck !== undefined && typeof w.stuck !== 'boolean')
      throw new BadRequestError('stuck must be a boolean');
    const onlyStuck = w.stuck === true;
    this.requireLeader();
    const page = await this.store.read((state) => {
      const { xids, from: start, total } = liveXidsAfter(state, after);
      let i = start;
      const sessions: SessionInfoWire[] = [];
      let scanned = 0;
      for (
        ;
        i < xids.length && sessions.length < pageSize && scanned < MAX_LIST_SCAN;
        i++, scanned++
      ) {
        const session = state.getSession(xids[i]!);
        if (!session) continue;
        const reported: GlobalStatus = reportedStatus(session);
        if (filter !== null && reported !== filter) continue;
        if (onlyStuck && !isStuck(session)) continue;
        sessions.push(
          liveSessionToWire(session, reported, false, this.coordinator.driver.rmWaitsOf(xids[i]!)),
        );
      }
      const more = i < xids.length;
      return { sessions, next: more && i > 0 ? xids[i - 1]! : null, total };
    });
    return ok({
      sessions: page.sessions,
      nextPageToken: page.next === null ? '' : encodePageToken(page.next),
      totalLive: page.total,
    });
  }

  // -------------------------------------------------------------------------------------
  // The multiplexed call stream

  private onCallStream(call: CallDuplex): void {
    const caller = this.callerOf(call);
    if (this.callStreams >= MAX_CALL_STREAMS) {
      call.emit('error', {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `this node holds ${MAX_CALL_STREAMS} call streams, the limit`,
      });
      return;
    }
    this.callStreams++;
    this.drains.add(
      new CallStream(call, {
        logger: this.log,
        execute: (kind, request) => this.execute(kind, request, caller),
        onDone: (stream) => {
          this.callStreams--;
          this.drains.delete(stream);
        },
        onBackpressure: (paused) => {
          this.pausedCallStreams += paused ? 1 : -1;
          if (paused)
            this.log.debug(
              { app: caller?.app ?? null },
              'call stream paused: its client does not read its results',
            );
        },
      }),
    );
  }

  private createMetrics(registry: Registry) {
    const existing = registry.getSingleMetric('concord_tc_calls_total');
    if (existing) registry.removeSingleMetric('concord_tc_calls_total');
    if (registry.getSingleMetric('concord_tc_call_seconds'))
      registry.removeSingleMetric('concord_tc_call_seconds');
    if (registry.getSingleMetric('concord_tc_call_streams_paused'))
      registry.removeSingleMetric('concord_tc_call_streams_paused');
    const hub = this.opts.hub;
    const pausedStreams = () => this.pausedCallStreams;
    new Gauge({
      name: 'concord_tc_call_streams_paused',
      help: 'Call streams that stopped reading calls because their client does not read its results (backpressure)',
      registers: [registry],
      collect() {
        this.set(pausedStreams());
      },
    });
    registerRmHubGauges(registry, hub);
    // Counted in plain numbers and published at scrape time (plain-metrics.ts): prom-client
    // hashes and validates a label object on every inc and observe, even a child's (issue 12,
    // 2–3 % of the leader). Bounded: methods × error codes, both closed sets.
    const calls = new PlainCounter<'method' | 'code'>({
      name: 'concord_tc_calls_total',
      help: 'TC calls answered, by method and error code (OK for success)',
      labelNames: ['method', 'code'] as const,
      registers: [registry],
    });
    const seconds = new PlainHistogram<'method'>({
      name: 'concord_tc_call_seconds',
      help: 'TC call latency, seconds',
      labelNames: ['method'] as const,
      buckets: CALL_BUCKETS_SECONDS,
      registers: [registry],
    });
    return {
      count(method: Method, code: string) {
        calls.inc(`${method} ${code}`, { method, code });
      },
      observe(method: Method, value: number) {
        seconds.observe(method, { method }, value);
      },
    };
  }
}

export function encodePageToken(xid: string): string {
  return Buffer.from(xid, 'utf8').toString('base64url');
}

export function decodePageToken(token: unknown): string | null {
  if (token === undefined || token === '') return null;
  if (typeof token !== 'string' || token.length > 256 || !/^[A-Za-z0-9_-]+$/.test(token))
    throw new BadRequestError('pageToken is not a token this server gave out');
  return Buffer.from(token, 'base64url').toString('utf8');
}

/** The RM channels' gauges: connected, congested (not reading), phase-two calls in flight. */
function registerRmHubGauges(registry: Registry, hub: RmChannelHub): void {
  const gauges: Array<[string, string, (s: RmHubStats) => number]> = [
    [
      'concord_tc_rm_channels',
      'RM channels connected to this node (registered ones)',
      (s) => s.registered,
    ],
    [
      'concord_tc_rm_phase_two_inflight',
      'Phase-two calls sent to RM channels and not answered yet (at most 256 per channel)',
      (s) => s.inflight,
    ],
    [
      'concord_tc_rm_phase_two_sent',
      'Phase-two calls written to RM channels since the node started',
      (s) => s.sent,
    ],
    [
      'concord_tc_rm_phase_two_messages',
      'Messages the phase-two calls to RM channels travelled in (a batch is one) since the start',
      (s) => s.sentMessages,
    ],
    [
      'concord_tc_rm_results',
      'Phase-two results received from RM channels since the node started',
      (s) => s.results,
    ],
    [
      'concord_tc_rm_result_messages',
      'Messages those results came in (a batch is one) since the node started',
      (s) => s.resultMessages,
    ],
    [
      'concord_tc_rm_channels_congested',
      'RM channels whose stream does not drain (the RM does not read): they get no new call',
      (s) => s.congested,
    ],
  ];
  for (const [name, help, value] of gauges) {
    if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value(hub.stats()));
      },
    });
  }
}

/**
 * The live xids a page reads, in xid order, from `from`: the first after `after` (null: from
 * the start). From the state machine's ordered index, a bounded page (MAX_LIST_SCAN + 1: the
 * scan's bound and one to tell whether more follow), not a sort of every live xid; a view
 * without the index (the db store's partial view) sorts what it lists. `total`: live sessions.
 */
export function liveXidsAfter(
  state: CoordinatorStateView,
  after: string | null,
): { xids: readonly Xid[]; from: number; total: number } {
  if (state.liveXidPage)
    return {
      xids: state.liveXidPage(after, MAX_LIST_SCAN + 1),
      from: 0,
      total: state.liveSessionCount(),
    };
  const xids = state.liveXids().sort();
  return { xids, from: after === null ? 0 : upperBound(xids, after), total: xids.length };
}
