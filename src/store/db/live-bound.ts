/**
 * The live-session cap (MAX_LIVE_SESSIONS) in db mode without a scan per Begin.
 *
 * A Begin is admitted on an estimate: the number of live sessions counted at most
 * DB_LIVE_COUNT_MAX_AGE_MS ago (one bounded, index-only count, shared by the Begins that
 * find it stale), plus the Begins this node admitted since. Only while that estimate is
 * below DB_LIVE_COUNT_EXACT_FROM of the cap; from there on every Begin goes the general
 * way, which counts exactly (bounded) in its own transaction, as before.
 *
 * Why that is safe: the cap bounds memory and table size, it is no correctness rule, and
 * across nodes racing at the cap it was never exact in db mode. Sessions that ended since
 * the count only make the estimate high (a Begin goes the exact way sooner). What other
 * nodes admitted since the last count is unseen for at most DB_LIVE_COUNT_MAX_AGE_MS, and
 * the 10 % headroom below the cap absorbs it: the cap is passed only if the other nodes
 * admit more than that many Begins within one such interval, which the exact count then
 * refuses further.
 */
import { MAX_LIVE_SESSIONS } from '../../coordinator/limits.ts';
import { DB_LIVE_COUNT_EXACT_FROM, DB_LIVE_COUNT_MAX_AGE_MS } from './limits.ts';

export class LiveSessionBound {
  private count = 0;
  private countedAt = -Infinity;
  private admittedSince = 0;
  private counting: Promise<void> | null = null;

  constructor(
    private readonly countLive: () => Promise<number>,
    private readonly now: () => number = Date.now,
    /** The live-session cap (default MAX_LIVE_SESSIONS). */
    private readonly cap: number = MAX_LIVE_SESSIONS,
  ) {}

  /** True when a Begin may take the one-statement path (the estimate is well below the cap). */
  async mayBegin(): Promise<boolean> {
    if (this.now() - this.countedAt > DB_LIVE_COUNT_MAX_AGE_MS) await this.recount();
    return this.count + this.admittedSince < this.cap * DB_LIVE_COUNT_EXACT_FROM;
  }

  /** A Begin this node admitted by the one-statement path. */
  admitted(): void {
    this.admittedSince += 1;
  }

  private recount(): Promise<void> {
    this.counting ??= (async () => {
      const startedAt = this.now();
      const admittedBefore = this.admittedSince;
      try {
        const n = await this.countLive();
        this.count = n;
        this.countedAt = startedAt;
        // Begins admitted while the count ran may be missing from it: keep them.
        this.admittedSince -= admittedBefore;
      } finally {
        this.counting = null;
      }
    })();
    return this.counting;
  }
}
