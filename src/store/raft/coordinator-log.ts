/**
 * The apply half of the Raft session store: the coordinator's state machine behind the
 * Raft's StateMachine port. Each committed entry's data is an encoded coordinator command or
 * a batch of them (command-batch.ts, written by RaftSessionStore.submit — the propose half).
 *
 * Deterministic: apply reads nothing but the state and the commands. An entry that does not
 * decode is a corrupt log — decoding throws an AssertionFailure and the driver fail-stops,
 * as it must.
 */
import { CoordinatorStateMachine } from '../../coordinator/index.ts';
import type { SnapshotCapture, StateMachine } from '../../raft/ports.ts';
import { StorageCorruptError } from '../../shared/errors.ts';
import { applyEntry } from './command-batch.ts';

export class CoordinatorLogStateMachine implements StateMachine {
  readonly coordinator = new CoordinatorStateMachine();

  apply(_index: number, data: Uint8Array): unknown {
    return applyEntry(this.coordinator, data);
  }

  snapshot(): Uint8Array {
    return this.coordinator.snapshot();
  }

  snapshotInSlices(): SnapshotCapture {
    return this.coordinator.snapshotInSlices();
  }

  restore(data: Uint8Array): void {
    this.coordinator.restore(data);
  }

  /**
   * The coordinator's own snapshot decoding and checks, into a scratch state machine. Its
   * decoder checks the outline only, so a malformed session inside surfaces as whatever
   * restore trips on: reported as the StorageCorruptError it is.
   */
  validateSnapshot(data: Uint8Array): void {
    try {
      new CoordinatorStateMachine().restore(data);
    } catch (err) {
      if (err instanceof StorageCorruptError) throw err;
      throw new StorageCorruptError('coordinator snapshot is malformed', { cause: err });
    }
  }
}
