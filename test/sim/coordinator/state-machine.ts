/**
 * The coordinator's state machine as the simulator's Raft applies it: the REAL
 * CoordinatorStateMachine behind the real entry decoding of the Raft session store
 * (applyEntry: one command or a batch per entry), plus the simulator's hash chain over
 * every applied (index, data), so the Raft checkers (same entry per index, in order, never
 * twice, restored snapshots agree) watch it as they watch the key-value machine.
 */
import type { Command, Outcome } from '../../../src/coordinator/commands.ts';
import { CoordinatorStateMachine } from '../../../src/coordinator/state-machine.ts';
import { GlobalStatus, decisionOf } from '../../../src/coordinator/types.ts';
import { AssertionFailure, StorageCorruptError } from '../../../src/shared/errors.ts';
import { SNAPSHOT_SLICE_ROWS } from '../../../src/coordinator/snapshot-codec.ts';
import { applyEntry } from '../../../src/store/raft/command-batch.ts';
import type { SnapshotCapture } from '../../../src/raft/ports.ts';
import { bytesKey } from '../invariants.ts';
import { SimStateMachine, mixHash, type SimApplyResult } from '../state-machine.ts';

interface Encoded {
  lastIndex: number;
  hash: number;
  count: number;
  coordinator: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One command as the state machine applied it: the xid's status and record before and after. */
export interface AppliedCommand {
  command: Command;
  ok: boolean;
  before: { status: GlobalStatus | null; finished: GlobalStatus | null };
  after: { status: GlobalStatus | null; finished: GlobalStatus | null };
  /** The live session's begin time before the command (null: not live). */
  beginTime: number | null;
}

export class CoordinatorSimStateMachine extends SimStateMachine {
  readonly coordinator: CoordinatorStateMachine;
  /** Captures completed, and entries applied between the steps of them (summed). */
  readonly captureStats = { captures: 0, appliedDuring: 0 };
  /** Sees every command applied (the checkers watch how statuses move). */
  onCommand: ((applied: AppliedCommand) => void) | null = null;

  constructor(
    private readonly make: () => CoordinatorStateMachine = () => new CoordinatorStateMachine(),
    /** Rows a capture's slice holds (the production SNAPSHOT_SLICE_ROWS, or a few: many slices). */
    private readonly sliceRows = SNAPSHOT_SLICE_ROWS,
    /**
     * Empty steps before each of the capture's own (0: none): a capture as slow as a large
     * state's, so that more entries apply while it runs.
     */
    private readonly idleSteps = 0,
  ) {
    super();
    this.coordinator = make();
    const machine = this.coordinator;
    const apply = machine.apply.bind(machine);
    const statusOf = (xid: string) => ({
      status: machine.getSession(xid)?.status ?? null,
      finished: machine.getFinished(xid)?.status ?? null,
    });
    machine.apply = ((command: Command) => {
      const xid = (command as { xid?: unknown }).xid;
      if (this.onCommand === null || typeof xid !== 'string') return apply(command);
      const before = statusOf(xid);
      const beginTime = machine.getSession(xid)?.beginTime ?? null;
      const outcome = apply(command);
      this.onCommand({ command, ok: outcome.ok, before, after: statusOf(xid), beginTime });
      return outcome;
    }) as CoordinatorStateMachine['apply'];
  }

  /** Answers the coordinator's outcome(s), which the session store hands its submitters. */
  override apply(index: number, data: Uint8Array): SimApplyResult {
    if (index <= this.lastIndex)
      throw new Error(`state machine: apply ${index} after ${this.lastIndex}`);
    this.lastIndex = index;
    this.count++;
    this.hash = mixHash(this.hash, index, data);
    this.observer?.onApply(index, bytesKey(data), this.hash);
    return applyEntry(this.coordinator, data) as unknown as SimApplyResult;
  }

  override snapshot(): Uint8Array {
    const enc: Encoded = {
      lastIndex: this.lastIndex,
      hash: this.hash,
      count: this.count,
      coordinator: Buffer.from(this.coordinator.snapshot()).toString('base64'),
    };
    return encoder.encode(JSON.stringify(enc));
  }

  /**
   * The coordinator's own sliced encode, wrapped as snapshot() wraps it. The capture lets
   * entries apply between its steps (copy-on-write); its bytes must be snapshot()'s at its
   * point, which is taken here as the oracle and compared at the end (an AssertionFailure:
   * the driver fail-stops and the checker reports it).
   */
  override snapshotInSlices(): SnapshotCapture {
    const at = { lastIndex: this.lastIndex, hash: this.hash, count: this.count };
    const oracle = this.coordinator.snapshot();
    const capture = this.coordinator.snapshotInSlices(this.sliceRows);
    let idle = this.idleSteps;
    return {
      appliesMeanwhile: capture.appliesMeanwhile,
      step: () => {
        if (idle-- > 0) return null;
        idle = this.idleSteps;
        const bytes = capture.step();
        if (bytes === null) return null;
        if (!Buffer.from(bytes).equals(Buffer.from(oracle)))
          throw new AssertionFailure(
            `the capture at index ${at.lastIndex} differs from the state at that index (${this.lastIndex - at.lastIndex} entries applied meanwhile)`,
          );
        this.captureStats.captures++;
        this.captureStats.appliedDuring += this.lastIndex - at.lastIndex;
        const enc: Encoded = { ...at, coordinator: Buffer.from(bytes).toString('base64') };
        return encoder.encode(JSON.stringify(enc));
      },
    };
  }

  override validateSnapshot(data: Uint8Array): void {
    const enc = decode(data);
    this.make().restore(Buffer.from(enc.coordinator, 'base64'));
  }

  override restore(data: Uint8Array, index: number): void {
    const enc = decode(data);
    this.coordinator.restore(Buffer.from(enc.coordinator, 'base64'));
    this.lastIndex = enc.lastIndex;
    this.hash = enc.hash;
    this.count = enc.count;
    this.observer?.onRestore(index, enc.lastIndex, enc.hash);
  }
}

function decode(data: Uint8Array): Encoded {
  let enc: Partial<Encoded>;
  try {
    enc = JSON.parse(decoder.decode(data)) as Partial<Encoded>;
  } catch (cause) {
    throw new StorageCorruptError('coordinator sim snapshot does not decode', { cause });
  }
  if (
    typeof enc !== 'object' ||
    enc === null ||
    !Number.isInteger(enc.lastIndex) ||
    !Number.isInteger(enc.hash) ||
    !Number.isInteger(enc.count) ||
    typeof enc.coordinator !== 'string'
  )
    throw new StorageCorruptError('coordinator sim snapshot lacks lastIndex, hash, count or state');
  return enc as Encoded;
}

// ---------------------------------------------------------------------------------------
// Mutants (negative tests): each breaks one of Seata's invariants on purpose.

/**
 * Lets a rollback overturn a commit decision: a RollbackGlobal of a transaction that is
 * committing moves it to Rollbacking (the decided status changes). The checker must see it.
 */
export class DecisionFlippingMachine extends CoordinatorStateMachine {
  constructor() {
    super();
    // The flip is made where a handler's would be (inside apply, around its dispatch), so
    // the machine's own bookkeeping (failed set, status counts) sees it as a handler's change
    // and the checker sees the broken invariant, not a torn state.
    const self = this as unknown as Internals;
    const dispatch = self.dispatch.bind(this);
    self.dispatch = (command: Command) => {
      // Found as a handler finds what it changes (a capture under way copies it first).
      const session = command.kind === 'RollbackGlobal' ? self.changeable(command.xid) : undefined;
      if (session && decisionOf(session.status) === 'commit') {
        session.status = GlobalStatus.Rollbacking;
        return {
          ok: true,
          value: { status: GlobalStatus.Rollbacking, decided: true, finished: null },
        };
      }
      return dispatch(command);
    };
  }
}

/** What the mutants reach inside the machine (private there). */
interface Internals {
  dispatch(command: Command): Outcome<unknown>;
  changeable(xid: string): { status: GlobalStatus } | undefined;
  sessions: Map<string, { status: GlobalStatus }>;
}

/**
 * Forgets which request registered a branch (no dedup of RegisterBranch): a registration
 * retried after its answer was lost registers a second branch, and the first — whose try
 * never ran — is confirmed at commit (issue 13 item 5). The checker must see it.
 */
export class ForgetfulRegisterMachine extends CoordinatorStateMachine {
  constructor() {
    super();
    const apply = this.apply.bind(this);
    this.apply = ((command: Command) =>
      apply(
        command.kind === 'RegisterBranch' ? { ...command, requestId: null } : command,
      )) as CoordinatorStateMachine['apply'];
  }
}

/**
 * Resumes a failed end to the wrong place: an operator's RetryResumed of a CommitFailed
 * transaction moves it to Rollbacking (a resume that overturns the decision). The checker
 * must see it.
 */
export class ResumeFlippingMachine extends CoordinatorStateMachine {
  constructor() {
    super();
    // Inside apply, around the handler's dispatch (as DecisionFlippingMachine).
    const self = this as unknown as Internals;
    const dispatch = self.dispatch.bind(this);
    self.dispatch = (command: Command) => {
      const outcome = dispatch(command);
      const session = command.kind === 'RetryResumed' ? self.sessions.get(command.xid) : undefined;
      if (outcome.ok && session?.status === GlobalStatus.Committing)
        session.status = GlobalStatus.Rollbacking;
      return outcome;
    };
  }
}

export type CoordinatorMutant = 'none' | 'decision-flip' | 'forgetful-register' | 'resume-flip';

export const COORDINATOR_MUTANTS: readonly CoordinatorMutant[] = [
  'none',
  'decision-flip',
  'forgetful-register',
  'resume-flip',
];

export function machineFor(mutant: CoordinatorMutant): () => CoordinatorStateMachine {
  switch (mutant) {
    case 'decision-flip':
      return () => new DecisionFlippingMachine();
    case 'forgetful-register':
      return () => new ForgetfulRegisterMachine();
    case 'resume-flip':
      return () => new ResumeFlippingMachine();
    default:
      return () => new CoordinatorStateMachine();
  }
}
