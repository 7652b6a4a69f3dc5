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
import {
  BadRequestError,
  ConcordError,
  NotLeaderError,
  ProposalDroppedError,
  TimeoutError,
} from '../shared/errors.ts';
import { type Logger, silentLogger } from '../shared/logger.ts';
import type { NodeHttpTls } from '../shared/node-fetch.ts';
import { nodeHttpTlsFromEnv } from './tls.ts';
import { TlsMismatchError, WrongPortError } from './wrong-port.ts';
import {
  type ClusterMetadata,
  type HostPort,
  type NodeMetadata,
  UnavailableError,
  fetchClusterMetadata,
  formatHostPort,
  parseAddress,
  watchCluster,
} from './http-metadata.ts';

/** Long-poll duration asked of the server, in ms (the server clamps it to [1 s, 60 s]). */
export const DEFAULT_WATCH_TIMEOUT_MS = 30_000;
/**
 * A metadata request of a refresh gives up after this, ms: the answer is an in-memory read
 * on the node, so a node silent this long is paused, black-holed or dead (a refresh does
 * not wait for it anyway once another node named a leader).
 */
export const DEFAULT_METADATA_TIMEOUT_MS = 2_000;
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
/**
 * While no leader is known (an election, a restart of the whole cluster, a leader found
 * unreachable), every known node is asked at this bounded backoff until one names a leader
 * (ms). The watch alone cannot be trusted for it: the watched node may be the dead one.
 */
export const LEADER_POLL_BASE_MS = 50;
export const LEADER_POLL_MAX_MS = 500;

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
  /**
   * HTTPS to the nodes' HTTP ports, trusting this CA (a secure cluster); null: plain HTTP
   * (insecure mode). Absent: from the environment (src/client/tls.ts nodeHttpTlsFromEnv).
   */
  tls?: NodeHttpTls | null;
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
  private readonly opts: Required<
    Pick<
      DiscoveryOptions,
      | 'watch'
      | 'watchTimeoutMs'
      | 'requestTimeoutMs'
      | 'backoffBaseMs'
      | 'backoffMaxMs'
      | 'maxAttempts'
      | 'random'
    >
  >;
  private current: ClusterMetadata | null = null;
  private currentLeader: LeaderEndpoint | null = null;
  /** The leader the last leaderChange event named (currentLeader may be forgotten meanwhile). */
  private announced: LeaderEndpoint | null = null;
  /** The metadata request in flight per control endpoint. */
  private readonly fetching = new Map<string, Promise<ClusterMetadata>>();
  private readonly closer = new AbortController();
  private watching = false;
  private watchTarget = 0;
  /** What each watched node last told us, so a lagging node is long-polled, not spun on. */
  private readonly seenFrom = new Map<string, { term: number; version: string }>();
  /** When a node's watch last failed, or the node was found unreachable (performance.now()). */
  private readonly failedAt = new Map<string, number>();
  /** Called when a leader becomes known (waitForLeader's waiters), or on close. */
  private readonly leaderWaiters = new Set<() => void>();
  private polling = false;
  /** When a node last answered a metadata or watch request (performance.now()); null: never. */
  private answeredAt: number | null = null;
  /** The watch request in flight, to restart it on a leader change (it may sit on a dead node). */
  private watchAbort: AbortController | null = null;
  private readonly tls: NodeHttpTls | null;

  constructor(options: DiscoveryOptions) {
    super();
    if (options.seeds.length === 0)
      throw new BadRequestError('discovery needs at least one node address');
    this.seeds = options.seeds
      .slice(0, MAX_KNOWN_ENDPOINTS)
      .map((s) => (typeof s === 'string' ? parseAddress(s) : s));
    this.group = options.group ?? 'default';
    this.log = (options.logger ?? silentLogger()).child({ component: 'discovery' });
    this.opts = {
      watch: options.watch ?? true,
      watchTimeoutMs: options.watchTimeoutMs ?? DEFAULT_WATCH_TIMEOUT_MS,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_METADATA_TIMEOUT_MS,
      backoffBaseMs: options.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS,
      backoffMaxMs: options.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      random: options.random ?? Math.random,
    };
    this.tls = options.tls === undefined ? nodeHttpTlsFromEnv() : options.tls;
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

  /** When a node of the cluster last answered this client (performance.now()); null: never. */
  lastAnsweredAt(): number | null {
    return this.answeredAt;
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
    for (const w of [...this.leaderWaiters]) w();
  }

  /**
   * A client could not reach the node at this TC endpoint (connection refused, reset, dead):
   * if it is the leader we know, forget it — calls then wait for a leader that a poll of
   * every node finds, instead of going back to the dead one — and keep the watch off it.
   */
  reportUnreachable(transaction: HostPort): void {
    if (this.closed) return;
    const key = formatHostPort(transaction);
    const node = this.current?.nodes.find(
      (n) => n.transaction !== null && formatHostPort(n.transaction) === key,
    );
    if (node?.control) this.failedAt.set(formatHostPort(node.control), performance.now());
    if (this.currentLeader && formatHostPort(this.currentLeader.transaction) === key) {
      this.log.debug(
        { leader: this.currentLeader.nodeId },
        'the leader is unreachable; looking for the leader again',
      );
      this.currentLeader = null;
    }
    this.pollForLeader();
  }

  /** The node at this TC endpoint answered NOT_LEADER: it is not the leader we think it is. */
  reportNotLeader(transaction: HostPort): void {
    if (this.closed) return;
    if (
      this.currentLeader &&
      formatHostPort(this.currentLeader.transaction) === formatHostPort(transaction)
    )
      this.currentLeader = null;
    this.pollForLeader();
  }

  /**
   * Asks every known node at once (seeds and members) and adopts the most recent view:
   * the highest term, preferring an answer that names a leader. At most one metadata
   * request per node is in flight at a time (concurrent refreshes share them), so a node
   * that hangs (paused, black-holed) costs one request and never delays the answers of the
   * others. Rejects with UnavailableError if no node answers.
   */
  refresh(): Promise<ClusterMetadata> {
    if (this.closed) return Promise.reject(new UnavailableError('discovery is closed'));
    return this.doRefresh();
  }

  /**
   * Resolves with the leader; while none is known, every node is polled (one poll shared by
   * all waiters, at a bounded backoff) and the waiter wakes the moment a leader is adopted —
   * by the poll, the watch or any refresh. UnavailableError after `waitMs`.
   */
  async waitForLeader(waitMs = this.opts.backoffMaxMs * 4): Promise<LeaderEndpoint> {
    if (this.closed) throw new UnavailableError('discovery is closed');
    if (this.currentLeader) return this.currentLeader;
    this.pollForLeader();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.leaderWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, waitMs));
      this.leaderWaiters.add(done);
    });
    if (this.closed) throw new UnavailableError('discovery is closed');
    if (this.currentLeader) return this.currentLeader;
    throw new UnavailableError(`no leader known for group ${this.group} within ${waitMs} ms`);
  }

  /**
   * Runs `fn` against the leader; on a failure that is safe to retry (see the file
   * comment), refreshes and retries with bounded exponential backoff.
   */
  async call<T>(fn: (leader: LeaderEndpoint) => Promise<T>, options: CallOptions = {}): Promise<T> {
    const maxAttempts = options.maxAttempts ?? this.opts.maxAttempts;
    const repeatable =
      options.idempotent === true || (options.requestId !== undefined && options.requestId !== '');
    let lastError: unknown = null;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const leader = await this.waitForLeader(options.leaderWaitMs);
      try {
        return await fn(leader);
      } catch (err) {
        lastError = err;
        const kind = classify(err);
        if (kind === 'fatal' || (kind === 'unknown-outcome' && !repeatable)) throw err;
        this.log.debug(
          { attempt, leader: leader.nodeId, err: (err as Error).message },
          'call failed; finding the leader again',
        );
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

  /**
   * Asks every known node at once; each answer is adopted as it arrives (if it is not older
   * than what we hold). Resolves as soon as a leader is known — a paused or black-holed node
   * must not hold the refresh for its request timeout — or when every node answered or
   * failed; rejects when none answered.
   */
  private doRefresh(): Promise<ClusterMetadata> {
    const targets = this.knownControls();
    return new Promise<ClusterMetadata>((resolve, reject) => {
      let left = targets.length;
      let answered = false;
      let settled = false;
      const errors: string[] = [];
      const wrongPorts: ConcordError[] = [];
      const settle = () => {
        if (settled) return;
        if (this.currentLeader && answered) {
          settled = true;
          resolve(this.current!);
        } else if (left === 0) {
          settled = true;
          if (answered && this.current) resolve(this.current);
          // Every address is a wrong port: a configuration error, not an outage.
          else if (wrongPorts.length === targets.length) reject(wrongPorts[0]);
          else
            reject(
              new UnavailableError(`no node of group ${this.group} answered: ${errors.join('; ')}`),
            );
        }
      };
      if (targets.length === 0) {
        settle();
        return;
      }
      for (const t of targets) {
        this.fetchFrom(t).then(
          () => {
            left--;
            answered = true;
            settle();
          },
          (err: unknown) => {
            left--;
            errors.push(`${formatHostPort(t)}: ${(err as Error).message}`);
            // A wrong port, or TLS that does not match the node's (TlsMismatchError).
            if (err instanceof WrongPortError || err instanceof TlsMismatchError)
              wrongPorts.push(err);
            // A group this client does not belong to is a configuration error, not an outage.
            if (err instanceof BadRequestError)
              this.log.warn({ err: err.message }, 'metadata request refused');
            settle();
          },
        );
      }
    });
  }

  /**
   * One metadata request to a node (shared while in flight); its answer is adopted when it arrives.
   */
  private fetchFrom(target: HostPort): Promise<ClusterMetadata> {
    const key = formatHostPort(target);
    const inflight = this.fetching.get(key);
    if (inflight) return inflight;
    const p = fetchClusterMetadata(target, {
      group: this.group,
      timeoutMs: this.opts.requestTimeoutMs,
      signal: this.closer.signal,
      tls: this.tls,
    })
      .then((md) => {
        this.answeredAt = performance.now();
        if (!this.closed) this.adopt(md, true);
        return md;
      })
      .finally(() => this.fetching.delete(key));
    this.fetching.set(key, p);
    return p;
  }

  /** Polls every known node until one names a leader (at most one poll loop at a time). */
  private pollForLeader(): void {
    if (this.polling || this.closed || this.currentLeader) return;
    this.polling = true;
    void (async () => {
      try {
        for (let attempt = 0; !this.closed && !this.currentLeader; attempt++) {
          // Not awaited to the end: a node that hangs must not slow the polling of the others.
          const round = this.refresh().catch((err: unknown) => {
            this.log.debug(
              { err: (err as Error).message },
              'no node answered while looking for the leader',
            );
          });
          const delay = this.pollDelay(attempt);
          const started = performance.now();
          await Promise.race([round, this.pause(delay)]);
          if (this.closed || this.currentLeader) break;
          await this.pause(delay - (performance.now() - started));
        }
      } finally {
        this.polling = false;
      }
    })();
  }

  private pollDelay(attempt: number): number {
    const exp = Math.min(
      LEADER_POLL_MAX_MS,
      this.opts.backoffMaxMs,
      LEADER_POLL_BASE_MS * 2 ** Math.min(attempt, 20),
    );
    return exp / 2 + (exp / 2) * this.opts.random();
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
    const versionChanged =
      !cur || cur.metadataVersion !== md.metadataVersion || cur.term !== md.term;
    this.current = md;
    const next = leaderFrom(md);
    this.currentLeader = next;
    if (versionChanged) this.emit('metadata', md);
    // Events compare with the leader last ANNOUNCED, not with currentLeader: a leader this
    // client forgot (unreachable, NOT_LEADER) and a stale follower names again in the same
    // term is no news — announcing it would wake every retry at once, straight back to it.
    // The same node in a later term (re-elected after a restart) is announced.
    const announced = this.announced;
    const leaderChanged =
      (announced?.nodeId ?? null) !== (next?.nodeId ?? null) ||
      (announced !== null &&
        next !== null &&
        (formatHostPort(announced.transaction) !== formatHostPort(next.transaction) ||
          next.term > announced.term));
    if (leaderChanged) {
      this.announced = next;
      this.log.info(
        { from: announced?.nodeId ?? null, to: next?.nodeId ?? null, term: md.term },
        'leader changed',
      );
      // The old leader may be dead: keep the watch off it for a while, and move a watch
      // that may be waiting on it.
      if (announced?.control && announced.nodeId !== next?.nodeId)
        this.failedAt.set(formatHostPort(announced.control), performance.now());
      this.watchAbort?.abort();
      this.emit('leaderChange', { previous: announced, leader: next, term: md.term });
    }
    if (next) for (const w of [...this.leaderWaiters]) w();
    else this.pollForLeader();
    return true;
  }

  private adoptLeaderHint(err: NotLeaderError): boolean {
    const hint = err.leader;
    if (!hint?.transaction || !this.current) return false;
    if (this.currentLeader?.nodeId === hint.nodeId) return false;
    // The hint comes from a node in the same or a later term; refresh to learn which.
    void this.refresh().catch(() => undefined);
    const previous = this.announced;
    this.currentLeader = {
      nodeId: hint.nodeId,
      transaction: hint.transaction,
      control: hint.control,
      term: this.current.term,
    };
    this.announced = this.currentLeader;
    this.emit('leaderChange', { previous, leader: this.currentLeader, term: this.current.term });
    for (const w of [...this.leaderWaiters]) w();
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
      const abort = new AbortController();
      this.watchAbort = abort;
      this.log.debug({ target: key, term: known.term }, 'watching');
      try {
        const r = await watchCluster(
          target,
          { group: this.group, term: known.term, metadataVersion: known.version },
          {
            watchTimeoutMs: this.opts.watchTimeoutMs,
            signal: AbortSignal.any([this.closer.signal, abort.signal]),
            tls: this.tls,
          },
        );
        failures = 0;
        this.answeredAt = performance.now();
        this.failedAt.delete(key);
        if (r.changed) {
          this.seenFrom.set(key, { term: r.metadata.term, version: r.metadata.metadataVersion });
          const adopted = this.adopt(r.metadata);
          this.log.debug(
            { from: key, term: r.metadata.term, leader: r.metadata.leaderId, adopted },
            'watch answered',
          );
          if (adopted && r.metadata.leaderId === null) {
            // An election is under way: the watched node tells us when it knows the winner.
          }
        }
      } catch (err) {
        if (this.closed) return;
        if (abort.signal.aborted) continue; // the leader changed: pick a node to watch again
        failures++;
        this.seenFrom.delete(key);
        this.failedAt.set(key, performance.now());
        this.watchTarget++;
        this.log.debug(
          { target: key, err: (err as Error).message },
          'watch failed; trying another node',
        );
        await this.pause(Math.min(WATCH_RETRY_MAX_MS, this.backoff(failures)));
        // Whatever failed may have been the leader: ask around.
        await this.refresh().catch(() => undefined);
      } finally {
        if (this.watchAbort === abort) this.watchAbort = null;
      }
    }
  }

  /**
   * A follower's control endpoint (rotating on failure; followers whose watch failed
   * recently or that the leader reports unhealthy come last); the leader only if no
   * follower is known.
   */
  private pickWatchTarget(): HostPort | null {
    const md = this.current;
    const nodes = (md?.nodes ?? []).filter((n) => n.control !== null);
    const now = performance.now();
    const usable = (n: NodeMetadata) => {
      const failed = this.failedAt.get(formatHostPort(n.control!));
      return (
        n.healthy !== false && (failed === undefined || now - failed > WATCH_FAILURE_COOLDOWN_MS)
      );
    };
    const recentlyFailed = (n: NodeMetadata) => {
      const failed = this.failedAt.get(formatHostPort(n.control!));
      return failed !== undefined && now - failed <= WATCH_FAILURE_COOLDOWN_MS;
    };
    const followers = nodes.filter((n) => n.role !== 'LEADER' && n.nodeId !== md?.leaderId);
    // Any follower beats the leader (watching the leader cannot tell us it died), even one
    // the leader reports unhealthy (a lagging follower still sees the term change).
    const pools = [
      followers.filter(usable),
      followers.filter((n) => !recentlyFailed(n)),
      followers,
      nodes.filter(usable),
      nodes,
    ];
    const pool = pools.find((p) => p.length > 0);
    if (!pool) return this.seeds[this.watchTarget % this.seeds.length] ?? null;
    return pool[this.watchTarget % pool.length]!.control;
  }

  private backoff(attempt: number): number {
    const exp = Math.min(
      this.opts.backoffMaxMs,
      this.opts.backoffBaseMs * 2 ** Math.min(attempt, 20),
    );
    return exp / 2 + (exp / 2) * this.opts.random();
  }

  private async pause(ms: number): Promise<void> {
    try {
      await sleep(Math.max(0, ms), undefined, { signal: this.closer.signal });
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
  const n =
    md.nodes.find((x) => x.role === 'LEADER') ?? md.nodes.find((x) => x.nodeId === md.leaderId);
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
  if (code === 14 /* grpc UNAVAILABLE */ || code === 4 /* DEADLINE_EXCEEDED */)
    return 'unknown-outcome';
  return 'fatal';
}
