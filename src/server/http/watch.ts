/**
 * The watch long poll (Seata's `POST /metadata/v1/watch`): a client gives the term (and
 * optionally the metadata version) it knows per group; the answer comes at once if they
 * differ from this node's, else as soon as they change, else after the timeout (304).
 * Concurrent watchers are bounded: beyond the limit the request is refused with 503.
 */
import { BadRequestError } from '../../shared/errors.ts';
import { MAX_WATCH_TIMEOUT_MS, MIN_WATCH_TIMEOUT_MS } from '../config.ts';
import type { ClusterView } from '../cluster-view.ts';
import { TooManyWatchersError, UnknownGroupError } from './errors.ts';
import type { WatchRequest } from '../../shared/metadata.ts';

/** Upper bound on groups named in one watch request. */
export const MAX_WATCH_GROUPS = 16;

export type WatchOutcome = { changed: string[] } | { timeout: true } | { closed: true };

export function clampWatchTimeoutMs(ms: number): number {
  return Math.min(MAX_WATCH_TIMEOUT_MS, Math.max(MIN_WATCH_TIMEOUT_MS, ms));
}

/** Validates a watch request body. Unknown groups → 404 (as for the metadata). */
export function parseWatchRequest(
  body: Record<string, unknown>,
  group: string,
  defaultTimeoutMs: number,
): WatchRequest & { timeoutMs: number } {
  const gt = body.groupTerms;
  if (typeof gt !== 'object' || gt === null || Array.isArray(gt)) {
    throw new BadRequestError(
      'groupTerms must be an object mapping a group name to the term the client knows, e.g. {"default": 3}',
    );
  }
  const entries = Object.entries(gt as Record<string, unknown>);
  if (entries.length === 0) throw new BadRequestError('groupTerms names no group');
  if (entries.length > MAX_WATCH_GROUPS)
    throw new BadRequestError(
      `groupTerms names ${entries.length} groups; at most ${MAX_WATCH_GROUPS}`,
    );
  const groupTerms: Record<string, number> = {};
  for (const [g, t] of entries) {
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0)
      throw new BadRequestError(`groupTerms.${g.slice(0, 64)} must be a non-negative integer`);
    if (g !== group) throw new UnknownGroupError(g, group);
    groupTerms[g] = t;
  }
  let groupVersions: Record<string, string> | undefined;
  if (body.groupVersions !== undefined) {
    const gv = body.groupVersions;
    if (typeof gv !== 'object' || gv === null || Array.isArray(gv))
      throw new BadRequestError(
        'groupVersions must be an object mapping a group name to a metadataVersion',
      );
    groupVersions = {};
    for (const [g, v] of Object.entries(gv as Record<string, unknown>)) {
      if (typeof v !== 'string' || v.length > 128)
        throw new BadRequestError(
          `groupVersions.${g.slice(0, 64)} must be a metadataVersion string`,
        );
      if (g !== group) throw new UnknownGroupError(g, group);
      groupVersions[g] = v;
    }
  }
  let timeoutMs = defaultTimeoutMs;
  if (body.timeoutMs !== undefined) {
    if (typeof body.timeoutMs !== 'number' || !Number.isFinite(body.timeoutMs))
      throw new BadRequestError('timeoutMs must be a number of milliseconds');
    timeoutMs = body.timeoutMs;
  }
  return {
    groupTerms,
    ...(groupVersions ? { groupVersions } : {}),
    timeoutMs: clampWatchTimeoutMs(timeoutMs),
  };
}

export class WatchHub {
  private active = 0;
  private readonly waiters = new Set<(now: { term: number; version: string } | null) => void>();
  private closed = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly view: ClusterView,
    readonly maxWatchers: number,
  ) {
    this.unsubscribe = view.onChange(() => {
      if (this.waiters.size === 0) return;
      const now = { term: view.term(), version: view.version() };
      for (const w of [...this.waiters]) w(now);
    });
  }

  get watchers(): number {
    return this.active;
  }

  /**
   * Which of the request's groups differ from this node's view (`now`: term and version, computed
   * once per change).
   */
  differs(
    req: WatchRequest,
    now: { term: number; version: string } = {
      term: this.view.term(),
      version: this.view.version(),
    },
  ): string[] {
    const g = this.view.group;
    const knownTerm = req.groupTerms[g];
    const knownVersion = req.groupVersions?.[g];
    if (knownTerm === undefined) return [];
    if (knownTerm !== now.term) return [g];
    if (knownVersion !== undefined && knownVersion !== now.version) return [g];
    return [];
  }

  /**
   * Waits until the view differs from what the client knows, the timeout passes, the
   * client goes away (`signal`), or the hub closes. Throws TooManyWatchersError at the limit.
   */
  async wait(
    req: WatchRequest & { timeoutMs: number },
    signal: AbortSignal,
  ): Promise<WatchOutcome> {
    if (this.closed) return { closed: true };
    const now = this.differs(req);
    if (now.length > 0) return { changed: now };
    if (this.active >= this.maxWatchers) throw new TooManyWatchersError(this.maxWatchers);
    this.active++;
    try {
      return await new Promise<WatchOutcome>((resolve) => {
        let timer: NodeJS.Timeout | null = null;
        const finish = (o: WatchOutcome) => {
          if (timer) clearTimeout(timer);
          this.waiters.delete(check);
          signal.removeEventListener('abort', onAbort);
          resolve(o);
        };
        const check = (now: { term: number; version: string } | null) => {
          if (this.closed || now === null) return finish({ closed: true });
          const changed = this.differs(req, now);
          if (changed.length > 0) finish({ changed });
        };
        const onAbort = () => finish({ closed: true });
        this.waiters.add(check);
        signal.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => finish({ timeout: true }), req.timeoutMs);
        if (signal.aborted) onAbort();
      });
    } finally {
      this.active--;
    }
  }

  /** Answers every waiting watcher (with `closed`) and refuses new ones. */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const w of [...this.waiters]) w(null);
  }
}
