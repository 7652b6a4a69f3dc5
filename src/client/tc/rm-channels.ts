/**
 * The RM's channels, by the cluster's store mode (the metadata's `storeMode`):
 *
 *  - raft: one RmChannel that follows the leader (only the leader runs phase two);
 *  - db: one RmChannel pinned to EVERY node. In db mode the node that decides a global
 *    transaction runs its first phase-two pass itself, and any node may decide; the lease
 *    holder runs retries, timeouts and what a node that died left. Each pinned channel has a
 *    connection of its own, so a change of the lease holder (the metadata's leader) that
 *    fails the TM calls in flight on other nodes leaves these streams alone. Nodes that
 *    join or leave the metadata gain or lose their channel.
 *
 * Until the first metadata answer the mode is unknown: the channels start then.
 */
import type { Logger } from '../../shared/logger.ts';
import type { ClusterMetadata, HostPort } from '../http-metadata.ts';
import { formatHostPort } from '../http-metadata.ts';
import type { TcConnection } from './connection.ts';
import { TimeoutError } from '../../shared/errors.ts';
import type { RmChannelArgs, RmChannelPort } from './port.ts';
import { RmChannel, type RmChannelStats, type RmRouting } from './rm-channel.ts';
import { MAX_RM_CHANNEL_NODES, RM_RECONNECT_MAX_MS } from './limits.ts';

/** What the set needs from its TcClient. */
export interface RmChannelsDeps {
  logger: Logger;
  /** Resolves with the cluster metadata (starting discovery); rejects while no node answers. */
  metadata(): Promise<ClusterMetadata>;
  /** Hears every new metadata (membership, term); returns the unsubscribe. */
  onMetadata(listener: (md: ClusterMetadata) => void): () => void;
  /** The leader's node id as discovery knows it now, or null. */
  leaderId(): string | null;
  /** The routing of a channel that follows the leader (raft mode). */
  leaderRouting: RmRouting;
  /** A connection of the set's own (db mode), never shared with TM calls. */
  dial(target: HostPort): TcConnection;
  /** The node at this endpoint could not be reached. */
  unreachable(target: HostPort): void;
  random(): number;
}

/** One node's pinned channel and how many of its sessions ended (it tried and failed). */
interface Pinned {
  nodeId: string;
  target: HostPort;
  channel: RmChannel;
  ended: number;
  onEnded: Set<() => void>;
  connection: TcConnection | null;
}

export class RmChannelSet implements RmChannelPort {
  private readonly log: Logger;
  private mode: 'raft' | 'db' | null = null;
  private single: RmChannel | null = null;
  private readonly pinned = new Map<string, Pinned>();
  private closed = false;
  private offMetadata: (() => void) | null = null;
  private readonly modeWaiters = new Set<() => void>();

  constructor(
    private readonly deps: RmChannelsDeps,
    private readonly args: RmChannelArgs,
  ) {
    this.log = deps.logger.child({ component: 'rm-channels', clientId: args.clientId });
  }

  /** Learns the store mode (retrying while no node answers), then opens the channels. */
  start(): this {
    void this.begin();
    return this;
  }

  get clientId(): string {
    return this.args.clientId;
  }

  get applicationId(): string {
    return this.args.applicationId;
  }

  /**
   * The node this RM is registered with: raft, the leader's; db, the lease holder's if its
   * channel is registered, else any node's; null when none is.
   */
  get registeredWith(): string | null {
    if (this.single) return this.single.registeredWith;
    const leader = this.deps.leaderId();
    const own = leader === null ? undefined : this.pinned.get(leader);
    if (own?.channel.registeredWith) return own.channel.registeredWith;
    for (const p of this.pinned.values()) if (p.channel.registeredWith) return p.nodeId;
    return null;
  }

  /** db mode: the nodes whose channel is registered now. */
  registeredNodes(): string[] {
    if (this.single) return this.single.registeredWith ? [this.single.registeredWith] : [];
    return [...this.pinned.values()].filter((p) => p.channel.registeredWith).map((p) => p.nodeId);
  }

  /** Phase-two requests answered since start, over every channel. */
  get handled(): number {
    if (this.single) return this.single.handled;
    let n = 0;
    for (const p of this.pinned.values()) n += p.channel.handled;
    return n;
  }

  /** Requests and results that crossed the channels, and the messages they took (summed). */
  stats(): RmChannelStats {
    const sum: RmChannelStats = {
      requests: 0,
      requestMessages: 0,
      results: 0,
      resultMessages: 0,
      refusedBatches: 0,
    };
    const channels = this.single ? [this.single] : [...this.pinned.values()].map((p) => p.channel);
    for (const c of channels) {
      const st = c.stats();
      for (const key of Object.keys(sum) as (keyof RmChannelStats)[]) sum[key] += st[key];
    }
    return sum;
  }

  resourcesChanged(): void {
    this.single?.resourcesChanged();
    for (const p of this.pinned.values()) p.channel.resourcesChanged();
  }

  /**
   * Resolves once registered with the leader (raft) or the lease holder (db) for the resources
   * as of now; in db mode it also waits for each other node's channel to register, or to have
   * failed (a node that is down does not hold it up). TimeoutError after `timeoutMs`.
   */
  async ready(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    const left = () => Math.max(0, until - performance.now());
    if (this.mode === null) await this.modeKnown(timeoutMs);
    if (this.single) return this.single.ready(left());
    const leader = this.deps.leaderId();
    const all = [...this.pinned.values()];
    const first = all.find((p) => p.nodeId === leader) ?? all[0];
    if (!first)
      throw new TimeoutError(`the RM channels of ${this.args.clientId} know no node to go to`);
    // Started now, so each sees the resources as of this call.
    const cancels: (() => void)[] = [];
    const others = all
      .filter((p) => p !== first && !(p.channel.registeredWith === null && p.ended > 0))
      .map((p) => {
        const end = this.nextEnd(p);
        cancels.push(end.cancel);
        return Promise.race([p.channel.ready(left()).catch(() => undefined), end.promise]);
      });
    try {
      await first.channel.ready(left());
      await Promise.race([Promise.all(others), sleepMs(left())]);
    } finally {
      for (const cancel of cancels) cancel();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.offMetadata?.();
    for (const w of [...this.modeWaiters]) w();
    const channels = [this.single, ...[...this.pinned.values()].map((p) => p.channel)];
    await Promise.all(channels.map((c) => c?.close()));
    for (const p of this.pinned.values()) p.connection?.close();
    this.pinned.clear();
  }

  // -------------------------------------------------------------------------------------

  private async begin(): Promise<void> {
    let md: ClusterMetadata | null = null;
    for (let attempt = 0; !this.closed && md === null; attempt++) {
      try {
        md = await this.deps.metadata();
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'no metadata for the RM channels yet');
        const exp = Math.min(RM_RECONNECT_MAX_MS, 100 * 2 ** Math.min(attempt, 10));
        await sleepMs(exp / 2 + (exp / 2) * this.deps.random());
      }
    }
    if (this.closed || md === null) return;
    if (md.storeMode === 'db') {
      this.mode = 'db';
      this.offMetadata = this.deps.onMetadata((next) => this.follow(next));
      this.follow(md);
    } else {
      this.mode = 'raft';
      this.single = new RmChannel(this.deps.leaderRouting, this.args).start();
    }
    for (const w of [...this.modeWaiters]) w();
  }

  /** db mode: a channel for every node of the metadata, none for a node that left it. */
  private follow(md: ClusterMetadata): void {
    if (this.closed) return;
    const nodes = new Map<string, HostPort>();
    // The lease holder first, then the others in the answer's order, at most
    // MAX_RM_CHANNEL_NODES (the answer is a peer's input).
    const ordered = [...md.nodes.filter((n) => n.nodeId === md.leaderId), ...md.nodes];
    for (const n of ordered) {
      if (nodes.size >= MAX_RM_CHANNEL_NODES) break;
      if (n.transaction && !nodes.has(n.nodeId)) nodes.set(n.nodeId, n.transaction);
    }
    if (md.nodes.length > MAX_RM_CHANNEL_NODES)
      this.log.warn(
        { nodes: md.nodes.length, kept: nodes.size },
        'the metadata names more nodes than an RM keeps channels to; the rest get none',
      );
    if (nodes.size === 0) return; // an empty answer moves nothing
    for (const [id, p] of [...this.pinned]) {
      const target = nodes.get(id);
      if (target && formatHostPort(target) === formatHostPort(p.target)) continue;
      this.log.info({ node: id }, 'node left the cluster (or moved): closing its RM channel');
      this.pinned.delete(id);
      void p.channel.close().then(() => p.connection?.close());
    }
    for (const [id, target] of nodes) if (!this.pinned.has(id)) this.open(id, target);
  }

  private open(nodeId: string, target: HostPort): void {
    const p: Pinned = {
      nodeId,
      target,
      channel: null as unknown as RmChannel,
      ended: 0,
      onEnded: new Set(),
      connection: null,
    };
    const routing: RmRouting = {
      logger: this.deps.logger,
      leader: () => Promise.resolve({ nodeId, transaction: target }),
      connection: () => {
        if (!p.connection?.usable) p.connection = this.deps.dial(target);
        return p.connection;
      },
      // Pinned: no leader to follow.
      onLeaderChange: () => () => undefined,
      // Called by the channel after every session that ended without a hint: it tried.
      refresh: () => {
        p.ended += 1;
        for (const w of [...p.onEnded]) w();
      },
      unreachable: (t) => this.deps.unreachable(t),
      random: this.deps.random,
      pinned: true,
    };
    p.channel = new RmChannel(routing, this.args);
    this.pinned.set(nodeId, p);
    p.channel.start();
  }

  /** Resolves at the next end of one of `p`'s sessions; cancel() forgets the waiter. */
  private nextEnd(p: Pinned): { promise: Promise<void>; cancel: () => void } {
    let done: () => void = () => undefined;
    const promise = new Promise<void>((resolve) => {
      done = () => {
        p.onEnded.delete(done);
        resolve();
      };
      p.onEnded.add(done);
    });
    return { promise, cancel: () => p.onEnded.delete(done) };
  }

  private modeKnown(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.modeWaiters.delete(done);
        reject(
          new TimeoutError(
            `the RM channels of ${this.args.clientId} found no node to register with within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        this.modeWaiters.delete(done);
        resolve();
      };
      this.modeWaiters.add(done);
      if (this.mode !== null || this.closed) done();
    });
  }
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, Math.max(0, ms));
    t.unref();
  });
}
