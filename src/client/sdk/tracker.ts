/**
 * Counts the work in flight (transactions, branch calls) so close() can wait for it: a
 * client closed while a transaction is between begin and commit would otherwise leave it
 * to the TC's timeout, and a branch whose try is running would lose its answer.
 */
export class InflightTracker {
  private count = 0;
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.count;
  }

  /** Runs `fn`, counted while it runs. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.count += 1;
    try {
      return await fn();
    } finally {
      this.count -= 1;
      if (this.count === 0) {
        const waiters = this.waiters;
        this.waiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  /** Resolves true once nothing is in flight, or false after `timeoutMs`. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, timeoutMs);
      timer.unref();
      this.waiters.push(wake);
    });
  }
}
