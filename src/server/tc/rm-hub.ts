/**
 * The RM channel hub: every RM connected to this node over the long-lived `RmChannel`
 * stream, indexed by client id and by (application, resource id), and the coordinator's
 * BranchGateway on top of it — BranchCommit / BranchRollback requests go out on a channel
 * and the RM's `branch_result` (correlated by request id) resolves the call.
 *
 * Picking an RM for a branch (rm-route.ts): the RM that registered the branch (its client
 * id) if it is connected, of the branch's application and serves the resource; else another
 * RM of the branch's application serving the resource; NEVER an RM of another application —
 * a resource id is unique within an application only, and the branch's application is
 * recorded with it (replicated: a new leader knows it without having seen the registering
 * RM). RMs must make phase two idempotent (a branch may be told twice: a retry, a new
 * leader re-driving), so any RM of the application serving the resource may run it. Every
 * request carries the branch's application, so an RM can refuse a branch that is not its own.
 *
 * Every failure is a REJECTION the coordinator treats as retryable (no RM, RM at its
 * in-flight bound, timeout, channel lost, RM error): phase two is retried with backoff. No
 * RM of the application serving the resource is an ApplicationRmUnavailableError: the
 * driver shows the branch as waiting for its application's RM, and `onRmRegistered`
 * listeners hear when such an RM connects (the driver then retries at once). One exception
 * to failing at once: for RM_RECONNECT_GRACE_MS after this node becomes leader, a call for
 * which no RM of the application serves the resource yet waits for one to register — the
 * RMs of the old leader are reconnecting, and the re-driven transactions would otherwise
 * all fall into the retry backoff (1 s, 2 s, 4 s, ...) right after every failover.
 *
 * Bounded: MAX_RM_CHANNELS channels (registered or not yet), MAX_RESOURCES_PER_RM per
 * channel, MAX_INFLIGHT_PHASE_TWO_PER_RM calls in flight per channel, a per-call timeout.
 * Backpressure: a channel whose stream stops draining (write() said false) is congested until
 * 'drain' and is written nothing meanwhile (no call, no ping). A call routed to it waits for
 * the drain — grpc-js's stream buffers only 16 messages, so a burst of calls in one turn
 * congests a channel whose RM reads well, for a moment — unless the congestion has lasted
 * RM_CHANNEL_DRAIN_WAIT_MS: then its RM is taken not to read, and a call that would go to it
 * finds no RM and the driver retries it later (a timed-out call frees its slot, but nothing
 * more is queued behind the unread ones).
 * Heartbeats: the hub pings every channel each interval and drops one silent for
 * DEAD_AFTER_HEARTBEATS intervals (any message counts as a sign of life).
 * Batches (src/shared/rm-batch.ts): to an RM that announced them (RmRegister.batches), the
 * calls routed to its channel in one turn of the event loop leave in one PhaseTwoBatch
 * message (MAX_RM_BATCH_ENTRIES and MAX_RM_BATCH_BYTES per message) at the turn's end
 * (setImmediate); to an older RM, one message per call as before. The hub reads the RM's
 * BranchResultBatch (and announces it does: RmRegistered.batches) as well as single results;
 * a batch is checked whole first, and a malformed one ends the channel and resolves nothing.
 */
import type * as grpc from '@grpc/grpc-js';
import {
  ApplicationRmUnavailableError,
  MAX_NAME_CHARS,
  MAX_RESOURCE_ID_CHARS,
  type BranchGateway,
  type BranchSession,
  type BranchStatus,
} from '../../coordinator/index.ts';
import {
  BadRequestError,
  CapacityError,
  ConcordError,
  TimeoutError,
  UnauthorizedError,
} from '../../shared/errors.ts';
import { requireApp, requireOwnClientId, type Caller } from './auth.ts';
import type { Logger } from '../../shared/logger.ts';
import { branchTypeToCode } from '../../shared/tc-codes.ts';
import { RmCallFailedError, RmUnavailableError } from './errors.ts';
import {
  DEAD_AFTER_HEARTBEATS,
  DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS,
  DEFAULT_RM_HEARTBEAT_INTERVAL_MS,
  MAX_INFLIGHT_PHASE_TWO_PER_RM,
  MAX_RESOURCES_PER_RM,
  MAX_RM_CHANNELS,
  MAX_RM_WAITERS,
  RM_CHANNEL_DRAIN_WAIT_MS,
  RM_RECONNECT_GRACE_MS,
  RM_REGISTER_TIMEOUT_MS,
} from './limits.ts';
import { FAILED, OK, branchStatusOfCode } from './mapping.ts';
import type {
  BranchResultWire,
  Decoded,
  OneOf,
  PhaseTwoRequestWire,
  RmRegisterWire,
  RmToTcFields,
  TcToRmFields,
  WireError,
} from '../../shared/tc-wire.ts';
import { chooseRm, routeKey } from './rm-route.ts';
import { DeadlineWheel, type CancelDeadline } from '../../shared/deadline-wheel.ts';
import { boundRmMessage } from '../../shared/tc-wire.ts';
import {
  batchRuns,
  checkResultBatch,
  rmRequestBytes,
  type BatchedRequest,
} from '../../shared/rm-batch.ts';

type RmToTcWire = Decoded<RmToTcFields, 'message'>;
type TcToRmWire = OneOf<TcToRmFields>;
function samePrincipal(a: Caller, b: Caller): boolean {
  if (a === null || b === null) return a === b;
  return a.app === b.app && a.admin === b.admin;
}

export type RmStream = grpc.ServerDuplexStream<RmToTcWire, TcToRmWire>;

export interface RmChannelHubOptions {
  nodeId: string;
  logger: Logger;
  /** Whether this node may take RM channels now (it holds the Raft leader role). */
  acceptsChannels: () => boolean;
  /** The NOT_LEADER error to answer when it does not. */
  notLeader: () => WireError;
  heartbeatIntervalMs?: number;
  phaseTwoTimeoutMs?: number;
  maxChannels?: number;
  maxInflightPerRm?: number;
  /** Default RM_RECONNECT_GRACE_MS. */
  reconnectGraceMs?: number;
  now?: () => number;
  /** Registered channels one application may hold (security.quotas); default no bound. */
  maxChannelsOf?: (applicationId: string) => number;
}

interface Pending {
  xid: string;
  branchId: string;
  resolve: (status: BranchStatus) => void;
  reject: (err: Error) => void;
  /** Cancels its call timeout (on the hub's deadline wheel). */
  cancelTimeout: CancelDeadline;
}

interface Channel {
  seq: number;
  stream: RmStream;
  peer: string;
  openedAt: number;
  lastHeardAt: number;
  /** Who opened the channel (auth.ts): null in insecure mode. */
  caller: Caller;
  /** Set once the RM registered. */
  clientId: string | null;
  applicationId: string;
  group: string;
  resourceIds: Set<string>;
  inflight: Map<string, Pending>;
  /** Its stream's buffer is full (write() said false) until 'drain'; null while it drains. */
  congestion: Congestion | null;
  /** Calls waiting for its congestion to end (counted against the in-flight bound). */
  waiting: number;
  closed: boolean;
  /** Its RM reads phase-two batches (RmRegister.batches). */
  batches: boolean;
  /** Calls of this turn not written yet (batches only); written at the turn's end. */
  outbox: BatchedRequest[];
  flushScheduled: boolean;
}

/** One spell of a channel's congestion: from write() saying false to 'drain' (or the drop). */
interface Congestion {
  /**
   * Resolves when the spell ends ('drain', the channel's drop) or when it has lasted
   * RM_CHANNEL_DRAIN_WAIT_MS (then `stuck`).
   */
  settled: Promise<void>;
  /** It lasted RM_CHANNEL_DRAIN_WAIT_MS: the RM does not read; calls fail at once. */
  stuck: boolean;
  /** Ends the spell's wait (at the channel's drop). */
  end: () => void;
}

/** Hears every RM registration: its application and the resources it serves. */
export type RmRegisteredListener = (applicationId: string, resourceIds: readonly string[]) => void;

/** An RM's explanation of a failed phase-two status (BranchResult.message, ≤ 2 KiB). */
export interface RmBranchMessage {
  xid: string;
  branchId: string;
  clientId: string;
  status: BranchStatus;
  message: string;
}
export type RmMessageListener = (m: RmBranchMessage) => void;

export interface RmHubStats {
  channels: number;
  registered: number;
  inflight: number;
  /** Registered channels whose stream does not drain. */
  congested: number;
  /** Phase-two calls written to RM channels since the start. */
  sent: number;
  /** Messages those calls travelled in (one per call to an RM without batches). */
  sentMessages: number;
  /** Results received from RMs, and the messages they came in. */
  results: number;
  resultMessages: number;
  resources: number;
}

export class RmChannelHub implements BranchGateway {
  /** Phase-two calls written since the start (stats: what congestion holds back). */
  private sent = 0;
  private sentMessages = 0;
  private results = 0;
  private resultMessages = 0;
  readonly heartbeatIntervalMs: number;
  readonly phaseTwoTimeoutMs: number;
  private readonly opts: RmChannelHubOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxChannels: number;
  private readonly maxInflightPerRm: number;
  private readonly channels = new Set<Channel>();
  private readonly byClient = new Map<string, Channel>();
  /** Registered channels by routeKey(application, resource id). */
  private readonly byRoute = new Map<string, Set<Channel>>();
  private readonly registeredListeners = new Set<RmRegisteredListener>();
  private readonly messageListeners = new Set<RmMessageListener>();
  private seq = 0;
  private requestSeq = 0;
  private roundRobin = 0;
  private timer: NodeJS.Timeout | null = null;
  /** The phase-two calls' timeouts: one timer for all (not a setTimeout per call). */
  private readonly deadlines = new DeadlineWheel();
  private closed = false;
  private readonly reconnectGraceMs: number;
  /**
   * Until then (epoch ms) calls that find no RM of the branch's application wait for one to
   * register.
   */
  private graceUntil = 0;
  /** Calls waiting for an RM of an application and resource to register, by routeKey. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private waiterCount = 0;

  constructor(options: RmChannelHubOptions) {
    this.opts = options;
    this.log = options.logger.child({ component: 'rm-hub' });
    this.now = options.now ?? (() => Date.now());
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_RM_HEARTBEAT_INTERVAL_MS;
    this.phaseTwoTimeoutMs = options.phaseTwoTimeoutMs ?? DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS;
    this.maxChannels = options.maxChannels ?? MAX_RM_CHANNELS;
    this.maxInflightPerRm = options.maxInflightPerRm ?? MAX_INFLIGHT_PHASE_TWO_PER_RM;
    this.reconnectGraceMs = options.reconnectGraceMs ?? RM_RECONNECT_GRACE_MS;
    this.timer = setInterval(() => this.heartbeat(), this.heartbeatIntervalMs);
    this.timer.unref();
  }

  stats(): RmHubStats {
    let registered = 0;
    let inflight = 0;
    let congested = 0;
    for (const c of this.channels) {
      if (c.clientId !== null) registered++;
      if (c.congestion) congested++;
      inflight += c.inflight.size;
    }
    return {
      channels: this.channels.size,
      registered,
      inflight,
      congested,
      sent: this.sent,
      sentMessages: this.sentMessages,
      results: this.results,
      resultMessages: this.resultMessages,
      resources: this.byRoute.size,
    };
  }

  /**
   * A branch registered for `clientId` must name the application that client's RM channel
   * registered with (when it is connected here): a client id belongs to one application.
   * Throws BadRequestError otherwise. (Which application a caller may claim at all is for
   * authentication to say.)
   */
  checkApplication(clientId: string, applicationId: string): void {
    const registered = this.byClient.get(clientId)?.applicationId;
    if (registered !== undefined && registered !== applicationId)
      throw new BadRequestError(
        `client ${clientId} registered its RM channel for application ${registered}, not ${applicationId}`,
      );
  }

  /** Calls `listener` after every RM registration. Returns the unsubscribe function. */
  onRmRegistered(listener: RmRegisteredListener): () => void {
    this.registeredListeners.add(listener);
    return () => this.registeredListeners.delete(listener);
  }

  /** Calls `listener` with every RM message on a phase-two result. Returns the unsubscribe. */
  onRmMessage(listener: RmMessageListener): () => void {
    this.messageListeners.add(listener);
    return () => this.messageListeners.delete(listener);
  }

  /** The RmChannel handler: one call per connected RM. Never throws. */
  handle(stream: RmStream, caller: Caller = null): void {
    const peer = safePeer(stream);
    if (this.closed) {
      this.refuse(stream, {
        code: 'ERROR_CODE_UNAVAILABLE',
        message: 'the node is stopping',
        retryable: true,
      });
      return;
    }
    if (this.channels.size >= this.maxChannels) {
      this.log.warn({ peer, max: this.maxChannels }, 'RM channel refused: too many channels');
      this.refuse(stream, {
        code: 'ERROR_CODE_UNAVAILABLE',
        message: `this node holds ${this.maxChannels} RM channels, the limit`,
        retryable: true,
      });
      return;
    }
    const now = this.now();
    const channel: Channel = {
      seq: ++this.seq,
      stream,
      peer,
      openedAt: now,
      lastHeardAt: now,
      caller,
      clientId: null,
      applicationId: '',
      group: '',
      resourceIds: new Set(),
      inflight: new Map(),
      congestion: null,
      waiting: 0,
      closed: false,
      batches: false,
      outbox: [],
      flushScheduled: false,
    };
    this.channels.add(channel);
    stream.on('data', (msg: RmToTcWire) => this.onMessage(channel, msg));
    stream.on('end', () => this.drop(channel, 'the RM ended the stream', false));
    stream.on('error', (err: Error) => this.drop(channel, `stream error: ${err.message}`, false));
    stream.on('cancelled', () => this.drop(channel, 'the RM cancelled the stream', false));
    stream.on('close', () => this.drop(channel, 'stream closed', false));
  }

  /**
   * This node just became leader: the RMs of the old leader are on their way. Phase-two
   * calls of the new leader's first pass wait for them briefly rather than failing into
   * a retry backoff that would delay every re-driven transaction by seconds.
   */
  leadershipGained(): void {
    this.graceUntil = this.now() + this.reconnectGraceMs;
  }

  /**
   * Closes every channel with `error` (e.g. NOT_LEADER when leadership is lost): RMs reconnect
   * elsewhere.
   */
  closeAll(error: WireError): void {
    for (const c of [...this.channels]) this.drop(c, error.message, true, error);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.graceUntil = 0;
    for (const set of [...this.waiters.values()]) for (const wake of [...set]) wake();
    this.closeAll({
      code: 'ERROR_CODE_UNAVAILABLE',
      message: 'the node is stopping',
      retryable: true,
    });
  }

  // -------------------------------------------------------------------------------------
  // BranchGateway

  commitBranch(branch: BranchSession): Promise<BranchStatus> {
    return this.call(branch, 'commit');
  }

  rollbackBranch(branch: BranchSession): Promise<BranchStatus> {
    return this.call(branch, 'rollback');
  }

  private async call(branch: BranchSession, kind: 'commit' | 'rollback'): Promise<BranchStatus> {
    let choice = this.route(branch);
    if (
      choice.channel === null &&
      choice.why === 'no-rm' &&
      branch.applicationId !== '' &&
      this.now() < this.graceUntil &&
      this.waiterCount < MAX_RM_WAITERS
    ) {
      await this.waitForRoute(
        routeKey(branch.applicationId, branch.resourceId),
        this.graceUntil - this.now(),
      );
      choice = this.route(branch);
    }
    // Every RM of the branch is congested or full: wait for a congested one to drain, for as
    // long as its spells of congestion end in a drain (each one is progress).
    while (choice.channel === null && choice.why === 'busy') {
      const congested = this.route(branch, true).channel;
      const spell = congested?.congestion;
      if (!congested || !spell || spell.stuck) break;
      congested.waiting += 1;
      try {
        await spell.settled;
      } finally {
        congested.waiting -= 1;
      }
      choice = this.route(branch);
    }
    if (choice.channel !== null) return this.send(choice.channel, branch, kind);
    if (choice.why === 'busy') throw this.busyError(branch);
    throw new ApplicationRmUnavailableError(
      branch.applicationId,
      branch.resourceId,
      branch.applicationId === ''
        ? `RM ${branch.clientId}, which registered branch ${branch.branchId} before branches kept their application, is not connected (only it may run the branch)`
        : undefined,
    );
  }

  /** Why no RM of the branch can take a call: every one is full, or does not read. */
  private busyError(branch: BranchSession): RmUnavailableError {
    const application = branch.applicationId || '(unrecorded)';
    const stuck = this.route(branch, true).channel?.congestion?.stuck === true;
    return new RmUnavailableError(
      branch.resourceId,
      stuck
        ? `the RM channel of application ${application} serving resource ${branch.resourceId} has not drained for ${RM_CHANNEL_DRAIN_WAIT_MS} ms: its RM does not read`
        : `every RM of application ${application} serving resource ${branch.resourceId} has ${this.maxInflightPerRm} phase-two calls in flight`,
    );
  }

  /**
   * The RM for a branch's phase two, inside the branch's application only (rm-route.ts): one
   * that can take a call now, or (`congestedToo`) one that could once it drains.
   */
  private route(branch: BranchSession, congestedToo = false) {
    return chooseRm(
      branch,
      this.byClient.get(branch.clientId),
      this.byRoute.get(routeKey(branch.applicationId, branch.resourceId)) ?? [],
      congestedToo
        ? (c) => !c.closed && c.inflight.size + c.waiting < this.maxInflightPerRm
        : (c) => !c.closed && c.congestion === null && c.inflight.size < this.maxInflightPerRm,
      this.roundRobin++,
    );
  }

  private send(
    channel: Channel,
    branch: BranchSession,
    kind: 'commit' | 'rollback',
  ): Promise<BranchStatus> {
    const requestId = `${this.opts.nodeId}-${++this.requestSeq}`;
    const request: PhaseTwoRequestWire = {
      requestId,
      xid: branch.xid,
      branchId: branch.branchId,
      branchType: branchTypeToCode(branch.type),
      resourceId: branch.resourceId,
      applicationData: branch.applicationData,
      // A branch that recorded no application goes only to the RM that registered it.
      applicationId: branch.applicationId || channel.applicationId,
    };
    return new Promise<BranchStatus>((resolve, reject) => {
      const cancelTimeout = this.deadlines.after(this.phaseTwoTimeoutMs, () => {
        if (channel.inflight.delete(requestId)) {
          reject(
            new TimeoutError(
              `RM ${channel.clientId} did not answer ${kind} of branch ${branch.branchId} within ${this.phaseTwoTimeoutMs} ms`,
            ),
          );
        }
      });
      channel.inflight.set(requestId, {
        xid: branch.xid,
        branchId: branch.branchId,
        resolve,
        reject,
        cancelTimeout,
      });
      if (channel.batches) this.enqueue(channel, kind, request);
      else {
        this.sent++;
        this.sentMessages++;
        this.write(
          channel,
          kind === 'commit' ? { branchCommit: request } : { branchRollback: request },
        );
      }
      this.log.debug(
        { xid: branch.xid, branchId: branch.branchId, kind, clientId: channel.clientId, requestId },
        'phase-two request sent',
      );
    });
  }

  /** Queues a call for the channel's batch of this turn (written by flush, at the turn's end). */
  private enqueue(channel: Channel, kind: 'commit' | 'rollback', request: PhaseTwoRequestWire) {
    channel.outbox.push({ kind, request });
    if (channel.flushScheduled) return;
    channel.flushScheduled = true;
    setImmediate(() => this.flush(channel));
  }

  /** Writes the calls of this turn: one message per batch's bounds (a lone call as itself). */
  private flush(channel: Channel): void {
    channel.flushScheduled = false;
    // A call that timed out meanwhile is not sent; a dropped channel failed them all already.
    const outbox = channel.outbox.filter((e) => channel.inflight.has(e.request.requestId));
    channel.outbox = [];
    if (channel.closed) return;
    for (const run of batchRuns(outbox, (e) => rmRequestBytes(e.request))) {
      this.sent += run.length;
      this.sentMessages++;
      if (run.length === 1) {
        const { kind, request } = run[0]!;
        this.write(
          channel,
          kind === 'commit' ? { branchCommit: request } : { branchRollback: request },
        );
        continue;
      }
      const commits: PhaseTwoRequestWire[] = [];
      const rollbacks: PhaseTwoRequestWire[] = [];
      for (const e of run) (e.kind === 'commit' ? commits : rollbacks).push(e.request);
      this.write(channel, { phaseTwoBatch: { commits, rollbacks } });
    }
  }

  /**
   * Resolves when an RM of the application serving the resource (its routeKey) registers, or after
   * `ms`.
   */
  private waitForRoute(key: string, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.waiters.get(key);
      if (!set) this.waiters.set(key, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        if (set.delete(done)) this.waiterCount--;
        if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      timer.unref();
      set.add(done);
      this.waiterCount++;
    });
  }

  // -------------------------------------------------------------------------------------
  // Messages

  private onMessage(channel: Channel, msg: RmToTcWire): void {
    if (channel.closed) return;
    channel.lastHeardAt = this.now();
    try {
      switch (msg.message) {
        case 'register':
          this.register(channel, msg.register);
          return;
        case 'branchResult':
          this.result(channel, msg.branchResult);
          return;
        case 'branchResults':
          this.resultBatch(channel, msg.branchResults);
          return;
        case 'ping':
          this.write(channel, { pong: { sentAtMs: msg.ping?.sentAtMs ?? 0 } });
          return;
        case 'pong':
          return;
        default:
          throw new BadRequestError(
            'an RmToTc message must set one of register, branch_result, branch_results, ping, pong',
          );
      }
    } catch (err) {
      // A client's bad message ends its channel; it never takes the node down.
      const message = err instanceof ConcordError ? err.message : 'internal error';
      if (!(err instanceof ConcordError))
        this.log.error({ err, peer: channel.peer }, 'RM channel message handling failed');
      this.drop(channel, message, true, {
        code:
          err instanceof BadRequestError
            ? 'ERROR_CODE_BAD_REQUEST'
            : err instanceof UnauthorizedError
              ? 'ERROR_CODE_PERMISSION_DENIED'
              : err instanceof CapacityError
                ? 'ERROR_CODE_CAPACITY'
                : 'ERROR_CODE_INTERNAL',
        message,
        retryable: false,
      });
    }
  }

  private register(channel: Channel, reg: RmRegisterWire | undefined): void {
    if (channel.clientId !== null)
      throw new BadRequestError('this RM channel is already registered');
    const { clientId, applicationId, group, ids } = validateRegister(reg);
    if (!this.opts.acceptsChannels()) {
      this.write(channel, {
        registered: {
          resultCode: FAILED,
          error: this.opts.notLeader(),
          heartbeatIntervalMs: this.heartbeatIntervalMs,
          nodeId: this.opts.nodeId,
        },
      });
      this.drop(channel, 'not the leader', false);
      return;
    }
    // An RM registers for its own application, and a client id belongs to one principal:
    // a second registration of it by another principal is refused, not an eviction.
    requireApp(channel.caller, applicationId, 'an RM channel');
    requireOwnClientId(channel.caller, clientId);
    const previous = this.byClient.get(clientId);
    if (previous && previous !== channel && !samePrincipal(previous.caller, channel.caller))
      throw new UnauthorizedError(
        `client id ${clientId} is registered by another principal; choose another client id`,
      );
    this.requireQuota(applicationId, previous);
    if (previous && previous !== channel) {
      this.drop(previous, `replaced by a newer channel of ${clientId}`, true, {
        code: 'ERROR_CODE_UNAVAILABLE',
        message: 'replaced by a newer channel of the same client id',
        retryable: true,
      });
    }
    channel.clientId = clientId;
    channel.applicationId = applicationId;
    channel.group = group;
    channel.resourceIds = new Set(ids);
    channel.batches = reg?.batches === true;
    this.byClient.set(clientId, channel);
    for (const id of channel.resourceIds) {
      const key = routeKey(applicationId, id);
      let set = this.byRoute.get(key);
      if (!set) this.byRoute.set(key, (set = new Set()));
      set.add(channel);
    }
    this.write(channel, {
      registered: {
        resultCode: OK,
        error: null,
        heartbeatIntervalMs: this.heartbeatIntervalMs,
        nodeId: this.opts.nodeId,
        batches: true,
      },
    });
    this.log.info(
      {
        clientId,
        applicationId,
        group,
        resources: ids.length,
        batches: channel.batches,
        peer: channel.peer,
      },
      'RM registered',
    );
    for (const id of channel.resourceIds)
      for (const wake of [...(this.waiters.get(routeKey(applicationId, id)) ?? [])]) wake();
    this.announceRegistered(applicationId, ids);
  }

  /** The application's channels (but `previous`, which this one replaces) are within quota. */
  private requireQuota(applicationId: string, previous: Channel | undefined): void {
    const quota = this.opts.maxChannelsOf?.(applicationId) ?? Infinity;
    if (quota === Infinity) return;
    let held = 0;
    for (const c of this.byClient.values())
      if (c.applicationId === applicationId && c !== previous) held++;
    if (held >= quota)
      throw new CapacityError(
        `application ${applicationId} holds ${held} RM channels, its quota; close one or raise security.quotas`,
      );
  }

  private announceRegistered(applicationId: string, resourceIds: readonly string[]): void {
    for (const listener of [...this.registeredListeners]) {
      try {
        listener(applicationId, resourceIds);
      } catch (err) {
        this.log.error({ err, applicationId }, 'an RM registration listener failed');
      }
    }
  }

  private result(channel: Channel, r: RmToTcWire['branchResult']): void {
    if (channel.clientId === null) throw new BadRequestError('register before sending results');
    if (!r || typeof r.requestId !== 'string')
      throw new BadRequestError('branch_result lacks a request id');
    this.resultMessages++;
    this.take(channel, channel.clientId, r);
  }

  /**
   * A batch of results: checked whole first (MalformedBatchError ends the channel, and no
   * call of the batch is resolved), then each is taken as a single result would be.
   */
  private resultBatch(channel: Channel, batch: RmToTcWire['branchResults']): void {
    if (channel.clientId === null) throw new BadRequestError('register before sending results');
    const results = checkResultBatch(batch);
    this.resultMessages++;
    for (const r of results) this.take(channel, channel.clientId, r);
  }

  /** One result: resolves (or fails) the call it answers; a late or unknown one is dropped. */
  private take(channel: Channel, clientId: string, r: BranchResultWire): void {
    this.results++;
    const pending = channel.inflight.get(r.requestId);
    // A late answer (after the timeout) or a duplicate: nothing waits for it.
    if (!pending) return;
    channel.inflight.delete(r.requestId);
    pending.cancelTimeout();
    if (r.error) {
      if (r.error.code === 'ERROR_CODE_BAD_REQUEST')
        this.log.error(
          { clientId, applicationId: channel.applicationId, error: r.error },
          'an RM refused a phase-two request as not its own (a wrong application, type or resource)',
        );
      pending.reject(
        new RmCallFailedError(
          clientId,
          `RM ${clientId} failed the phase-two call: ${String(r.error.message).slice(0, 512)}`,
        ),
      );
      return;
    }
    const status = branchStatusOfCode(r.branchStatus);
    if (status === null) {
      pending.reject(
        new RmCallFailedError(
          clientId,
          `RM ${clientId} answered ${String(r.branchStatus)}, which is no branch status`,
        ),
      );
      return;
    }
    if (typeof r.message === 'string' && r.message !== '')
      this.rmMessage(clientId, pending, status, r.message);
    // The coordinator checks that it is a phase-two status of the right decision.
    pending.resolve(status);
  }

  /** Logs an RM's message (here, on the leader) and hands it to the listeners (the console). */
  private rmMessage(clientId: string, p: Pending, status: BranchStatus, text: string): void {
    const m = { xid: p.xid, branchId: p.branchId, clientId, status, message: boundRmMessage(text) };
    const fields = { xid: m.xid, branchId: m.branchId, clientId, status, rmMessage: m.message };
    if (status.includes('Unretryable'))
      this.log.error(fields, 'phase two failed unretryably; the RM says why');
    else this.log.warn(fields, 'phase-two result with a message from the RM');
    for (const listener of [...this.messageListeners]) {
      try {
        listener(m);
      } catch (err) {
        this.log.error({ err, xid: m.xid }, 'an RM message listener failed');
      }
    }
  }

  // -------------------------------------------------------------------------------------

  private heartbeat(): void {
    const now = this.now();
    const deadAfter = DEAD_AFTER_HEARTBEATS * this.heartbeatIntervalMs;
    for (const c of [...this.channels]) {
      if (c.clientId === null && now - c.openedAt > RM_REGISTER_TIMEOUT_MS) {
        this.drop(c, 'no registration in time', true, {
          code: 'ERROR_CODE_BAD_REQUEST',
          message: `register within ${RM_REGISTER_TIMEOUT_MS} ms`,
          retryable: false,
        });
      } else if (now - c.lastHeardAt > deadAfter) {
        this.log.warn(
          { clientId: c.clientId, silentMs: now - c.lastHeardAt },
          'RM silent for too long; dropping its channel',
        );
        this.drop(c, 'silent peer', true, {
          code: 'ERROR_CODE_UNAVAILABLE',
          message: `no message for ${deadAfter} ms`,
          retryable: true,
        });
      } else if (!c.congestion) {
        this.write(c, { ping: { sentAtMs: now } });
      }
    }
  }

  private write(channel: Channel, msg: TcToRmWire): void {
    if (channel.closed) return;
    try {
      if (!channel.stream.write(msg) && !channel.congestion) this.congested(channel);
    } catch (err) {
      this.drop(channel, `write failed: ${(err as Error).message}`, false);
    }
  }

  /** Starts a spell of congestion: write() said false; it ends at 'drain'. */
  private congested(channel: Channel): void {
    let wake!: () => void;
    const settled = new Promise<void>((resolve) => (wake = resolve));
    const timer = setTimeout(() => {
      spell.stuck = true;
      this.log.debug(
        { clientId: channel.clientId, waitedMs: RM_CHANNEL_DRAIN_WAIT_MS },
        'RM channel does not drain: its RM does not read',
      );
      wake();
    }, RM_CHANNEL_DRAIN_WAIT_MS);
    timer.unref();
    const spell: Congestion = {
      settled,
      stuck: false,
      end: () => {
        clearTimeout(timer);
        wake();
      },
    };
    channel.congestion = spell;
    channel.stream.once('drain', () => {
      if (channel.congestion === spell) channel.congestion = null;
      spell.end();
    });
  }

  /**
   * Removes a channel (idempotent), fails its calls in flight, tells the RM why (goAway) if asked,
   * and ends the stream.
   */
  private drop(channel: Channel, reason: string, tell: boolean, error?: WireError): void {
    if (channel.closed) return;
    if (tell && error) this.write(channel, { goAway: { error } });
    channel.closed = true;
    this.channels.delete(channel);
    if (channel.clientId !== null) {
      if (this.byClient.get(channel.clientId) === channel) this.byClient.delete(channel.clientId);
      for (const id of channel.resourceIds) {
        const key = routeKey(channel.applicationId, id);
        const set = this.byRoute.get(key);
        set?.delete(channel);
        if (set && set.size === 0) this.byRoute.delete(key);
      }
      this.log.info(
        { clientId: channel.clientId, reason, failedCalls: channel.inflight.size },
        'RM channel closed',
      );
    }
    for (const [, pending] of channel.inflight) {
      pending.cancelTimeout();
      pending.reject(
        new RmUnavailableError(
          '',
          `the RM channel of ${channel.clientId ?? channel.peer} closed (${reason}) before it answered`,
        ),
      );
    }
    channel.inflight.clear();
    channel.congestion?.end();
    // End our side too: a channel is over once either side is done with it.
    try {
      channel.stream.end();
    } catch {
      // already gone
    }
  }

  private refuse(stream: RmStream, error: WireError): void {
    try {
      stream.write({ goAway: { error } });
      stream.end();
    } catch {
      // already gone
    }
  }
}

function requireName(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_NAME_CHARS) {
    throw new BadRequestError(`${field} must be 1..${MAX_NAME_CHARS} characters`);
  }
  return value;
}

function safePeer(stream: RmStream): string {
  try {
    return stream.getPeer();
  } catch {
    return 'unknown';
  }
}

/** A register message from an RM (untrusted): its names and resource ids, checked. */
function validateRegister(reg: RmRegisterWire | undefined): {
  clientId: string;
  applicationId: string;
  group: string;
  ids: string[];
} {
  if (!reg) throw new BadRequestError('register is empty');
  const clientId = requireName(reg.clientId, 'clientId');
  const applicationId = requireName(reg.applicationId, 'applicationId');
  const group =
    typeof reg.transactionServiceGroup === 'string' &&
    reg.transactionServiceGroup.length <= MAX_NAME_CHARS
      ? reg.transactionServiceGroup
      : null;
  if (group === null)
    throw new BadRequestError(
      `transactionServiceGroup must be at most ${MAX_NAME_CHARS} characters`,
    );
  const ids = Array.isArray(reg.resourceIds) ? reg.resourceIds : [];
  if (ids.length === 0 || ids.length > MAX_RESOURCES_PER_RM)
    throw new BadRequestError(
      `an RM must register 1..${MAX_RESOURCES_PER_RM} resource ids, not ${ids.length}`,
    );
  for (const id of ids) {
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_RESOURCE_ID_CHARS) {
      throw new BadRequestError(`every resource id must be 1..${MAX_RESOURCE_ID_CHARS} characters`);
    }
  }
  return { clientId, applicationId, group, ids: ids as string[] };
}
