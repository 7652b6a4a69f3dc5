/**
 * What runs on each simulated node in the coordinator mode: the REAL RaftSessionStore over
 * the node's REAL RaftDriver (its timers on the node's fake clock), and the REAL Coordinator
 * (state machine, phase-two driver, command clock) on it. Each node's wall clock is skewed
 * by its own offset and runs at the rate its fake clock is ticked; it survives restarts
 * (the monotonic clock does not). The RMs answer phase two through a gateway that a fault
 * can make fail. Nothing here reads real time.
 */
import { Coordinator } from '../../../src/coordinator/coordinator.ts';
import type { PhaseTwoOptions } from '../../../src/coordinator/phase-two-driver.ts';
import type { BranchGateway, Clock, IdSource } from '../../../src/coordinator/ports.ts';
import { BranchStatus, type BranchSession } from '../../../src/coordinator/types.ts';
import { silentLogger } from '../../../src/shared/logger.ts';
import type { NodeId } from '../../../src/raft/core/types.ts';
import { RaftSessionStore } from '../../../src/store/raft/raft-session-store.ts';
import type { SimNode } from '../world.ts';
import type { CoordinatorSimStateMachine } from './state-machine.ts';

/**
 * Phase-two timing in simulated ms (ticks are 10 ms): short, so runs reach retries, stuck marks
 * and timeouts.
 */
export const SIM_PHASE_TWO: Partial<PhaseTwoOptions> = {
  stuckAfterMs: 1_500,
  retryBaseMs: 40,
  retryMaxBackoffMs: 300,
  branchCallTimeoutMs: 400,
  sweepIntervalMs: 500,
  // Small slices: a sweep spans several turns, so commands, leader changes and ends land
  // between its slices (the sliced sweep, issue 19).
  sweepSliceSessions: 3,
};

/** Epoch ms the simulated wall clocks start from (plus each node's skew). */
export const SIM_EPOCH = 1_800_000_000_000;

/** One RM call the gateway made, as the RMs saw it. */
export interface RmCall {
  kind: 'commit' | 'rollback';
  branch: BranchSession;
  node: NodeId;
}

/**
 * The RMs behind every node's gateway: `onCall` decides each call's answer (the clients
 * model records it and checks it); `down` makes every call fail as unreachable.
 */
export class SimRms {
  down = false;
  onCall: (call: RmCall) => BranchStatus | 'unreachable' = (call) =>
    call.kind === 'commit' ? BranchStatus.PhaseTwo_Committed : BranchStatus.PhaseTwo_Rollbacked;

  gateway(node: NodeId): BranchGateway {
    const call = (kind: 'commit' | 'rollback', branch: BranchSession): Promise<BranchStatus> => {
      if (this.down) return Promise.reject(new Error('RM unreachable'));
      const answer = this.onCall({ kind, branch, node });
      return answer === 'unreachable'
        ? Promise.reject(new Error('RM unreachable'))
        : Promise.resolve(answer);
    };
    return {
      commitBranch: (branch) => call('commit', branch),
      rollbackBranch: (branch) => call('rollback', branch),
    };
  }
}

/** A node's coordinator and the store under it, for the current incarnation. */
export interface NodeServices {
  store: RaftSessionStore;
  coordinator: Coordinator;
  incarnation: number;
}

export class CoordinatorServices {
  readonly byNode = new Map<NodeId, NodeServices>();
  /** Each node's wall-clock time accumulated over its earlier incarnations. */
  private readonly elapsed = new Map<NodeId, number>();

  /** Each node's wall-clock offset from SIM_EPOCH (its skew, plus any step since). */
  private readonly offsets: Map<NodeId, number>;

  constructor(
    skews: ReadonlyMap<NodeId, number>,
    private readonly rms: SimRms,
    /** Per-run phase-two settings on top of SIM_PHASE_TWO (the retry horizon). */
    private readonly phaseTwo: Partial<PhaseTwoOptions> = {},
  ) {
    this.offsets = new Map(skews);
  }

  /** Steps a node's wall clock (an NTP step, an operator's mistake); its monotonic clock stays. */
  stepClock(id: NodeId, ms: number): void {
    this.offsets.set(id, (this.offsets.get(id) ?? 0) + ms);
  }

  /** World hook: the node's driver started. */
  up(node: SimNode): void {
    const { driver, clock, sm } = node;
    if (!driver || !clock || !sm) return;
    const store = new RaftSessionStore({
      raft: driver,
      state: (sm as CoordinatorSimStateMachine).coordinator,
      logger: silentLogger(),
      timers: clock,
      submitTimeoutMs: 1_000,
      readTimeoutMs: 1_000,
      barrierRetryMs: 20,
    });
    const before = this.elapsed.get(node.id) ?? 0;
    const wall: Clock = {
      now: () => SIM_EPOCH + (this.offsets.get(node.id) ?? 0) + before + clock.now(),
      after: (ms, fn) => clock.after(Math.max(1, ms), fn),
      every: (ms, fn) => clock.every(Math.max(1, ms), fn),
      monotonicNow: () => clock.now(),
    };
    const coordinator = new Coordinator({
      store,
      gateway: this.rms.gateway(node.id),
      ids: idsFor(node.id, node.incarnation),
      logger: silentLogger(),
      address: { host: '10.9.0.1', port: 8091 },
      clock: wall,
      phaseTwo: { ...SIM_PHASE_TWO, ...this.phaseTwo },
    });
    coordinator.start();
    this.byNode.set(node.id, { store, coordinator, incarnation: node.incarnation });
  }

  /** World hook: the node goes down (its process dies: the services stop with it). */
  down(node: SimNode): void {
    const s = this.byNode.get(node.id);
    if (!s) return;
    this.byNode.delete(node.id);
    this.elapsed.set(node.id, (this.elapsed.get(node.id) ?? 0) + (node.clock?.now() ?? 0));
    s.coordinator.stop();
    s.store.close();
  }

  coordinatorOf(id: NodeId): Coordinator | null {
    return this.byNode.get(id)?.coordinator ?? null;
  }
}

/** Ids unique across nodes and incarnations: node number, incarnation, counter. */
function idsFor(id: NodeId, incarnation: number): IdSource {
  const nodeNumber = Number(id.slice(1));
  let next = 0;
  const make = () => String(nodeNumber * 1e12 + incarnation * 1e8 + ++next);
  return { nextTransactionId: make, nextBranchId: make };
}
