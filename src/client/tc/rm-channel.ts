/**
 * The RM side of the long-lived RM channel (proto/tc.proto `RmChannel`): registers this
 * RM's resources with the leader, runs the phase-two requests the TC sends through a
 * handler and answers each, keeps the heartbeat, and reconnects — to the leader the TC
 * names in a NOT_LEADER answer, or to the one discovery finds — whenever the channel
 * breaks, the TC goes away, or discovery sees a new leader. A dead or SIGSTOPped leader is
 * noticed by the first of: discovery's leader change (about one election timeout), HTTP/2
 * keepalive on the connection (about 4 s: the connection breaks and cancels this stream),
 * the TC's heartbeats going silent. A reconnect pause ends early when discovery names a
 * new leader.
 *
 * Phase-two handlers must be idempotent: the TC may send the same branch twice (a retry,
 * a new leader re-driving, an answer lost with a broken channel).
 *
 * Batches (proto/tc.proto, src/shared/rm-batch.ts): the registration says this RM reads
 * PhaseTwoBatch messages; each request of a batch is run as a single one would be. The
 * results ready in one turn of the event loop leave in one BranchResultBatch — only to a TC
 * that announced it reads them (RmRegistered.batches); to an older TC, one message per
 * result. A batch from the TC that is empty, over its bounds or malformed is refused whole
 * (MalformedBatchError, logged): none of its requests runs, and the session ends (the TC
 * fails its calls in flight as a lost channel and sends them again after the reconnect).
 */
import type * as grpc from '@grpc/grpc-js';
import {
  CapacityError,
  ConcordError,
  TimeoutError,
  UnauthorizedError,
} from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { HostPort } from '../http-metadata.ts';
import { branchStatusToCode, branchTypeFromCode } from '../../shared/tc-codes.ts';
import { boundRmMessage } from '../../shared/tc-wire.ts';
import type { BranchResultWire, PhaseTwoRequestWire, WireError } from '../../shared/tc-wire.ts';
import {
  MalformedBatchError,
  batchRuns,
  checkPhaseTwoBatch,
  rmResultBytes,
} from '../../shared/rm-batch.ts';
import { isBranchStatus } from '../../shared/tc-vocabulary.ts';
import type { RmToTcWire, TcConnection, TcToRmWire } from './connection.ts';
import type { PhaseTwoRequest, RmChannelArgs, RmChannelPort } from './port.ts';
import { TransportError, grpcToError } from './errors.ts';
import {
  MAX_CONCURRENT_PHASE_TWO_HANDLERS,
  MAX_QUEUED_PHASE_TWO,
  RM_DEAD_AFTER_HEARTBEATS,
  RM_RECONNECT_BASE_MS,
  RM_RECONNECT_MAX_MS,
  RM_REGISTER_ANSWER_TIMEOUT_MS,
} from './limits.ts';

/** How the channel finds the leader and reaches it (the TcClient provides it). */
export interface RmRouting {
  logger: Logger;
  /** The leader's TC endpoint (waits for one to be known). */
  leader(): Promise<{ nodeId: string; transaction: HostPort }>;
  connection(target: HostPort): TcConnection;
  /** Called with the new leader's node id whenever discovery sees a change. */
  onLeaderChange(listener: (nodeId: string | null) => void): () => void;
  /** Ask discovery to look again (after a failure). */
  refresh(): void;
  /**
   * The node at this endpoint could not be reached (the connection failed, or it never answered the
   * registration).
   */
  unreachable?(target: HostPort): void;
  random(): number;
  /**
   * The channel stays on the one node leader() names (db mode: a channel to every node): a
   * NOT_LEADER answer's hint is not followed (a node of an older version that takes RM
   * channels on the lease holder only); it retries the same node with backoff.
   */
  pinned?: boolean;
}

interface SessionEnd {
  registered: boolean;
  /** The leader the TC named (NOT_LEADER), to try next. */
  hint: { nodeId: string; transaction: HostPort } | null;
  reason: string;
  /**
   * The node did not answer or could not be reached (a transport failure, no registration answer).
   */
  unreachable: boolean;
}

type RmStream = grpc.ClientDuplexStream<RmToTcWire, TcToRmWire>;
type RegisteredWire = NonNullable<TcToRmWire['registered']>;

/** One stream's life: registering, then serving, until it ends (RmChannel.session). */
interface Session extends SessionEnd {
  readonly stream: RmStream;
  /** The resources' version this registration carries. */
  readonly version: number;
  lastHeard: number;
  heartbeat: NodeJS.Timeout | null;
  registerTimer: NodeJS.Timeout | undefined;
  settled: boolean;
  readonly resolve: (end: SessionEnd) => void;
  /** The TC reads result batches (RmRegistered.batches). */
  tcBatches: boolean;
  /** Results of this turn not written yet (to a TC with batches); written at the turn's end. */
  outbox: BranchResultWire[];
  flushScheduled: boolean;
}

interface QueuedRequest {
  /** The session the request came on: its result goes back there (or nowhere). */
  session: Session;
  requestId: string;
  request: PhaseTwoRequest;
}

/** What crossed the channel since start: phase-two requests and results, and their messages. */
export interface RmChannelStats {
  requests: number;
  requestMessages: number;
  results: number;
  resultMessages: number;
  /** Batches from the TC refused as malformed. */
  refusedBatches: number;
}

export class RmChannel implements RmChannelPort {
  private readonly routing: RmRouting;
  private readonly opts: RmChannelArgs;
  private readonly log: Logger;
  private closed = false;
  private stream: grpc.ClientDuplexStream<RmToTcWire, TcToRmWire> | null = null;
  /** Bumped by resourcesChanged(); a registration carries the version it was made with. */
  private wantedVersion = 0;
  private registeredVersion = -1;
  private connectedNode: string | null = null;
  /** The node of the session in progress (registered or still registering). */
  private targetNode: string | null = null;
  /** Streams this channel cancelled itself (not a sign the node is unreachable). */
  private readonly cancelledOnPurpose = new WeakSet<object>();
  private readyWaiters: {
    version: number;
    resolve: () => void;
    reject: (err: Error) => void;
  }[] = [];
  /** The TC refused this channel's credentials: final, the channel stops (docs/security.md). */
  private refusal: UnauthorizedError | null = null;
  private running = 0;
  private readonly queue: QueuedRequest[] = [];
  private readonly unsubscribe: () => void;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  /** Phase-two requests handled (answered) since start. */
  handled = 0;
  private readonly counts: RmChannelStats = {
    requests: 0,
    requestMessages: 0,
    results: 0,
    resultMessages: 0,
    refusedBatches: 0,
  };

  constructor(routing: RmRouting, options: RmChannelArgs) {
    this.routing = routing;
    this.opts = options;
    this.log = routing.logger.child({ component: 'rm-channel', clientId: options.clientId });
    this.unsubscribe = routing.onLeaderChange((nodeId) => {
      if (nodeId === null) return;
      if (this.targetNode !== null && nodeId !== this.targetNode) {
        this.log.info(
          { from: this.targetNode, to: nodeId },
          'leader changed; moving the RM channel',
        );
        this.cancelStream();
      }
      // A reconnect pause ends now: there is a leader to go to.
      this.wake?.();
    });
  }

  /** Starts connecting (idempotent). */
  start(): this {
    this.loop ??= this.run();
    return this;
  }

  get clientId(): string {
    return this.opts.clientId;
  }

  get applicationId(): string {
    return this.opts.applicationId;
  }

  /** Requests and results that crossed the channel, and the messages they took. */
  stats(): RmChannelStats {
    return { ...this.counts };
  }

  /** The node this channel is registered with, or null. */
  get registeredWith(): string | null {
    return this.connectedNode;
  }

  /**
   * Resolves once registered with the leader for the resources as of now; TimeoutError after
   * `timeoutMs`.
   */
  ready(timeoutMs: number): Promise<void> {
    const version = this.wantedVersion;
    if (this.refusal) return Promise.reject(this.refusal);
    if (this.connectedNode !== null && this.registeredVersion >= version) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        version,
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (err: Error) => (clearTimeout(timer), reject(err)),
      };
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(
          new TimeoutError(
            `the RM channel of ${this.opts.clientId} was not registered with the leader within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      timer.unref();
      this.readyWaiters.push(waiter);
    });
  }

  /** The resources changed: register again (on a fresh stream; the TC replaces the old one). */
  resourcesChanged(): void {
    this.wantedVersion++;
    if (this.stream) this.cancelStream();
    else this.wake?.();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.cancelStream();
    this.wake?.();
    await this.loop?.catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------

  /** A PERMISSION_DENIED answer is final: the waiters learn it, the channel stops. */
  private noteRefusal(error: { code?: string; message?: string } | null | undefined): void {
    if (error?.code === 'ERROR_CODE_CAPACITY') {
      // A quota: those waiting learn it now; the channel keeps trying (room may come back).
      const full = new CapacityError(
        `the TC refused the RM channel of ${this.opts.clientId} for now: ${error.message ?? ''}`,
      );
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w.reject(full);
      return;
    }
    if (error?.code !== 'ERROR_CODE_PERMISSION_DENIED' || this.refusal) return;
    this.refusal = new UnauthorizedError(
      `the TC refused the RM channel of ${this.opts.clientId}: ${error.message ?? ''}`,
    );
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(this.refusal);
  }

  private cancelStream(): void {
    const stream = this.stream;
    if (!stream) return;
    this.cancelledOnPurpose.add(stream);
    stream.cancel();
  }

  private async run(): Promise<void> {
    let failures = 0;
    let hint: SessionEnd['hint'] = null;
    while (!this.closed) {
      let target: { nodeId: string; transaction: HostPort };
      try {
        target = hint ?? (await this.routing.leader());
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'no leader known for the RM channel yet');
        await this.pause(this.backoff(failures++));
        continue;
      }
      hint = null;
      this.targetNode = target.nodeId;
      const end = await this.session(target);
      this.targetNode = null;
      if (this.closed) break;
      if (this.refusal) {
        this.log.error({ reason: this.refusal.message }, 'RM channel refused by the TC; stopping');
        break;
      }
      this.log.info(
        { node: target.nodeId, reason: end.reason, registered: end.registered },
        'RM channel ended; reconnecting',
      );
      failures = end.registered ? 0 : failures + 1;
      hint = this.routing.pinned === true ? null : end.hint;
      if (end.unreachable) this.routing.unreachable?.(target.transaction);
      if (!hint) this.routing.refresh();
      await this.pause(hint && failures < 2 ? 0 : end.registered ? 0 : this.backoff(failures));
    }
  }

  /** One stream: register, serve, until it ends. Never rejects. */
  private session(target: { nodeId: string; transaction: HostPort }): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve) => {
      let stream: RmStream;
      try {
        stream = this.routing.connection(target.transaction).openRmStream();
      } catch (err) {
        resolve({
          registered: false,
          hint: null,
          reason: `cannot open: ${(err as Error).message}`,
          unreachable: err instanceof TransportError,
        });
        return;
      }
      this.stream = stream;
      const s: Session = {
        stream,
        version: this.wantedVersion,
        registered: false,
        hint: null,
        reason: 'stream ended',
        unreachable: false,
        lastHeard: Date.now(),
        heartbeat: null,
        settled: false,
        registerTimer: undefined,
        resolve,
        tcBatches: false,
        outbox: [],
        flushScheduled: false,
      };
      s.registerTimer = setTimeout(() => {
        s.reason = `no registration answer within ${RM_REGISTER_ANSWER_TIMEOUT_MS} ms`;
        s.unreachable = true;
        this.finishSession(s);
      }, RM_REGISTER_ANSWER_TIMEOUT_MS);
      s.registerTimer.unref();
      this.listen(s);
      this.writeSession(s, {
        register: {
          applicationId: this.opts.applicationId,
          transactionServiceGroup: this.opts.transactionServiceGroup,
          resourceIds: [...this.opts.resourceIds()],
          clientId: this.opts.clientId,
          batches: true,
        },
      });
    });
  }

  /** The session's stream events: its messages, and its end however it comes. */
  private listen(s: Session): void {
    const stream = s.stream;
    stream.on('data', (msg: TcToRmWire) => this.onSessionMessage(s, msg));
    stream.on('error', (err: Error) => {
      if (!s.settled) {
        s.reason = `stream error: ${err.message}`;
        // The connection failed (reset, refused, keepalive): the node may be dead or paused.
        s.unreachable =
          !this.cancelledOnPurpose.has(stream) &&
          grpcToError(err, 'RmChannel') instanceof TransportError;
      }
      this.finishSession(s);
    });
    stream.on('end', () => this.finishSession(s));
    stream.on('close', () => this.finishSession(s));
  }

  /** Ends the session once: timers stop, the stream is cancelled, run() learns how it ended. */
  private finishSession(s: Session): void {
    if (s.settled) return;
    s.settled = true;
    clearTimeout(s.registerTimer);
    if (s.heartbeat) clearInterval(s.heartbeat);
    if (this.stream === s.stream) this.stream = null;
    this.connectedNode = null;
    try {
      s.stream.cancel();
    } catch {
      // gone
    }
    const { registered, hint, reason, unreachable } = s;
    s.resolve({ registered, hint, reason, unreachable });
  }

  private writeSession(s: Session, msg: RmToTcWire): void {
    if (s.settled) return;
    try {
      s.stream.write(msg);
    } catch (err) {
      s.reason = `write failed: ${(err as Error).message}`;
      this.finishSession(s);
    }
  }

  private onSessionMessage(s: Session, msg: TcToRmWire): void {
    s.lastHeard = Date.now();
    switch (msg.message) {
      case 'registered':
        this.onRegistered(s, msg.registered!);
        return;
      case 'branchCommit':
      case 'branchRollback': {
        const wire = msg[msg.message];
        this.counts.requestMessages++;
        if (wire) this.accept(s, msg.message === 'branchCommit' ? 'commit' : 'rollback', wire);
        return;
      }
      case 'phaseTwoBatch':
        this.acceptBatch(s, msg.phaseTwoBatch);
        return;
      case 'ping':
        this.writeSession(s, { pong: { sentAtMs: msg.ping?.sentAtMs ?? 0 } });
        return;
      case 'pong':
        return;
      case 'goAway':
        this.noteRefusal(msg.goAway?.error);
        s.hint = hintOf(msg.goAway?.error);
        s.reason = `the TC closed the channel: ${msg.goAway?.error?.message ?? ''}`;
        this.finishSession(s);
        return;
      default:
        return;
    }
  }

  /** The registration's answer: refused (the session ends), or registered (heartbeat starts). */
  private onRegistered(s: Session, r: RegisteredWire): void {
    clearTimeout(s.registerTimer);
    if (r.resultCode !== 'RESULT_CODE_OK') {
      this.noteRefusal(r.error);
      s.hint = hintOf(r.error);
      s.reason = `registration refused: ${r.error?.code ?? 'unknown'} ${r.error?.message ?? ''}`;
      this.finishSession(s);
      return;
    }
    s.registered = true;
    s.tcBatches = r.batches === true;
    this.connectedNode = r.nodeId;
    this.registeredVersion = s.version;
    this.log.info(
      { node: r.nodeId, resources: this.opts.resourceIds().length },
      'RM channel registered',
    );
    this.startHeartbeat(s, Math.max(50, r.heartbeatIntervalMs || 5_000));
    const ready = this.readyWaiters.filter((w) => w.version <= s.version);
    this.readyWaiters = this.readyWaiters.filter((w) => w.version > s.version);
    for (const w of ready) w.resolve();
  }

  /** Pings every interval; a TC silent for RM_DEAD_AFTER_HEARTBEATS intervals ends the session. */
  private startHeartbeat(s: Session, interval: number): void {
    s.heartbeat = setInterval(() => {
      if (Date.now() - s.lastHeard > RM_DEAD_AFTER_HEARTBEATS * interval) {
        s.reason = 'the TC went silent';
        s.unreachable = true;
        this.finishSession(s);
        return;
      }
      this.writeSession(s, { ping: { sentAtMs: Date.now() } });
    }, interval);
    s.heartbeat.unref();
  }

  /**
   * A batch from the TC: checked whole before any request of it runs; a malformed one is
   * refused (nothing runs) and ends the session.
   */
  private acceptBatch(s: Session, batch: TcToRmWire['phaseTwoBatch']): void {
    let requests;
    try {
      requests = checkPhaseTwoBatch(batch);
    } catch (e) {
      const err = e instanceof MalformedBatchError ? e : new MalformedBatchError(String(e));
      this.counts.refusedBatches++;
      this.log.error(
        { err: err.message, node: this.connectedNode },
        'the TC sent a malformed phase-two batch; refused whole, ending the channel',
      );
      s.reason = `refused a malformed phase-two batch: ${err.message}`;
      this.finishSession(s);
      return;
    }
    this.counts.requestMessages++;
    for (const { kind, request } of requests) this.accept(s, kind, request);
  }

  private accept(s: Session, kind: 'commit' | 'rollback', w: PhaseTwoRequestWire): void {
    this.counts.requests++;
    const type = branchTypeFromCode(w.branchType);
    const reply = (branchResult: {
      requestId: string;
      branchStatus: number;
      error?: WireError | null;
    }) => this.answer(s, branchResult);
    if (type === null) {
      reply({
        requestId: w.requestId,
        branchStatus: 0,
        error: {
          code: 'ERROR_CODE_BAD_REQUEST',
          message: `unknown branch type ${w.branchType}`,
          retryable: false,
        },
      });
      return;
    }
    if (this.queue.length >= MAX_QUEUED_PHASE_TWO) {
      reply({
        requestId: w.requestId,
        branchStatus: 0,
        error: {
          code: 'ERROR_CODE_UNAVAILABLE',
          message: `${MAX_QUEUED_PHASE_TWO} phase-two requests are queued at this RM`,
          retryable: true,
        },
      });
      return;
    }
    this.queue.push({
      session: s,
      requestId: w.requestId,
      request: {
        kind,
        xid: w.xid,
        branchId: w.branchId,
        branchType: type,
        resourceId: w.resourceId,
        applicationData: w.applicationData,
        applicationId: w.applicationId ?? '',
      },
    });
    this.drain();
  }

  private drain(): void {
    while (this.running < MAX_CONCURRENT_PHASE_TWO_HANDLERS && this.queue.length > 0) {
      const item = this.queue.shift()!;
      this.running++;
      void this.runHandler(item).finally(() => {
        this.running--;
        this.drain();
      });
    }
  }

  private async runHandler(item: QueuedRequest): Promise<void> {
    let branchResult: BranchResultWire;
    try {
      const answer = await this.opts.handler(item.request);
      const status = typeof answer === 'object' && answer !== null ? answer.status : answer;
      if (!isBranchStatus(status))
        throw new TypeError(
          `the phase-two handler answered ${String(status)}, which is no branch status`,
        );
      const message = typeof answer === 'object' && answer !== null ? answer.message : undefined;
      branchResult = {
        requestId: item.requestId,
        branchStatus: branchStatusToCode(status),
        ...(message ? { message: boundRmMessage(message) } : {}),
      };
    } catch (err) {
      this.log.warn(
        { err, xid: item.request.xid, branchId: item.request.branchId, kind: item.request.kind },
        'phase-two handler failed; the TC will retry',
      );
      // A handler that refused the request itself (BadRequestError: not its application,
      // resource or type) says so; anything else is a failure the TC retries.
      const refused = err instanceof ConcordError && err.code === 'BAD_REQUEST';
      branchResult = {
        requestId: item.requestId,
        branchStatus: 0,
        error: {
          code: refused ? 'ERROR_CODE_BAD_REQUEST' : 'ERROR_CODE_UNAVAILABLE',
          message: boundRmMessage((err as Error)?.message ?? String(err)),
          retryable: true,
        },
      };
    }
    this.handled++;
    this.answer(item.session, branchResult);
  }

  /**
   * Sends a result back on the session its request came on: at once to a TC without batches,
   * else with the other results of this turn. A session that ended drops it (the TC retries
   * the call on the next one).
   */
  private answer(s: Session, result: BranchResultWire): void {
    if (s.settled) return;
    this.counts.results++;
    if (!s.tcBatches) {
      this.counts.resultMessages++;
      this.writeSession(s, { branchResult: result });
      return;
    }
    s.outbox.push(result);
    if (s.flushScheduled) return;
    s.flushScheduled = true;
    setImmediate(() => this.flushResults(s));
  }

  /** Writes the results of this turn: one message per batch's bounds (a lone one as itself). */
  private flushResults(s: Session): void {
    s.flushScheduled = false;
    const outbox = s.outbox;
    s.outbox = [];
    for (const run of batchRuns(outbox, rmResultBytes)) {
      if (s.settled) return;
      this.counts.resultMessages++;
      this.writeSession(
        s,
        run.length === 1 ? { branchResult: run[0]! } : { branchResults: { results: run } },
      );
    }
  }

  private backoff(attempt: number): number {
    const exp = Math.min(RM_RECONNECT_MAX_MS, RM_RECONNECT_BASE_MS * 2 ** Math.min(attempt, 20));
    return exp / 2 + (exp / 2) * this.routing.random();
  }

  private pause(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }
}

function hintOf(error: WireError | null | undefined): SessionEnd['hint'] {
  const l = error?.code === 'ERROR_CODE_NOT_LEADER' ? error.leader : null;
  if (!l || l.nodeId === '' || l.host === '' || !l.port) return null;
  return { nodeId: l.nodeId, transaction: { host: l.host, port: l.port } };
}
