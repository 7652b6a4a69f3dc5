/**
 * PeerTransport over gRPC (proto/raft.proto). Each node keeps ONE long-lived client
 * stream to each peer and writes batches of msgpackr-encoded Raft messages to it; the
 * peer's server side hands each decoded message to the driver.
 *
 * - Per peer, a bounded queue (messages and bytes): when full, the OLDEST message is
 *   dropped and counted. Raft retransmits, and the newest messages carry the newest
 *   state, so a dead peer costs a fixed amount of memory and nothing else.
 * - A broken stream is reopened after exponential backoff with jitter, once the channel
 *   is ready again (waitForReady), so messages are not poured into a dead connection.
 *   When a connect attempt fails or a stream breaks, the queue is emptied (counted as
 *   `peerDown`): a peer back from an outage gets at most one connect window of messages,
 *   not a backlog of stale appends — the leader's probe finds where it really stands.
 * - grpc-js send and receive limits are set explicitly on both client and server.
 * - Frames from unknown senders, addressed to another node, or that do not decode to a
 *   well-formed Message are dropped and logged (rate-limited); they never crash the node.
 * - Every frame carries the sender's cluster id and node identity (see node/identity.ts).
 *   A frame of another cluster, or from a member whose identity changed (its data dir was
 *   wiped), is refused and counted, and the sender's stream is ended with
 *   FAILED_PRECONDITION so that it logs why. `Identify` answers who this node is.
 * - With `tls` (transport/tls.ts) both ends present a certificate of the cluster's CA and
 *   the sender is the node its certificate names: a stream without a node certificate is
 *   refused (UNAUTHENTICATED), a frame claiming another sender is dropped and counted
 *   (`senderMismatch`).
 * - A message whose numbers only a forgery could carry (transport/bounds.ts) is dropped
 *   and counted (`outOfBounds`) before the core sees it.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { withCodecs } from '../../shared/wire-codecs.ts';
import { CODECS as RAFT_CODECS } from './raft-codecs.gen.ts';
import type { Message, NodeId } from '../core/types.ts';
import type { PeerTransport } from '../ports.ts';
import { AssertionFailure, assert } from '../../shared/errors.ts';
import { isNodeId } from '../../shared/ids.ts';
import { latencyTrace } from '../../shared/latency-trace.ts';
import type { Logger } from '../../shared/logger.ts';
import { checkMessageBounds, type BoundsView } from './bounds.ts';
import { decodeMessage, encodeMessage } from './codec.ts';
import {
  callerNodeId,
  channelCredentials,
  serverCredentials,
  tlsChannelOptions,
  type PeerTls,
} from './tls.ts';

export const RAFT_PROTO_PATH = fileURLToPath(new URL('../../../proto/raft.proto', import.meta.url));

export interface TransportLimits {
  /** grpc-js send and receive limit for one frame (a batch), both sides. */
  maxFrameBytes: number;
  /** Encoded messages per batch, by bytes. One larger message still travels alone. */
  maxBatchBytes: number;
  maxBatchMessages: number;
  /** Per-peer queue bounds; beyond either the oldest queued message is dropped. */
  maxQueuedMessagesPerPeer: number;
  maxQueuedBytesPerPeer: number;
  /** Stream reconnect backoff: base · 2^attempt, capped, with equal jitter. */
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  /** How long to wait for a peer's channel to become ready before backing off again. */
  connectTimeoutMs: number;
  /** A stream that lived this long resets the backoff. */
  streamHealthyAfterMs: number;
  /** HTTP/2 keepalive pings detect a silently dead peer. */
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  /** At most one log line per reason and peer in this interval (drops, malformed frames). */
  dropLogIntervalMs: number;
}

/** Room for the proto framing (ids, field tags) around the encoded messages of a batch. */
export const FRAME_OVERHEAD_BYTES = 4 * 1024;

export const DEFAULT_TRANSPORT_LIMITS: Readonly<TransportLimits> = Object.freeze({
  maxFrameBytes: 16 * 1024 * 1024,
  maxBatchBytes: 4 * 1024 * 1024,
  maxBatchMessages: 1024,
  maxQueuedMessagesPerPeer: 4096,
  maxQueuedBytesPerPeer: 64 * 1024 * 1024,
  reconnectBaseMs: 50,
  reconnectMaxMs: 2_000,
  connectTimeoutMs: 1_000,
  streamHealthyAfterMs: 1_000,
  keepaliveTimeMs: 10_000,
  keepaliveTimeoutMs: 5_000,
  dropLogIntervalMs: 5_000,
});

export interface GrpcTransportOptions {
  id: NodeId;
  /** host:port to listen on for peers' streams; port 0 picks a free one (see `port`). */
  listenAddress: string;
  logger: Logger;
  limits?: Partial<TransportLimits>;
  /** Jitter source; defaults to Math.random (the transport is an adapter, not the core). */
  random?: () => number;
  /** Mutual TLS (the CA, this node's certificate and key); null or absent: plaintext. */
  tls?: PeerTls | null;
}

export type DropReason = 'queueFull' | 'peerDown' | 'tooLarge' | 'unknownPeer' | 'self' | 'closed';
export type RejectReason =
  | 'unknownSender'
  | 'wrongReceiver'
  | 'malformed'
  | 'wrongCluster'
  | 'wrongIdentity'
  | 'unauthenticated'
  | 'senderMismatch'
  | 'outOfBounds';

/** Who this node is, stamped on every frame it sends. */
export interface NodeIdentity {
  clusterId: string;
  nodeUid: string;
}

/** The node's book of the identities its peers were seen with (node/identity.ts). */
export interface IdentityGuard {
  /** Whether a frame from `from` presenting identity `uid` is accepted (and remembered). */
  accept(from: NodeId, uid: string): boolean;
  /** The identity `id` was last seen with as a member, or null. */
  knownUid(id: NodeId): string | null;
}

/** What a peer answers to Identify. */
export interface IdentifyAnswer {
  nodeId: string;
  /** Empty while it has no cluster id. */
  clusterId: string;
  nodeUid: string;
  /** The identity the asking node was last seen with as a member; empty if never. */
  knownUid: string;
}

export interface TransportStats {
  sent: number;
  received: number;
  dropped: Record<DropReason, number>;
  rejected: Record<RejectReason, number>;
  reconnects: number;
  peers: Record<
    NodeId,
    { address: string; connected: boolean; queued: number; queuedBytes: number; dropped: number }
  >;
}

interface BatchFrame {
  from: string;
  to: string;
  messages: Buffer[];
  clusterId: string;
  fromUid: string;
}

type RaftTransportClient = grpc.Client & {
  Stream(
    callback: (err: grpc.ServiceError | null, summary?: unknown) => void,
  ): grpc.ClientWritableStream<BatchFrame>;
  Identify(
    request: { from: string },
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, answer?: IdentifyAnswer) => void,
  ): grpc.ClientUnaryCall;
};

/** Bounds on what an Identify answer may hold (they are short ids). */
export const MAX_IDENTIFY_FIELD_CHARS = 256;

/**
 * Asks the node at `address` who it is and whether it knows `from`. Resolves null if it
 * cannot be reached within `timeoutMs` or answers garbage; never rejects.
 */
export function identifyPeer(
  address: string,
  from: NodeId,
  timeoutMs: number,
  limits: Partial<TransportLimits> = {},
  tls: PeerTls | null = null,
): Promise<IdentifyAnswer | null> {
  const { client: Client } = loadService();
  const maxFrameBytes = limits.maxFrameBytes ?? DEFAULT_TRANSPORT_LIMITS.maxFrameBytes;
  const client = new Client(address, channelCredentials(tls, null), {
    ...tlsChannelOptions(tls),
    'grpc.max_send_message_length': maxFrameBytes,
    'grpc.max_receive_message_length': maxFrameBytes,
    'grpc.use_local_subchannel_pool': 1,
  }) as unknown as RaftTransportClient;
  return new Promise((resolve) => {
    client.Identify({ from }, { deadline: Date.now() + timeoutMs }, (err, answer) => {
      client.close();
      const ok = (x: unknown) => typeof x === 'string' && x.length <= MAX_IDENTIFY_FIELD_CHARS;
      if (
        err ||
        !answer ||
        !ok(answer.nodeId) ||
        !ok(answer.clusterId) ||
        !ok(answer.nodeUid) ||
        !ok(answer.knownUid)
      ) {
        resolve(null);
        return;
      }
      resolve({
        nodeId: answer.nodeId,
        clusterId: answer.clusterId,
        nodeUid: answer.nodeUid,
        knownUid: answer.knownUid,
      });
    });
  });
}

let serviceCache: {
  client: grpc.ServiceClientConstructor;
  service: grpc.ServiceDefinition;
} | null = null;

function loadService() {
  if (serviceCache) return serviceCache;
  const def = protoLoader.loadSync(RAFT_PROTO_PATH, {
    keepCase: false,
    longs: Number,
    defaults: true,
  });
  // The loader names the methods; the precompiled codecs (scripts/gen-codecs.mjs) serialize.
  const client = grpc.makeGenericClientConstructor(
    withCodecs(def['concord.raft.v1.RaftTransport'] as grpc.ServiceDefinition, RAFT_CODECS),
    'RaftTransport',
  ) as grpc.ServiceClientConstructor;
  serviceCache = { client, service: client.service };
  return serviceCache;
}

/** The generated RaftTransport client class (for tests that speak the raw wire). */
export function raftTransportClient(): grpc.ServiceClientConstructor {
  return loadService().client;
}

/**
 * Distinct keys a LogLimiter remembers; beyond it, it forgets them all (strangers pick the keys).
 */
export const MAX_LOG_LIMITER_KEYS = 1024;

/** At most one log line per key per interval, with the count of what was suppressed. */
class LogLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly intervalMs: number) {}
  /** Returns null to stay quiet, or the number of suppressed events since the last line. */
  check(key: string): number | null {
    const now = Date.now();
    const rec = this.last.get(key);
    if (rec && now - rec.at < this.intervalMs) {
      rec.suppressed++;
      return null;
    }
    if (!rec && this.last.size >= MAX_LOG_LIMITER_KEYS) this.last.clear();
    const suppressed = rec?.suppressed ?? 0;
    this.last.set(key, { at: now, suppressed: 0 });
    return suppressed;
  }
}

/** A FIFO of encoded messages bounded by count and bytes, dropping its oldest. */
class BoundedQueue {
  private items: Buffer[] = [];
  private head = 0;
  bytes = 0;
  constructor(
    private readonly maxItems: number,
    private readonly maxBytes: number,
  ) {}
  get length(): number {
    return this.items.length - this.head;
  }
  /** Adds an item; returns how many old items were dropped to make room. */
  push(item: Buffer): number {
    this.items.push(item);
    this.bytes += item.length;
    let dropped = 0;
    while (this.length > 1 && (this.length > this.maxItems || this.bytes > this.maxBytes)) {
      this.shift();
      dropped++;
    }
    return dropped;
  }
  peek(): Buffer | undefined {
    return this.items[this.head];
  }
  shift(): Buffer | undefined {
    const item = this.items[this.head];
    if (item === undefined) return undefined;
    this.items[this.head] = undefined as unknown as Buffer;
    this.head++;
    this.bytes -= item.length;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  clear(): number {
    const n = this.length;
    this.items = [];
    this.head = 0;
    this.bytes = 0;
    return n;
  }
}

class Peer {
  readonly queue: BoundedQueue;
  dropped = 0;
  private client: RaftTransportClient;
  private call: grpc.ClientWritableStream<BatchFrame> | null = null;
  private callOpenedAt = 0;
  private waitingDrain = false;
  private connecting = false;
  private backoffTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;

  constructor(
    readonly id: NodeId,
    readonly address: string,
    private readonly owner: GrpcTransport,
  ) {
    const limits = owner.limits;
    this.queue = new BoundedQueue(limits.maxQueuedMessagesPerPeer, limits.maxQueuedBytesPerPeer);
    const { client: Client } = loadService();
    this.client = new Client(address, channelCredentials(owner.tls, id), {
      ...tlsChannelOptions(owner.tls),
      'grpc.max_send_message_length': limits.maxFrameBytes,
      'grpc.max_receive_message_length': limits.maxFrameBytes,
      'grpc.initial_reconnect_backoff_ms': limits.reconnectBaseMs,
      'grpc.max_reconnect_backoff_ms': limits.reconnectMaxMs,
      'grpc.keepalive_time_ms': limits.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': limits.keepaliveTimeoutMs,
      'grpc.keepalive_permit_without_calls': 1,
      // Each peer gets its own channel, never shared with another Peer object.
      'grpc.use_local_subchannel_pool': 1,
    }) as unknown as RaftTransportClient;
  }

  get connected(): boolean {
    return this.call !== null;
  }

  /** Queues one encoded message; the caller pumps once it has queued a whole send() worth. */
  enqueue(bytes: Buffer): void {
    const dropped = this.queue.push(bytes);
    if (dropped > 0) {
      this.dropped += dropped;
      this.owner.countDrop('queueFull', this.id, dropped);
    }
  }

  pump(): void {
    if (this.closed) return;
    if (this.call === null) {
      this.connect();
      return;
    }
    const limits = this.owner.limits;
    while (!this.waitingDrain && this.queue.length > 0) {
      const messages: Buffer[] = [];
      let bytes = 0;
      for (let next = this.queue.peek(); next !== undefined; next = this.queue.peek()) {
        if (
          messages.length > 0 &&
          (messages.length >= limits.maxBatchMessages || bytes + next.length > limits.maxBatchBytes)
        )
          break;
        messages.push(this.queue.shift()!);
        bytes += next.length;
      }
      this.owner.stats.sent += messages.length;
      latencyTrace?.('t.write', messages.length);
      const identity = this.owner.identity;
      const ok = this.call.write({
        from: this.owner.id,
        to: this.id,
        messages,
        clusterId: identity?.clusterId ?? '',
        fromUid: identity?.nodeUid ?? '',
      });
      if (!ok) {
        this.waitingDrain = true;
        const call = this.call;
        call.once('drain', () => {
          if (this.call !== call) return;
          this.waitingDrain = false;
          this.pump();
        });
      }
    }
  }

  private connect(): void {
    if (this.connecting || this.backoffTimer !== null || this.closed) return;
    this.connecting = true;
    const limits = this.owner.limits;
    this.client.waitForReady(Date.now() + limits.connectTimeoutMs, (err) => {
      this.connecting = false;
      if (this.closed) return;
      if (err) {
        this.dropQueued();
        this.scheduleReconnect(err.message);
        return;
      }
      this.openStream();
    });
  }

  private openStream(): void {
    const call = this.client.Stream((err) => this.onStreamEnd(call, err));
    // Errors are reported through the callback above; this keeps the stream from throwing.
    call.on('error', () => undefined);
    this.call = call;
    this.callOpenedAt = Date.now();
    this.waitingDrain = false;
    this.owner.logger.debug({ peer: this.id, address: this.address }, 'raft stream opened');
    this.pump();
  }

  private onStreamEnd(
    call: grpc.ClientWritableStream<BatchFrame>,
    err: grpc.ServiceError | null,
  ): void {
    if (this.call !== call) return;
    this.call = null;
    this.waitingDrain = false;
    if (this.closed) return;
    if (Date.now() - this.callOpenedAt >= this.owner.limits.streamHealthyAfterMs) this.attempt = 0;
    if (
      err?.code === grpc.status.FAILED_PRECONDITION ||
      err?.code === grpc.status.UNAUTHENTICATED
    ) {
      // The peer refuses this node (another cluster, or an identity it does not know).
      this.owner.logLimited(
        'refused',
        this.id,
        'error',
        { peer: this.id, address: this.address, reason: err.details },
        'raft peer refuses this node',
      );
    }
    this.owner.logger.debug({ peer: this.id, err: err?.message }, 'raft stream ended');
    this.dropQueued();
    this.scheduleReconnect(err?.message ?? 'stream ended');
  }

  /** The peer is down: what is queued would be stale by the time it is back. */
  private dropQueued(): void {
    const n = this.queue.clear();
    if (n > 0) {
      this.dropped += n;
      this.owner.countDrop('peerDown', this.id, n);
    }
  }

  private scheduleReconnect(reason: string): void {
    if (this.closed || this.backoffTimer !== null) return;
    const limits = this.owner.limits;
    const ceiling = Math.min(
      limits.reconnectMaxMs,
      limits.reconnectBaseMs * 2 ** Math.min(this.attempt, 20),
    );
    const delay = ceiling / 2 + this.owner.random() * (ceiling / 2);
    this.attempt++;
    this.owner.stats.reconnects++;
    this.owner.logLimited(
      'reconnect',
      this.id,
      'debug',
      { peer: this.id, address: this.address, reason, delayMs: Math.round(delay) },
      'raft peer unreachable; reconnecting',
    );
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = null;
      // Reconnect only if there is something to say; the next send() triggers it otherwise.
      if (this.queue.length > 0) this.connect();
    }, delay);
    this.backoffTimer.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    const call = this.call;
    this.call = null;
    if (call) {
      call.end();
      call.cancel();
    }
    this.client.close();
    this.queue.clear();
  }
}

export class GrpcTransport implements PeerTransport {
  readonly id: NodeId;
  readonly limits: TransportLimits;
  readonly logger: Logger;
  readonly random: () => number;
  readonly stats: Omit<TransportStats, 'peers'> = {
    sent: 0,
    received: 0,
    dropped: { queueFull: 0, peerDown: 0, tooLarge: 0, unknownPeer: 0, self: 0, closed: 0 },
    rejected: {
      unknownSender: 0,
      wrongReceiver: 0,
      malformed: 0,
      wrongCluster: 0,
      wrongIdentity: 0,
      unauthenticated: 0,
      senderMismatch: 0,
      outOfBounds: 0,
    },
    reconnects: 0,
  };
  private readonly listenAddress: string;
  private readonly server: grpc.Server;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly limiter: LogLimiter;
  private handler: ((message: Message) => void) | null = null;
  private boundPort: number | null = null;
  private closed = false;
  /** Stamped on every frame; frames of another cluster are refused. Null: no checks (tests). */
  identity: NodeIdentity | null = null;
  private guard: IdentityGuard | null = null;
  /** Mutual TLS material; null: plaintext (in-process tests, or insecure mode by name). */
  readonly tls: PeerTls | null;
  private bounds: (() => BoundsView) | null = null;

  constructor(options: GrpcTransportOptions) {
    this.tls = options.tls ?? null;
    this.id = options.id;
    this.limits = { ...DEFAULT_TRANSPORT_LIMITS, ...options.limits };
    this.logger = options.logger.child({ component: 'raft-transport' });
    this.random = options.random ?? Math.random;
    this.listenAddress = options.listenAddress;
    this.limiter = new LogLimiter(this.limits.dropLogIntervalMs);
    this.server = new grpc.Server({
      'grpc.max_send_message_length': this.limits.maxFrameBytes,
      'grpc.max_receive_message_length': this.limits.maxFrameBytes,
      'grpc.keepalive_time_ms': this.limits.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': this.limits.keepaliveTimeoutMs,
    });
    this.server.addService(loadService().service, {
      Stream: (
        call: grpc.ServerReadableStream<BatchFrame, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => this.serveStream(call, callback),
      Identify: (
        call: grpc.ServerUnaryCall<{ from?: unknown }, IdentifyAnswer>,
        callback: grpc.sendUnaryData<IdentifyAnswer>,
      ) => {
        // Under TLS a node asks only about itself: the identity its certificate names.
        const from = this.tls === null ? call.request?.from : callerNodeId(call);
        callback(null, this.identify(from));
      },
    });
  }

  /**
   * Who this node is (stamped on every frame) and whom it accepts. Set before start(); a
   * transport without an identity neither stamps nor checks (in-process tests).
   */
  setIdentity(identity: NodeIdentity, guard: IdentityGuard): void {
    assert(this.boundPort === null, 'setIdentity after start');
    this.identity = { ...identity };
    this.guard = guard;
  }

  /** What bounds a peer's numbers (this node's term and last index); set before start(). */
  setBounds(view: () => BoundsView): void {
    this.bounds = view;
  }

  private identify(from: unknown): IdentifyAnswer {
    const known = isNodeId(from) ? (this.guard?.knownUid(from) ?? '') : '';
    return {
      nodeId: this.id,
      clusterId: this.identity?.clusterId ?? '',
      nodeUid: this.identity?.nodeUid ?? '',
      knownUid: known,
    };
  }

  /** Binds the listen address. Resolves with the bound port. */
  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(this.listenAddress, serverCredentials(this.tls), (err, port) => {
        if (err) {
          reject(err);
          return;
        }
        this.boundPort = port;
        this.logger.info(
          { address: this.listenAddress, port, tls: this.tls !== null },
          'raft transport listening',
        );
        resolve(port);
      });
    });
  }

  get port(): number | null {
    return this.boundPort;
  }

  send(messages: Message[]): void {
    // All of a send() call's messages to one peer travel as one batch (one gRPC write):
    // a leader's round to a follower (append + heartbeat), a follower's answers.
    const touched = new Set<Peer>();
    for (const m of messages) {
      if (this.closed) {
        this.countDrop('closed', m.to, 1);
        continue;
      }
      if (m.to === this.id) {
        this.countDrop('self', m.to, 1);
        continue;
      }
      const peer = this.peers.get(m.to);
      if (!peer) {
        this.countDrop('unknownPeer', m.to, 1);
        continue;
      }
      let bytes: Buffer;
      try {
        bytes = encodeMessage(m);
      } catch (err) {
        // The core produced something msgpackr cannot encode: a bug, never a peer's fault.
        throw new AssertionFailure(
          `raft message to ${m.to} of type ${m.type} is not encodable: ${(err as Error).message}`,
        );
      }
      if (bytes.length > this.limits.maxFrameBytes - FRAME_OVERHEAD_BYTES) {
        this.countDrop('tooLarge', m.to, 1, { type: m.type, bytes: bytes.length });
        continue;
      }
      peer.enqueue(bytes);
      touched.add(peer);
    }
    for (const peer of touched) peer.pump();
  }

  onMessage(handler: (message: Message) => void): void {
    this.handler = handler;
  }

  setPeers(peers: ReadonlyMap<NodeId, string>): void {
    if (this.closed) return;
    for (const [id, peer] of this.peers) {
      if (peers.get(id) !== peer.address) {
        peer.close();
        this.peers.delete(id);
        this.logger.info({ peer: id, address: peer.address }, 'raft peer removed');
      }
    }
    for (const [id, address] of peers) {
      if (id === this.id || this.peers.has(id)) continue;
      this.peers.set(id, new Peer(id, address, this));
      this.logger.info({ peer: id, address }, 'raft peer added');
    }
  }

  statsSnapshot(): TransportStats {
    const peers: TransportStats['peers'] = {};
    for (const [id, p] of this.peers) {
      peers[id] = {
        address: p.address,
        connected: p.connected,
        queued: p.queue.length,
        queuedBytes: p.queue.bytes,
        dropped: p.dropped,
      };
    }
    return {
      ...this.stats,
      dropped: { ...this.stats.dropped },
      rejected: { ...this.stats.rejected },
      peers,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    // Peers' streams into this server are long-lived and would hold a graceful shutdown open.
    this.server.forceShutdown();
    this.logger.info('raft transport closed');
  }

  /** @internal */
  countDrop(
    reason: DropReason,
    peer: NodeId,
    n: number,
    extra: Record<string, unknown> = {},
  ): void {
    this.stats.dropped[reason] += n;
    const level = reason === 'tooLarge' ? 'warn' : 'debug';
    this.logLimited(
      `drop:${reason}`,
      peer,
      level,
      { peer, reason, count: n, ...extra },
      'raft messages dropped',
    );
  }

  /** @internal */
  logLimited(
    kind: string,
    peer: string,
    level: 'debug' | 'warn' | 'error',
    fields: Record<string, unknown>,
    msg: string,
  ): void {
    const suppressed = this.limiter.check(`${kind}:${peer}`);
    if (suppressed === null) return;
    this.logger[level]({ ...fields, suppressedSinceLastLog: suppressed }, msg);
  }

  private reject(
    reason: RejectReason,
    sender: string,
    fields: Record<string, unknown>,
    n = 1,
  ): void {
    this.stats.rejected[reason] += n;
    this.logLimited(
      `reject:${reason}`,
      sender.slice(0, 64),
      'warn',
      { reason, sender: sender.slice(0, 64), ...fields },
      'raft frame rejected',
    );
  }

  private serveStream(
    call: grpc.ServerReadableStream<BatchFrame, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ): void {
    let batches = 0;
    let dropped = 0;
    let answered = false;
    const answer = () => {
      if (answered) return;
      answered = true;
      callback(null, { batchesReceived: batches, messagesDropped: dropped });
    };
    const remote = call.getPeer();
    // Under TLS the sender is the node its certificate names, whatever the frames say.
    const certified = this.tls === null ? null : callerNodeId(call);
    if (this.tls !== null && certified === null) {
      this.reject('unauthenticated', remote, { remote });
      answered = true;
      callback({
        code: grpc.status.UNAUTHENTICATED,
        details: 'the raft port needs a node certificate of this cluster',
      });
      return;
    }
    call.on('data', (frame: BatchFrame) => {
      if (answered) return;
      latencyTrace?.('t.recv', Array.isArray(frame.messages) ? frame.messages.length : 0);
      batches++;
      const r = this.receiveBatch(frame, remote, certified);
      if (typeof r === 'number') {
        dropped += r;
        return;
      }
      // Refused: end the stream with the reason, so the sender logs it.
      answered = true;
      callback({ code: grpc.status.FAILED_PRECONDITION, details: r.refused });
    });
    call.on('end', answer);
    call.on('error', (err) =>
      this.logger.debug({ remote, err: err.message }, 'raft inbound stream failed'),
    );
  }

  /**
   * Hands each well-formed message of a batch to the handler; returns how many it dropped,
   * or why the sender is refused altogether.
   */
  private receiveBatch(
    frame: BatchFrame,
    remote: string,
    certified: NodeId | null,
  ): number | { refused: string } {
    const claimed = typeof frame.from === 'string' ? frame.from : '';
    const messages = Array.isArray(frame.messages) ? frame.messages : [];
    if (this.closed) return messages.length;
    if (certified !== null && claimed !== certified) {
      this.reject(
        'senderMismatch',
        certified,
        { remote, claimed: claimed.slice(0, 64), messages: messages.length },
        messages.length,
      );
      return messages.length;
    }
    // The sender id is parsed here, at the edge; a malformed one is no member either.
    const from = isNodeId(claimed) ? claimed : null;
    if (from === null || !this.peers.has(from)) {
      this.reject('unknownSender', claimed, { remote, messages: messages.length }, messages.length);
      return messages.length;
    }
    if (frame.to !== this.id) {
      this.reject(
        'wrongReceiver',
        from,
        { remote, to: String(frame.to).slice(0, 64) },
        messages.length,
      );
      return messages.length;
    }
    const refused = this.checkIdentity(frame, from, remote, messages.length);
    if (refused !== null) return { refused };
    let dropped = 0;
    for (const bytes of messages) {
      const decoded = decodeMessage(bytes);
      if (!decoded.ok) {
        this.reject('malformed', from, { remote, error: decoded.error });
        dropped++;
        continue;
      }
      const m = decoded.message;
      if (m.from !== from || m.to !== this.id) {
        this.reject('malformed', from, {
          remote,
          error: `message from ${m.from} to ${m.to} inside a batch from ${from} to ${this.id}`,
        });
        dropped++;
        continue;
      }
      const outOfBounds = this.bounds === null ? null : checkMessageBounds(m, this.bounds());
      if (outOfBounds !== null) {
        this.reject('outOfBounds', from, { remote, error: outOfBounds });
        dropped++;
        continue;
      }
      this.stats.received++;
      this.deliver(m);
    }
    return dropped;
  }

  /** null if the frame's cluster and sender identity are accepted, else why not. */
  private checkIdentity(frame: BatchFrame, from: NodeId, remote: string, n: number): string | null {
    const own = this.identity;
    if (own === null) return null;
    const clusterId = typeof frame.clusterId === 'string' ? frame.clusterId : '';
    if (clusterId !== own.clusterId) {
      this.reject('wrongCluster', from, { remote, clusterId: clusterId.slice(0, 64) }, n);
      return `node ${this.id} belongs to cluster ${own.clusterId}, this frame to cluster ${clusterId.slice(0, 64) || '(none)'}`;
    }
    const uid = typeof frame.fromUid === 'string' ? frame.fromUid.slice(0, 256) : '';
    if (this.guard && !this.guard.accept(from, uid)) {
      const known = this.guard.knownUid(from);
      this.reject('wrongIdentity', from, { remote, uid, known }, n);
      return (
        `node ${this.id} knows member ${from} as ${known ?? '(unknown)'}, not ${uid || '(none)'}: ` +
        `its data directory was wiped or replaced; remove it and add it back as a new member ` +
        `(concord cluster change), starting it with raft.join`
      );
    }
    return null;
  }

  private deliver(message: Message): void {
    if (!this.handler) return;
    try {
      this.handler(message);
    } catch (err) {
      // An assertion failure is a bug report: let it take the process down.
      if (err instanceof AssertionFailure) throw err;
      this.logger.error(
        { err, from: message.from, type: message.type },
        'raft message handler failed',
      );
    }
  }
}
