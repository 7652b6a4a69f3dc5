/**
 * The write chain both log storages (LevelDbStorage, WalStorage) put their durable writes
 * on: one write at a time, in call order, and fail-stop — once a write failed, every later
 * one is refused with StoppedError naming the first failure (a node must not acknowledge
 * anything after its disk failed; etcd panics there).
 */
import { assert, StoppedError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';

export class SerialWrites {
  private tail: Promise<void> = Promise.resolve();
  private failed: unknown = null;

  constructor(
    private readonly logger: Logger,
    /** Whether the storage was closed: a write queued after close is refused. */
    private readonly closed: () => boolean,
    /** Whether the storage was loaded: a write before load is a bug. */
    private readonly loaded: () => boolean,
  ) {}

  /** Runs `write` after every write queued before it; rejects as it does, or if stopped. */
  run(write: () => Promise<void>): Promise<void> {
    const run = this.tail.then(async () => {
      if (this.closed()) throw new StoppedError('raft storage is closed');
      if (this.failed !== null)
        throw new StoppedError('raft storage failed an earlier write', { cause: this.failed });
      assert(this.loaded(), 'raft storage written before load');
      try {
        await write();
      } catch (err) {
        this.failed = err;
        this.logger.error({ err }, 'raft storage write failed; storage refuses further writes');
        throw err;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every write queued so far has ended (whichever way). */
  drained(): Promise<void> {
    return this.tail;
  }
}
