/**
 * The local life of a global transaction this process began: the AbortSignal its scope
 * sees, aborted when the transaction is over from this process's point of view —
 *   - its global timeout passed (reason: GlobalTimeoutError), timed from just before Begin
 *     was sent, so the signal never fires later than the TC's own deadline (clock drift
 *     aside: the TC's deadline runs from its Begin, which is later);
 *   - it is being rolled back, because its function threw or rollback() was called
 *     (reason: TransactionRollingBackError);
 *   - the TC answered a commit with a rollback (reason: that error).
 * The signal travels with the xid in the async context (context.ts), so work the function
 * started and left running sees it too, and branch calls made after it aborted are refused
 * before they reach the TC (actions.ts).
 */
import { GlobalTimeoutError, TransactionRollingBackError } from './errors.ts';
import { GlobalStatus } from '../../shared/tc-vocabulary.ts';

/**
 * A signal that never aborts: the scope of work that runs without a transaction of this process.
 */
export const NEVER_ABORTED: AbortSignal = new AbortController().signal;

export class TransactionLifetime {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  /**
   * @param startedAt performance.now() just before Begin was sent
   * @param timeoutMs the transaction's timeout; 0 when unknown (a handle on a transaction begun
   * elsewhere)
   */
  constructor(
    readonly xid: string,
    readonly timeoutMs: number,
    startedAt: number,
  ) {
    if (timeoutMs > 0) {
      const left = Math.max(0, startedAt + timeoutMs - performance.now());
      this.timer = setTimeout(() => this.timedOut(), left);
      this.timer.unref();
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True when the signal fired because the global timeout passed. */
  get timedOutLocally(): boolean {
    return this.signal.aborted && this.signal.reason instanceof GlobalTimeoutError;
  }

  private timedOut(): void {
    this.timer = undefined;
    this.abort(new GlobalTimeoutError(this.xid, GlobalStatus.TimeoutRollbacking, this.timeoutMs));
  }

  /** The transaction is being rolled back: stop the scope's work. */
  rollingBack(): void {
    this.abort(new TransactionRollingBackError(this.xid));
  }

  /** Aborts with `reason` unless already aborted (the first reason stays). */
  abort(reason: Error): void {
    this.end();
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** The transaction is decided: no timer any more (the signal keeps its state). */
  end(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
