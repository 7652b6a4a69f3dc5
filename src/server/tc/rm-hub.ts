/**
 * The RM channel hub: every RM connected to this node over the long-lived `RmChannel`
 * stream, indexed by client id and by resource id, and the coordinator's BranchGateway on
 * top of it — BranchCommit / BranchRollback requests go out on a channel and the RM's
 * `branch_result` (correlated by request id) resolves the call.
 *
 * Picking an RM for a branch (as Seata does): the RM that registered the branch (its
 * client id) if it is connected and serves the resource; else an RM of the same
 * application serving the resource; else any RM serving the resource. RMs must make phase
 * two idempotent (a branch may be told twice: a retry, a new leader re-driving), so any RM
 * of the resource may run it.
 *
 * Every failure is a REJECTION the coordinator treats as retryable (no RM, RM at its
 * in-flight bound, timeout, channel lost, RM error): phase two is retried with backoff.
 * One exception to failing at once: for RM_RECONNECT_GRACE_MS after this node becomes
 * leader, a call for a resource no RM serves yet waits for one to register — the RMs of
 * the old leader are reconnecting, and the re-driven transactions would otherwise all
 * fall into the retry backoff (1 s, 2 s, 4 s, ...) right after every failover.
 *
 * Bounded: MAX_RM_CHANNELS channels (registered or not yet), MAX_RESOURCES_PER_RM per
 * channel, MAX_INFLIGHT_PHASE_TWO_PER_RM calls in flight per channel, a per-call timeout.
 * Heartbeats: the hub pings every channel each interval and drops one silent for
 * DEAD_AFTER_HEARTBEATS intervals (any message counts as a sign of life).
 */
import type * as grpc from '@grpc/grpc-js';
import {
  MAX_NAME_CHARS,
  MAX_RESOURCE_ID_CHARS,
  branchTypeToCode,
  type BranchGateway,
  type BranchSession,
  type BranchStatus,
} from '../../coordinator/index.ts';
import { BadRequestError, ConcordError, TimeoutError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { RmCallFailedError, RmUnavailableError } from './errors.ts';
import {
  DEAD_AFTER_HEARTBEATS,
  DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS,
  DEFAULT_RM_HEARTBEAT_INTERVAL_MS,
  MAX_INFLIGHT_PHASE_TWO_PER_RM,
  MAX_REMEMBERED_RM_CLIENTS,
  MAX_RESOURCES_PER_RM,
  MAX_RM_CHANNELS,
  MAX_RM_WAITERS,
  RM_RECONNECT_GRACE_MS,
  RM_REGISTER_TIMEOUT_MS,
} from './limits.ts';
import { FAILED, OK, branchStatusOfCode } from './mapping.ts';
import type {
  PhaseTwoRequestWire,
  RmRegisterWire,
  RmToTcWire,
  TcToRmWire,
  WireError,
} from './proto.ts';

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
}

interface Pending {
  resolve: (status: BranchStatus) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface Channel {
  seq: number;
  stream: RmStream;
  peer: string;
  openedAt: number;
  lastHeardAt: number;
  /** Set once the RM registered. */
  clientId: string | null;
  applicationId: string;
  group: string;
  resourceIds: Set<string>;
  inflight: Map<string, Pending>;
  closed: boolean;
}

export interface RmHubStats {
  channels: number;
  registered: number;
  inflight: number;
  resources: number;
}

export class RmChannelHub implements BranchGateway {
  readonly heartbeatIntervalMs: number;
  readonly phaseTwoTimeoutMs: number;
  private readonly opts: RmChannelHubOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxChannels: number;
  private readonly maxInflightPerRm: number;
  private readonly channels = new Set<Channel>();
  private readonly byClient = new Map<string, Channel>();
  private readonly byResource = new Map<string, Set<Channel>>();
  /** clientId → applicationId of RMs seen, oldest first (bounded). */
  private readonly knownClients = new Map<string, string>();
  private seq = 0;
  private requestSeq = 0;
  private roundRobin = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly reconnectGraceMs: number;
  /** Until then (epoch ms) calls for a resource no RM serves wait for one to register. */
  private graceUntil = 0;
  /** Calls waiting for an RM of a resource to register, by resource id. */
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
    for (const c of this.channels) {
      if (c.clientId !== null) registered++;
      inflight += c.inflight.size;
    }
    return { channels: this.channels.size, registered, inflight, resources: this.byResource.size };
  }

  /** The RmChannel handler: one call per connected RM. Never throws. */
  handle(stream: RmStream): void {
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
      clientId: null,
      applicationId: '',
      group: '',
      resourceIds: new Set(),
      inflight: new Map(),
      closed: false,
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

  /** Closes every channel with `error` (e.g. NOT_LEADER when leadership is lost): RMs reconnect elsewhere. */
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
    let channel = this.pick(branch);
    if (
      !channel &&
      !this.byResource.has(branch.resourceId) &&
      this.now() < this.graceUntil &&
      this.waiterCount < MAX_RM_WAITERS
    ) {
      await this.waitForResource(branch.resourceId, this.graceUntil - this.now());
      channel = this.pick(branch);
    }
    if (!channel) {
      const serving = this.byResource.get(branch.resourceId)?.size ?? 0;
      throw new RmUnavailableError(
        branch.resourceId,
        serving === 0
          ? `no RM serving resource ${branch.resourceId} is connected`
          : `every RM serving resource ${branch.resourceId} has ${this.maxInflightPerRm} phase-two calls in flight`,
      );
    }
    return this.send(channel, branch, kind);
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
    };
    return new Promise<BranchStatus>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (channel.inflight.delete(requestId)) {
          reject(
            new TimeoutError(
              `RM ${channel.clientId} did not answer ${kind} of branch ${branch.branchId} within ${this.phaseTwoTimeoutMs} ms`,
            ),
          );
        }
      }, this.phaseTwoTimeoutMs);
      timer.unref();
      channel.inflight.set(requestId, { resolve, reject, timer });
      this.write(
        channel,
        kind === 'commit' ? { branchCommit: request } : { branchRollback: request },
      );
      this.log.debug(
        { xid: branch.xid, branchId: branch.branchId, kind, clientId: channel.clientId, requestId },
        'phase-two request sent',
      );
    });
  }

  /** Resolves when an RM serving `resourceId` registers, or after `ms`. */
  private waitForResource(resourceId: string, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.waiters.get(resourceId);
      if (!set) this.waiters.set(resourceId, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        if (set.delete(done)) this.waiterCount--;
        if (set.size === 0 && this.waiters.get(resourceId) === set) this.waiters.delete(resourceId);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      timer.unref();
      set.add(done);
      this.waiterCount++;
    });
  }

  /** The original RM, then one of its application, then any (round robin), skipping full ones. */
  private pick(branch: BranchSession): Channel | null {
    const serving = this.byResource.get(branch.resourceId);
    if (!serving || serving.size === 0) return null;
    const usable = (c: Channel) => !c.closed && c.inflight.size < this.maxInflightPerRm;
    const original = this.byClient.get(branch.clientId);
    if (original && original.resourceIds.has(branch.resourceId) && usable(original))
      return original;
    const candidates = [...serving].filter(usable);
    if (candidates.length === 0) return null;
    const application = original?.applicationId ?? this.knownClients.get(branch.clientId);
    const siblings =
      application === undefined ? [] : candidates.filter((c) => c.applicationId === application);
    const pool = siblings.length > 0 ? siblings : candidates;
    return pool[this.roundRobin++ % pool.length]!;
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
        case 'ping':
          this.write(channel, { pong: { sentAtMs: msg.ping?.sentAtMs ?? 0 } });
          return;
        case 'pong':
          return;
        default:
          throw new BadRequestError(
            'an RmToTc message must set one of register, branch_result, ping, pong',
          );
      }
    } catch (err) {
      // A client's bad message ends its channel; it never takes the node down.
      const message = err instanceof ConcordError ? err.message : 'internal error';
      if (!(err instanceof ConcordError))
        this.log.error({ err, peer: channel.peer }, 'RM channel message handling failed');
      this.drop(channel, message, true, {
        code: err instanceof BadRequestError ? 'ERROR_CODE_BAD_REQUEST' : 'ERROR_CODE_INTERNAL',
        message,
        retryable: false,
      });
    }
  }

  private register(channel: Channel, reg: RmRegisterWire | undefined): void {
    if (channel.clientId !== null)
      throw new BadRequestError('this RM channel is already registered');
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
        throw new BadRequestError(
          `every resource id must be 1..${MAX_RESOURCE_ID_CHARS} characters`,
        );
      }
    }
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
    const previous = this.byClient.get(clientId);
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
    this.byClient.set(clientId, channel);
    for (const id of channel.resourceIds) {
      let set = this.byResource.get(id);
      if (!set) this.byResource.set(id, (set = new Set()));
      set.add(channel);
    }
    this.knownClients.delete(clientId);
    this.knownClients.set(clientId, applicationId);
    while (this.knownClients.size > MAX_REMEMBERED_RM_CLIENTS)
      this.knownClients.delete(this.knownClients.keys().next().value!);
    this.write(channel, {
      registered: {
        resultCode: OK,
        error: null,
        heartbeatIntervalMs: this.heartbeatIntervalMs,
        nodeId: this.opts.nodeId,
      },
    });
    this.log.info(
      { clientId, applicationId, group, resources: ids.length, peer: channel.peer },
      'RM registered',
    );
    for (const id of channel.resourceIds)
      for (const wake of [...(this.waiters.get(id) ?? [])]) wake();
  }

  private result(channel: Channel, r: RmToTcWire['branchResult']): void {
    if (channel.clientId === null) throw new BadRequestError('register before sending results');
    if (!r || typeof r.requestId !== 'string')
      throw new BadRequestError('branch_result lacks a request id');
    const pending = channel.inflight.get(r.requestId);
    // A late answer (after the timeout) or a duplicate: nothing waits for it.
    if (!pending) return;
    channel.inflight.delete(r.requestId);
    clearTimeout(pending.timer);
    if (r.error) {
      pending.reject(
        new RmCallFailedError(
          channel.clientId,
          `RM ${channel.clientId} failed the phase-two call: ${String(r.error.message).slice(0, 512)}`,
        ),
      );
      return;
    }
    const status = branchStatusOfCode(r.branchStatus);
    if (status === null) {
      pending.reject(
        new RmCallFailedError(
          channel.clientId,
          `RM ${channel.clientId} answered ${String(r.branchStatus)}, which is no branch status`,
        ),
      );
      return;
    }
    // The coordinator checks that it is a phase-two status of the right decision.
    pending.resolve(status);
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
      } else {
        this.write(c, { ping: { sentAtMs: now } });
      }
    }
  }

  private write(channel: Channel, msg: TcToRmWire): void {
    if (channel.closed) return;
    try {
      channel.stream.write(msg);
    } catch (err) {
      this.drop(channel, `write failed: ${(err as Error).message}`, false);
    }
  }

  /** Removes a channel (idempotent), fails its calls in flight, tells the RM why (goAway) if asked, and ends the stream. */
  private drop(channel: Channel, reason: string, tell: boolean, error?: WireError): void {
    if (channel.closed) return;
    if (tell && error) this.write(channel, { goAway: { error } });
    channel.closed = true;
    this.channels.delete(channel);
    if (channel.clientId !== null) {
      if (this.byClient.get(channel.clientId) === channel) this.byClient.delete(channel.clientId);
      for (const id of channel.resourceIds) {
        const set = this.byResource.get(id);
        set?.delete(channel);
        if (set && set.size === 0) this.byResource.delete(id);
      }
      this.log.info(
        { clientId: channel.clientId, reason, failedCalls: channel.inflight.size },
        'RM channel closed',
      );
    }
    for (const [, pending] of channel.inflight) {
      clearTimeout(pending.timer);
      pending.reject(
        new RmUnavailableError(
          '',
          `the RM channel of ${channel.clientId ?? channel.peer} closed (${reason}) before it answered`,
        ),
      );
    }
    channel.inflight.clear();
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
