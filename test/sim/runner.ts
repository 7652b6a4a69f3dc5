/**
 * One simulation run: a seed picks the settings and the fault profile, then every step
 * picks one action at random (fault phase); then the recovery phase heals the network,
 * restarts every crashed node and requires a leader and a newly committed proposal within
 * a bounded number of ticks. The checkers run after every step. Same seed, same run.
 */
import type { DurableState, NodeId, RaftConfig } from '../../src/raft/core/types.ts';
import type { RaftCoreApi } from '../../src/raft/driver.ts';
import { requireNodeId } from '../../src/shared/ids.ts';
import type { DiskBug } from './fake-disk.ts';
import type { InvariantName, Violation } from './invariants.ts';
import { Prng } from '../support/prng.ts';
import {
  DEFAULT_SETTINGS,
  World,
  type SimNode,
  type SimSettings,
  type WorldStats,
} from './world.ts';

/** Relative weights of the fault-phase actions (0 disables one). */
export interface FaultProfile {
  deliver: number;
  tick: number;
  sync: number;
  propose: number;
  read: number;
  drop: number;
  duplicate: number;
  /** Probability that a delivery takes a message other than the oldest on its link. */
  reorder: number;
  crash: number;
  restart: number;
  partition: number;
  heal: number;
  diskFail: number;
  conf: number;
  transfer: number;
  snapshot: number;
  campaign: number;
}

export interface RunOptions {
  seed: number;
  /** Fault-phase steps. */
  steps: number;
  /** 1, 3 or 5 voters at bootstrap; chosen by the seed if absent. */
  nodes?: number;
  diskBug?: DiskBug;
  wrapCore?: (core: RaftCoreApi, id: NodeId) => RaftCoreApi;
  /** Builds each node's core; default the real RaftCore. */
  coreFactory?: (config: RaftConfig, durable: DurableState) => RaftCoreApi;
  settings?: Partial<SimSettings>;
  profile?: Partial<FaultProfile>;
  /** Skip the recovery phase (negative tests that only need the fault phase). */
  noRecovery?: boolean;
  /** Invariants not to report (negative tests that isolate one checker). */
  ignore?: InvariantName[];
  traceSize?: number;
}

export interface RunResult {
  seed: number;
  settings: SimSettings;
  profile: FaultProfile;
  /** All steps executed (fault + recovery). */
  steps: number;
  recoverySteps: number;
  recoveryTicks: number;
  violation: Violation | null;
  trace: string[];
  /**
   * For a liveness violation: 'stalled-replication-window' if followers sit in replicate state with
   * a full window.
   */
  diagnosis: string | null;
  stats: WorldStats;
  elapsedMs: number;
}

/**
 * Share of seeds that run lease reads on one global time, every clock within the drift
 * bound. Drawn from a stream of its own, so the other settings of a seed stay as they were.
 */
export const LEASE_SHARE = 0.2;

function leaseSettings(
  seed: number,
  ids: number,
): Pick<SimSettings, 'leaseReads' | 'maxClockDrift' | 'clockRates'> {
  const rng = new Prng((seed ^ 0x1ea5e5ee) >>> 0);
  if (!rng.chance(LEASE_SHARE)) return { leaseReads: false, maxClockDrift: 0.05, clockRates: null };
  const maxClockDrift = rng.pick([0, 0.01, 0.05, 0.2]);
  const clockRates: number[] = [];
  for (let i = 0; i < ids; i++)
    clockRates.push(1 - maxClockDrift + 2 * maxClockDrift * rng.float());
  return { leaseReads: true, maxClockDrift, clockRates };
}

/**
 * Share of seeds whose leaders pipeline their appends (the driver's pipelineAppends; the
 * others send them with the next round, as the server does by default). Drawn from a stream
 * of its own, so the other settings of a seed stay as they were.
 */
export const PIPELINE_SHARE = 0.5;

/** Share of seeds that apply at quorum before a node's own write (the driver's default). */
export const APPLY_EARLY_SHARE = 0.8;

/** Share of seeds whose rounds yield before their write, as the server's (yieldBeforePersist). */
export const YIELD_SHARE = 0.5;

function overlapSettings(
  seed: number,
): Pick<SimSettings, 'pipelineAppends' | 'applyBeforeOwnWrite' | 'yieldBeforePersist'> {
  const rng = new Prng((seed ^ 0x719e11e5) >>> 0);
  return {
    pipelineAppends: rng.chance(PIPELINE_SHARE),
    applyBeforeOwnWrite: rng.chance(APPLY_EARLY_SHARE),
    // Drawn last: the two above stay as they were for every seed.
    yieldBeforePersist: rng.chance(YIELD_SHARE),
  };
}

/** Share of seeds that bootstrap one voter (the spares may join as learners, then voters). */
export const ONE_VOTER_SHARE = 0.15;

/**
 * Ticks the recovery phase may take to elect a leader and commit a proposal, per election timeout.
 */
export const RECOVERY_ELECTION_TIMEOUTS = 30;

export function chooseSettings(
  rng: Prng,
  opts: RunOptions,
): { settings: SimSettings; profile: FaultProfile } {
  // Always draw, so that passing --nodes with the value the seed chose replays the same run.
  // One voter (whose spares join as learners) is the shape where a leader's own unsynced
  // tail could count toward a commit index that learners apply (issue 13, item 1).
  const nodesDraw = rng.float();
  const drawnNodes = nodesDraw < ONE_VOTER_SHARE ? 1 : nodesDraw < 0.5 ? 3 : 5;
  const nodes = opts.nodes ?? drawnNodes;
  const electionTicks = rng.int(4, 12);
  const settings: SimSettings = {
    ...DEFAULT_SETTINGS,
    nodes,
    spares: 2,
    electionTicks,
    heartbeatTicks: rng.int(1, Math.max(1, Math.floor(electionTicks / 3))),
    maxMsgBytes: rng.pick([48, 160, 1024]),
    maxInflightMsgs: rng.int(1, 8),
    snapshotChunkBytes: rng.pick([16, 64, 256]),
    snapshotEveryEntries: rng.pick([0, 5, 12, 30, 80]),
    // Odd seeds encode their snapshots at once, even ones a slice per turn (drawn from the
    // seed, not the generator, so the other settings of a seed stay what they were).
    snapshotSliceMs: opts.seed % 2 === 0 ? 0 : 20,
    // From the seed, not the generator: the draws after it (and so every seed's run) stay.
    snapshotStagger: Math.floor(opts.seed / 2) % 2 === 0,
    maxPendingProposals: rng.int(2, 24),
    maxUncommittedBytes: rng.pick([1 << 20, 1 << 20, 600]),
    maxQueueLength: rng.pick([16, 64]),
    readTimeoutTicks: 4 * electionTicks,
    diskBug: opts.diskBug ?? 'none',
    ...leaseSettings(opts.seed, nodes + 2),
    ...overlapSettings(opts.seed),
    ...opts.settings,
  };
  const profile: FaultProfile = {
    deliver: 40,
    tick: 20,
    sync: 20,
    propose: rng.pick([4, 8, 16]),
    read: rng.pick([0, 1, 3]),
    drop: rng.pick([0, 1, 4]),
    duplicate: rng.pick([0, 0.5, 2]),
    reorder: rng.pick([0, 0.1, 0.3]),
    crash: nodes === 1 ? rng.pick([0.15, 0.5]) : rng.pick([0, 0.15, 0.5]),
    restart: 2,
    partition: rng.pick([0, 0.2, 0.6]),
    heal: 0.6,
    diskFail: rng.pick([0, 0.03, 0.1]),
    conf: nodes === 1 ? rng.pick([0.5, 1, 2]) : rng.pick([0, 0.3, 1]),
    transfer: rng.pick([0, 0.1, 0.4]),
    snapshot: rng.pick([0, 0.1, 0.4]),
    campaign: rng.pick([0, 0.05]),
    ...opts.profile,
  };
  return { settings, profile };
}

export function describeSettings(
  seed: number,
  steps: number,
  s: SimSettings,
  p: FaultProfile,
): string {
  const lease = s.leaseReads
    ? ` leaseReads maxClockDrift=${s.maxClockDrift} clockRates=[${(s.clockRates ?? []).map((r) => r.toFixed(4)).join(',')}]`
    : '';
  const set = `nodes=${s.nodes} spares=${s.spares} electionTicks=${s.electionTicks} heartbeatTicks=${s.heartbeatTicks} maxMsgBytes=${s.maxMsgBytes} maxInflightMsgs=${s.maxInflightMsgs} snapshotChunkBytes=${s.snapshotChunkBytes} snapshotEveryEntries=${s.snapshotEveryEntries} snapshotSliceMs=${s.snapshotSliceMs} snapshotStagger=${s.snapshotStagger} maxPendingProposals=${s.maxPendingProposals} maxUncommittedBytes=${s.maxUncommittedBytes} maxQueueLength=${s.maxQueueLength} readTimeoutTicks=${s.readTimeoutTicks} diskBug=${s.diskBug} pipelineAppends=${s.pipelineAppends} applyBeforeOwnWrite=${s.applyBeforeOwnWrite} yieldBeforePersist=${s.yieldBeforePersist}${lease}`;
  const prof = Object.entries(p)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `seed=${seed} steps=${steps} ${set} | weights: ${prof}`;
}

export class Scheduler {
  private readonly removed = new Set<NodeId>();
  constructor(
    private readonly world: World,
    private readonly rng: Prng,
    private readonly p: FaultProfile,
  ) {}

  private randomUp(): SimNode | null {
    const up = this.world.upNodes();
    return up.length ? this.rng.pick(up) : null;
  }

  /** Picks and performs one action (synchronous part; the caller settles and checks). */
  async pickAndAct(): Promise<void> {
    const w = this.world;
    const busy = w.net.busyLinks();
    const dirty = [...w.nodes.values()].filter((n) => n.disk.pendingWrites > 0);
    const down = [...w.nodes.values()].filter((n) => n.started && !n.up);
    const kind = this.pickKind(busy.length > 0, dirty.length > 0, down.length > 0);
    switch (kind) {
      case 'deliver':
      case 'drop':
      case 'duplicate':
        this.actOnLink(kind, busy);
        return;
      case 'tick':
        this.tick();
        return;
      case 'sync':
        w.sync(this.rng.pick(dirty).id);
        return;
      case 'propose':
      case 'read':
        this.proposeOrRead(kind);
        return;
      case 'crash':
      case 'diskFail':
      case 'snapshot':
      case 'campaign':
        this.actOnRandomUp(kind);
        return;
      case 'restart':
        await w.startNode(this.rng.pick(down).id);
        return;
      case 'partition':
        this.partition();
        return;
      case 'heal':
        this.heal();
        return;
      case 'conf':
        await this.confChange();
        return;
      case 'transfer':
        this.transfer();
        return;
    }
  }

  /** Draws the next action's kind; those with nothing to act on weigh nothing. */
  private pickKind(busy: boolean, dirty: boolean, down: boolean) {
    const p = this.p;
    const partitioned = this.world.net.partitioned;
    return this.rng.weighted({
      deliver: busy ? p.deliver : 0,
      tick: p.tick,
      sync: dirty ? p.sync : 0,
      propose: p.propose,
      read: p.read,
      drop: busy ? p.drop : 0,
      duplicate: busy ? p.duplicate : 0,
      crash: p.crash,
      restart: down ? p.restart : 0,
      partition: partitioned ? p.partition / 3 : p.partition,
      heal: partitioned ? p.heal : 0,
      diskFail: p.diskFail,
      conf: p.conf,
      transfer: p.transfer,
      snapshot: p.snapshot,
      campaign: p.campaign,
    });
  }

  /** Delivers (maybe out of order), drops or duplicates a message of a busy link. */
  private actOnLink(kind: 'deliver' | 'drop' | 'duplicate', busy: string[]): void {
    const w = this.world;
    const link = this.rng.pick(busy);
    if (kind === 'deliver') {
      const len = w.net.queueLength(link);
      const pos = len > 1 && this.rng.chance(this.p.reorder) ? this.rng.int(1, len - 1) : 0;
      w.deliver(link, pos);
    } else if (kind === 'drop') w.drop(link, this.rng.int(0, w.net.queueLength(link) - 1));
    else w.deliver(link, this.rng.int(0, w.net.queueLength(link) - 1), true);
  }

  private tick(): void {
    const w = this.world;
    // One global time with lease reads (bounded drift); else any one node's clock.
    if (w.settings.clockRates !== null) {
      w.advanceTime(w.settings.tickMs / 2);
      return;
    }
    const n = this.randomUp();
    if (n) w.tick(n.id);
  }

  /** Proposes or reads, at the leader mostly, else at any node that is up. */
  private proposeOrRead(kind: 'propose' | 'read'): void {
    const w = this.world;
    const leader = w.leader();
    const target = leader && this.rng.chance(0.8) ? leader : this.randomUp();
    if (!target) return;
    if (kind === 'propose') w.propose(target.id, this.rng.pick(['a', 'b', 'c', 'd', 'e', 'f']));
    else void w.read(target.id);
  }

  private actOnRandomUp(kind: 'crash' | 'diskFail' | 'snapshot' | 'campaign'): void {
    const w = this.world;
    const n = this.randomUp();
    if (!n) return;
    if (kind === 'crash') w.crash(n.id);
    else if (kind === 'diskFail') w.failNextWrite(n.id);
    else if (kind === 'snapshot') w.snapshotNow(n.id);
    else w.campaign(n.id);
  }

  private heal(): void {
    const w = this.world;
    if (this.rng.chance(0.5)) w.heal();
    else {
      const link = this.rng.pick(w.net.blockedLinks());
      const [a, b] = link.split('>') as [string, string];
      w.net.unblock(requireNodeId(a), requireNodeId(b));
      w.log(`heal link ${link}`);
    }
  }

  private transfer(): void {
    const w = this.world;
    const leader = w.leader();
    if (!leader?.driver) return;
    const voters = leader.driver.status().conf.voters.filter((v) => v !== leader.id);
    if (voters.length) w.transfer(leader.id, this.rng.pick(voters));
  }

  private partition(): void {
    const w = this.world;
    const members = w.ids.filter((id) => w.node(id).started);
    const shape = this.rng.int(0, 3);
    if (shape === 0) {
      // one node cut off both ways (often the leader)
      const leader = w.leader();
      w.isolate([leader && this.rng.chance(0.5) ? leader.id : this.rng.pick(members)]);
    } else if (shape === 1) {
      // split in two groups
      const shuffled = this.rng.shuffle([...members]);
      const cut = this.rng.int(1, Math.max(1, shuffled.length - 1));
      w.isolate(shuffled.slice(0, cut));
    } else {
      // asymmetric: one node cannot reach (shape 2) / cannot hear from (shape 3) some others
      const a = this.rng.pick(members);
      const others = this.rng.shuffle(members.filter((x) => x !== a));
      const k = this.rng.int(1, Math.max(1, others.length));
      const pairs: Array<[NodeId, NodeId]> = others
        .slice(0, k)
        .map((b) => (shape === 2 ? [a, b] : [b, a]));
      w.block(pairs);
    }
  }

  private async confChange(): Promise<void> {
    const w = this.world;
    const leader = w.leader();
    if (!leader?.driver) return;
    const conf = leader.driver.status().conf;
    const progress = leader.driver.status().progress ?? {};
    const options: Array<() => Promise<void> | void> = [];
    const fresh = w.ids.filter((id) => !w.node(id).started && !this.removed.has(id));
    if (fresh.length) {
      const id = fresh[0] as NodeId;
      options.push(async () => {
        await w.startNode(id);
        w.changeMembership(leader.id, { type: 'addLearner', nodeId: id, context: `sim://${id}` });
      });
    }
    for (const l of conf.learners) {
      const pr = progress[l];
      if (pr && (pr.match >= leader.driver.status().commit - 2 || this.rng.chance(0.2))) {
        options.push(() =>
          w.changeMembership(leader.id, { type: 'addVoter', nodeId: l, context: '' }),
        );
      }
    }
    if (conf.voters.length >= 3) {
      for (const v of conf.voters) {
        options.push(() => {
          this.removed.add(v);
          w.changeMembership(leader.id, { type: 'removeNode', nodeId: v });
        });
      }
    }
    for (const l of conf.learners) {
      options.push(() => {
        this.removed.add(l);
        w.changeMembership(leader.id, { type: 'removeNode', nodeId: l });
      });
    }
    if (options.length) await this.rng.pick(options)();
  }
}

/**
 * Reports the liveness violation of a recovery in which no leader committed, with the
 * leader's view; returns a diagnosis when the cause is known.
 */
function reportNoProgress(world: World, budget: number): string | null {
  let diagnosis: string | null = null;
  const leader = world.leader();
  const st = leader?.driver?.status();
  const prog = st?.progress
    ? Object.entries(st.progress)
        .map(([id, p]) => `${id}:${p.state} match ${p.match} next ${p.next} inflight ${p.inflight}`)
        .join('; ')
    : '';
  // A diagnosis, not an excuse: followers in replicate state whose in-flight window is full
  // (of appends that were lost) are never sent to again, so no quorum forms.
  if (st?.progress) {
    const stalled = Object.entries(st.progress).filter(
      ([id, p]) =>
        id !== leader!.id &&
        p.state === 'replicate' &&
        p.inflight >= world.settings.maxInflightMsgs &&
        p.match < st.lastIndex,
    );
    const healthy = st.conf.voters.filter((v) => !stalled.some(([id]) => id === v)).length;
    if (stalled.length > 0 && healthy < Math.floor(st.conf.voters.length / 2) + 1)
      diagnosis = 'stalled-replication-window';
  }
  world.checker.report(
    'liveness',
    `no leader committed a new proposal within ${budget} ticks of recovery (leader now: ${leader?.id ?? 'none'}, max term ${world.maxTerm()}${st ? `, commit ${st.commit}, last ${st.lastIndex}, voters [${st.conf.voters.join(',')}], progress ${prog}` : ''})${diagnosis ? ' [diagnosis: stalled replication window]' : ''}`,
  );
  return diagnosis;
}

/**
 * The recovery phase: heal every link, clear injected disk faults, restart every crashed
 * node; then rounds (tick every node, deliver and sync everything) until a leader has
 * committed a new proposal, within RECOVERY_ELECTION_TIMEOUTS election timeouts, else a
 * liveness violation. Finally the proposer must hold every acknowledged write.
 */
export async function recoveryPhase(
  world: World,
): Promise<{ done: boolean; ticks: number; diagnosis: string | null }> {
  world.log('--- recovery: heal everything, restart crashed nodes ---');
  world.heal();
  for (const n of world.nodes.values()) n.disk.failNextSync = false;
  for (const n of world.nodes.values())
    if (n.started && !n.up) await world.act(() => world.startNode(n.id));
  const budget = RECOVERY_ELECTION_TIMEOUTS * world.settings.electionTicks;
  let seq: number | null = null;
  let proposer: SimNode | null = null;
  let done = false;
  let ticks = 0;
  for (; ticks < budget && world.checker.violation === null; ticks++) {
    await world.round();
    if (seq !== null) {
      const out = world.outcomes.get(seq);
      if (out?.ok) {
        done = true;
        break;
      }
      if (out && !out.ok) seq = null;
    }
    if (seq === null) {
      const leader = world.leader();
      if (leader) {
        proposer = leader;
        seq = world.propose(leader.id, 'recovery');
      }
    }
  }
  let diagnosis: string | null = null;
  if (world.checker.violation === null) {
    if (!done) {
      diagnosis = reportNoProgress(world, budget);
    } else if (proposer?.driver && proposer.sm) {
      // The proposer applied the new entry, so it must hold every write acknowledged before.
      world.checker.checkHoldsAcked(
        proposer.id,
        proposer.driver.status().applied,
        proposer.sm.lastIndex,
        proposer.sm.hash,
      );
    }
  }
  return { done, ticks, diagnosis };
}

export async function runSimulation(opts: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const rng = new Prng(opts.seed);
  const { settings, profile } = chooseSettings(rng, opts);
  const world = new World({
    settings,
    prng: rng.fork(),
    wrapCore: opts.wrapCore,
    coreFactory: opts.coreFactory,
    traceSize: opts.traceSize ?? 50,
    ignore: opts.ignore ?? [],
  });
  const scheduler = new Scheduler(world, rng.fork(), profile);
  let steps = 0;
  let recoverySteps = 0;
  let recoveryTicks = 0;
  let diagnosis: string | null = null;

  const fail = (err: unknown) => {
    const e = err as Error;
    world.checker.report(
      'driver-assertion',
      `uncaught in step ${world.step}: ${e?.stack ?? String(err)}`,
    );
  };

  try {
    await world.act(() => world.boot());
    // Fault phase.
    for (; steps < opts.steps && world.checker.violation === null; steps++) {
      await world.act(() => scheduler.pickAndAct());
    }
    // Recovery phase.
    if (world.checker.violation === null && !opts.noRecovery) {
      const before = world.step;
      const rec = await recoveryPhase(world);
      recoveryTicks = rec.ticks;
      recoverySteps = world.step - before;
      diagnosis = rec.diagnosis;
    }
  } catch (err) {
    fail(err);
  }
  return {
    seed: opts.seed,
    settings,
    profile,
    steps: steps + recoverySteps,
    recoverySteps,
    recoveryTicks,
    violation: world.checker.violation,
    trace: world.trace.tail(),
    diagnosis,
    stats: world.stats,
    elapsedMs: performance.now() - t0,
  };
}
