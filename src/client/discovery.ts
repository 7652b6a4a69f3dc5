/**
 * Leader discovery for the SDK. Given a few node addresses (their HTTP control endpoints),
 * it fetches the cluster metadata, exposes the leader's transaction endpoint, and keeps it
 * current by WATCHING FOLLOWERS with the openapi long poll (`POST /metadata/v1/watch`):
 * when the leader dies, the surviving followers' term changes as they elect a new one, the
 * watch answers, and the client switches before it ever sends a request to the dead node.
 * (Watching the leader would only tell us it died by failing.)
 *
 *   const d = new ClusterDiscovery({ seeds: ['127.0.0.1:7091', '127.0.0.1:7092'] });
 *   await d.start();
 *   d.on('leaderChange', ({ leader, term }) => …);
 *   const xid = await d.call((leader) => tm.begin(leader, { …, requestId }), { requestId });
 *   d.close();
 *
 * ## Retrying safely
 *
 * A request that failed with NotLeaderError was refused before anything was proposed, so
 * it is always safe to send again to the leader the error names (or to the one a refresh
 * finds). Any other failure — a timeout, a dropped connection, ProposalDroppedError (the
 * leader lost leadership after accepting the command) — leaves the outcome UNKNOWN: the
 * command may still be committed by the next leader.
 *
 * So `call()` retries those only when the call is safe to repeat:
 *  - `idempotent: true` — reads, and commands whose second application changes nothing
 *    (global commit/rollback of an xid: a decided transaction keeps its decision);
 *  - or a `requestId` — Begin and RegisterBranch carry the client's requestId into the
 *    replicated command, and the coordinator's state machine keeps a bounded
 *    requestId → result map (src/coordinator/state-machine.ts `withDedup`). The retry
 *    reaches the new leader, whose replica of that map has the first attempt's result if
 *    it committed: the client gets the same xid / branchId back instead of a second
 *    transaction. The SDK generates one requestId per logical call and reuses it on every
 *    retry of that call.
 * A non-idempotent call without a requestId is never retried after an unknown outcome.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadRequestError, ConcordError, NotLeaderError, ProposalDroppedError, TimeoutError } from '../shared/errors.ts';
import { type Logger, silentLogger } from '../shared/logger.ts';
import {
  type ClusterMetadata,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type HostPort,
  type NodeMetadata,
  UnavailableError,
  fetchClusterMetadata,
  formatHostPort,
  leaderOf,
  parseAddress,
  watchCluster,
} from './http-metadata.ts';

/** Long-poll duration asked of the server, in ms (the server clamps it to [1 s, 60 s]). */
export const DEFAULT_WATCH_TIMEOUT_MS = 30_000;
/** Retry backoff: base · 2^attempt, capped, with equal jitter (ms). */
export const DEFAULT_BACKOFF_BASE_MS = 50;
export const DEFAULT_BACKOFF_MAX_MS = 2_000;
/** Attempts of one call() before giving up (the first one included). */
export const DEFAULT_MAX_ATTEMPTS = 8;
/** Upper bound on control endpoints the client remembers (seeds + members). */
export const MAX_KNOWN_ENDPOINTS = 32;
/** Pause between watch attempts after a failure, bounded like the backoff (ms). */
export const WATCH_RETRY_MAX_MS = 2_000;
/** A node whose watch failed is not watched again for this long, if others remain (ms). */
export const WATCH_FAILURE_COOLDOWN_MS = 5_000;

export interface LeaderEndpoint {
  nodeId: string;
  /** TC gRPC endpoint: where TM/RM requests go. */
  transaction: HostPort;
  control: HostPort | null;
  term: number;
}

export interface LeaderChangeEvent {
  previous: LeaderEndpoint | null;
  leader: LeaderEndpoint | null;
  term: number;
}

export interface DiscoveryOptions {
  /** HTTP control endpoints ("host:port") of any nodes of the group. */
  seeds: ReadonlyArray<string | HostPort>;
  group?: string;
  logger?: Logger;
  /** Default true: keep a watch on a follower. */
  watch?: boolean;
  watchTimeoutMs?: number;
  requestTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  maxAttempts?: number;
  /** Jitter source (tests pass a seeded one). */
  random?: () => number;
}

export interface CallOptions {
  /** The call may be repeated with no further effect (reads, commit/rollback of a known xid). */
  idempotent?: boolean;
  /** A request id carried in the command: the coordinator deduplicates retries by it. */
  requestId?: string;
  maxAttempts?: number;
  /** How long to wait for a leader to be known before each attempt (ms). */
  leaderWaitMs?: number;
}

interface DiscoveryEvents {
  leaderChange: [LeaderChangeEvent];
  metadata: [ClusterMetadata];
}

export class ClusterDiscovery extends EventEmitter<DiscoveryEvents> {
  readonly group: string;
  private readonly log: Logger;
  private readonly seeds: HostPort[];
  private readonly opts: Required<Pick<DiscoveryOptions, 'watch' | 'watchTimeoutMs' | 'requestTimeoutMs' | 'backoffBaseMs' | 'backoffMaxMs' | 'maxAttempts' | 'random'>>;
  private current: ClusterMetadata | null = null;
  private currentLeader: LeaderEndpoint | null = null;
  private refreshing: Promise<ClusterMetadata> | null = null;
  private readonly closer = new AbortController();
  private watching = false;
  private watchTarget = 0;
  /** What each watched node last told us, so a lagging node is long-polled, not spun on. */
  private readonly seenFrom = new Map<string, { term: number; version: string }>();
  /** When a node's watch last failed (performance.now()). */
  private readonly failedAt = new Map<string, number>();

  constructor(options: DiscoveryOptions) {
    super();
    if (options.seeds.length === 0) throw new BadRequestError('discovery needs at least one node address');
    this.seeds = options.seeds.slice(0, MAX_KNOWN_ENDPOINTS).map((s) => (typeof s === 'string' ? parseAddress(s) : s));
    this.group = options.group ?? 'default';
    this.log = (options.logger ?? silentLogger()).child({ component: 'discovery' });
    this.opts = {
      watch: options.watch ?? true,
      watchTimeoutMs: options.watchTimeoutMs ?? DEFAULT_WATCH_TIMEOUT_MS,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      backoffBaseMs: options.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS,
      backoffMaxMs: options.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      random: options.random ?? Math.random,
    };
    // An EventEmitter without an 'error' listener throws; this one never emits 'error'.
  }

  /** Fetches the metadata (any seed that answers) and starts watching. */
  async start(): Promise<ClusterMetadata> {
    const md = await this.refresh();
    if (this.opts.watch && !this.watching) {
      this.watching = true;
      void this.watchLoop();
    }
    return md;
  }

  /** The leader's transaction endpoint, or null while none is known (an election). */
  leader(): LeaderEndpoint | null {
    return this.currentLeader;
  }

  metadata(): ClusterMetadata | null {
    return this.current;
  }

  get closed(): boolean {
    return this.closer.signal.aborted;
  }

  /** Stops the watch; pending calls fail with UnavailableError. */
  close(): void {
    if (this.closed) return;
    this.closer.abort();
    this.removeAllListeners();
  }

  /**
   * Asks every known node at once (seeds and members) and adopts the most recent view:
   * the highest term, preferring an answer that names a leader. Concurrent callers share
   * one refresh. Rejects with UnavailableError if no node answers.
   */
  refresh(): Promise<ClusterMetadata> {
    if (this.closed) return Promise.reject(new UnavailableError('discovery is closed'));
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** Resolves with the leader, refreshing with backoff until one is known or `waitMs` passes. */
  async waitForLeader(waitMs = this.opts.backoffMaxMs * 4): Promise<LeaderEndpoint> {
    const deadline = performance.now() + waitMs;
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new UnavailableError('discovery is closed');
      if (this.currentLeader) return this.currentLeader;
      try {
        await this.refresh();
        if (this.currentLeader) return this.currentLeader;
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'refresh failed while waiting for a leader');
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new UnavailableError(`no leader known for group ${this.group} within ${waitMs} ms`);
      await this.pause(Math.min(left, this.backoff(attempt)));
    }
  }

  /**
   * Runs `fn` against the leader; on a failure that is safe to retry (see the file
   * comment), refreshes and retries with bounded exponential backoff.
   */
  async call<T>(fn: (leader: LeaderEndpoint) => Promise<T>, options: CallOptions = {}): Promise<T> {
    const maxAttempts = options.maxAttempts ?? this.opts.maxAttempts;
    const repeatable = options.idempotent === true || (options.requestId !== undefined && options.requestId !== '');
    let lastError: unknown = null;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const leader = await this.waitForLeader(options.leaderWaitMs);
      try {
        return await fn(leader);
      } catch (err) {
        lastError = err;
        const kind = classify(err);
        if (kind === 'fatal' || (kind === 'unknown-outcome' && !repeatable)) throw err;
        this.log.debug({ attempt, leader: leader.nodeId, err: (err as Error).message }, 'call failed; finding the leader again');
        if (!(err instanceof NotLeaderError && this.adoptLeaderHint(err))) {
          this.dropLeader(leader);
          await this.refresh().catch(() => undefined);
        }
        if (attempt + 1 < maxAttempts) await this.pause(this.backoff(attempt));
      }
    }
    throw lastError instanceof Error ? lastError : new UnavailableError('call failed');
  }

  // ---------------------------------------------------------------- internals

  private async doRefresh(): Promise<ClusterMetadata> {
    const targets = this.knownControls();
    const results = await Promise.allSettled(
      targets.map((t) => fetchClusterMetadata(t, { group: this.group, timeoutMs: this.opts.requestTimeoutMs, signal: this.closer.signal })),
    );
    let best: ClusterMetadata | null = null;
    const errors: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') {
        if (best === null || isNewer(r.value, best)) best = r.value;
      } else {
        errors.push(`${formatHostPort(targets[i]!)}: ${(r.reason as Error).message}`);
        // A group this client does not belong to is a configuration error, not an outage.
        if (r.reason instanceof BadRequestError) this.log.warn({ err: r.reason.message }, 'metadata request refused');
      }
    });
    if (best === null) throw new UnavailableError(`no node of group ${this.group} answered: ${errors.join('; ')}`);
    this.adopt(best, true);
    return this.current ?? best;
  }

  /** Control endpoints to ask: members of the known metadata first, then the seeds. */
  private knownControls(): HostPort[] {
    const out: HostPort[] = [];
    const seen = new Set<string>();
    const add = (hp: HostPort | null) => {
      if (!hp || out.length >= MAX_KNOWN_ENDPOINTS) return;
      const k = formatHostPort(hp);
      if (seen.has(k)) return;
      seen.add(k);
      out.push(hp);
    };
    for (const n of this.current?.nodes ?? []) add(n.control);
    for (const s of this.seeds) add(s);
    return out;
  }

  /** Adopts metadata if it is not older than what we hold; emits events on change. */
  private adopt(md: ClusterMetadata, force = false): boolean {
    const cur = this.current;
    if (cur && !force && !isNewer(md, cur)) return false;
    if (cur && force && isNewer(cur, md)) return false;
    const versionChanged = !cur || cur.metadataVersion !== md.metadataVersion || cur.term !== md.term;
    this.current = md;
    const previous = this.currentLeader;
    const next = leaderFrom(md);
    const leaderChanged = (previous?.nodeId ?? null) !== (next?.nodeId ?? null) || (previous !== null && next !== null && formatHostPort(previous.transaction) !== formatHostPort(next.transaction));
    this.currentLeader = next;
    if (versionChanged) this.emit('metadata', md);
    if (leaderChanged) {
      this.log.info({ from: previous?.nodeId ?? null, to: next?.nodeId ?? null, term: md.term }, 'leader changed');
      this.emit('leaderChange', { previous, leader: next, term: md.term });
    }
    return true;
  }

  private adoptLeaderHint(err: NotLeaderError): boolean {
    const hint = leaderOf(err);
    if (!hint?.transaction || !this.current) return false;
    if (this.currentLeader?.nodeId === hint.nodeId) return false;
    // The hint comes from a node in the same or a later term; refresh to learn which.
    void this.refresh().catch(() => undefined);
    const previous = this.currentLeader;
    this.currentLeader = { nodeId: hint.nodeId, transaction: hint.transaction, control: hint.control, term: this.current.term };
    this.emit('leaderChange', { previous, leader: this.currentLeader, term: this.current.term });
    return true;
  }

  private dropLeader(failed: LeaderEndpoint): void {
    if (this.currentLeader?.nodeId === failed.nodeId) this.currentLeader = null;
  }

  /**
   * The watch: long-polls one follower at a time. A change → adopt the answer (and
   * refresh if it names no leader yet, so the new leader is learned as soon as any node
   * knows it). A failure → next node, with backoff.
   */
  private async watchLoop(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      const target = this.pickWatchTarget();
      if (!target) {
        await this.pause(this.backoff(failures++));
        await this.refresh().catch(() => undefined);
        continue;
      }
      const key = formatHostPort(target);
      const md = this.current;
      const seen = this.seenFrom.get(key);
      const known = seen ?? { term: md?.term ?? 0, version: md?.metadataVersion ?? '' };
      try {
        const r = await watchCluster(
          target,
          { group: this.group, term: known.term, metadataVersion: known.version },
          { watchTimeoutMs: this.opts.watchTimeoutMs, signal: this.closer.signal },
        );
        failures = 0;
        this.failedAt.delete(key);
        if (r.changed) {
          this.seenFrom.set(key, { term: r.metadata.term, version: r.metadata.metadataVersion });
          const adopted = this.adopt(r.metadata);
          this.log.debug({ from: key, term: r.metadata.term, leader: r.metadata.leaderId, adopted }, 'watch answered');
          if (adopted && r.metadata.leaderId === null) {
            // An election is under way: the watched node tells us when it knows the winner.
          }
        }
      } catch (err) {
        if (this.closed) return;
        failures++;
        this.seenFrom.delete(key);
        this.failedAt.set(key, performance.now());
        this.watchTarget++;
        this.log.debug({ target: key, err: (err as Error).message }, 'watch failed; trying another node');
        await this.pause(Math.min(WATCH_RETRY_MAX_MS, this.backoff(failures)));
        // Whatever failed may have been the leader: ask around.
        await this.refresh().catch(() => undefined);
      }
    }
  }

  /**
   * A follower's control endpoint (rotating on failure; nodes whose watch failed recently
   * and nodes the leader reports unhealthy come last); the leader only if it is alone.
   */
  private pickWatchTarget(): HostPort | null {
    const md = this.current;
    const nodes = (md?.nodes ?? []).filter((n) => n.control !== null);
    const now = performance.now();
    const usable = (n: NodeMetadata) => {
      const failed = this.failedAt.get(formatHostPort(n.control!));
      return n.healthy !== false && (failed === undefined || now - failed > WATCH_FAILURE_COOLDOWN_MS);
    };
    const followers = nodes.filter((n) => n.role !== 'LEADER' && n.nodeId !== md?.leaderId);
    const pools = [followers.filter(usable), nodes.filter(usable), followers, nodes];
    const pool = pools.find((p) => p.length > 0);
    if (!pool) return this.seeds[this.watchTarget % this.seeds.length] ?? null;
    return pool[this.watchTarget % pool.length]!.control;
  }

  private backoff(attempt: number): number {
    const exp = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** Math.min(attempt, 20));
    return exp / 2 + (exp / 2) * this.opts.random();
  }

  private async pause(ms: number): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.closer.signal });
    } catch {
      // closed
    }
  }
}

/**
 * `a` is a more recent view than `b`: a higher term; in the same term, one that names a
 * leader over one that does not; with the same leader and other members, the one with the
 * longer log (membership changes take effect when appended, so it has seen more of them).
 */
function isNewer(a: ClusterMetadata, b: ClusterMetadata): boolean {
  if (a.term !== b.term) return a.term > b.term;
  if (a.leaderId !== null && b.leaderId === null) return true;
  if (a.leaderId === null && b.leaderId !== null) return false;
  if (a.leaderId !== b.leaderId) return false;
  return a.metadataVersion !== b.metadataVersion && a.lastIndex >= b.lastIndex;
}

function leaderFrom(md: ClusterMetadata): LeaderEndpoint | null {
  const n = md.nodes.find((x) => x.role === 'LEADER') ?? md.nodes.find((x) => x.nodeId === md.leaderId);
  if (!n || !n.transaction) return null;
  return { nodeId: n.nodeId, transaction: n.transaction, control: n.control, term: md.term };
}

/**
 * How a failure bears on retrying:
 *  - retry: the request was refused before anything happened (not leader, or the client
 *    could not reach the node at all); safe for any call;
 *  - unknown-outcome: it may or may not have been applied; retry only idempotent calls or
 *    calls with a requestId;
 *  - fatal: a definite answer (bad request, unauthorized, a domain rejection): never retry.
 */
export function classify(err: unknown): 'retry' | 'unknown-outcome' | 'fatal' {
  if (err instanceof NotLeaderError) return 'retry';
  if (err instanceof ProposalDroppedError || err instanceof TimeoutError) return 'unknown-outcome';
  if (err instanceof UnavailableError) return 'unknown-outcome';
  if (err instanceof ConcordError) return err.retryable ? 'unknown-outcome' : 'fatal';
  // Transport errors from other clients (gRPC): an unknown outcome unless proven otherwise.
  const code = (err as { code?: unknown }).code;
  if (code === 14 /* grpc UNAVAILABLE */ || code === 4 /* DEADLINE_EXCEEDED */) return 'unknown-outcome';
  return 'fatal';
}
