/**
 * One coordinator-mode run: the simulated Raft cluster of runner.ts (same settings and
 * faults from the seed: crashes, partitions, reordering, disk failures, membership changes,
 * leadership transfers) with the REAL coordinator on every node (state machine, Raft session
 * store, phase-two driver), per-node wall-clock skew (usually seconds, sometimes an hour),
 * simulated TMs and RMs that retry with request ids, and RMs whose phase two fails for a
 * while (or answer unretryably: the transaction ends *Failed), and an operator who retries,
 * stops and resumes transactions. Seata's invariants are checked after every step, and how
 * statuses move after every applied command (clients.ts); then the recovery phase heals
 * everything, the operator resumes what failed or was stopped, and every transaction must
 * end, every acknowledged begin and decision having survived. Same seed, same run.
 */
import { DEFAULT_SNAPSHOT_SLICE_MS } from '../../../src/raft/driver.ts';
import { nodeIdEntries, requireNodeId, type NodeId } from '../../../src/shared/ids.ts';
import { Prng } from '../../support/prng.ts';
import type { Violation } from '../invariants.ts';
import { Scheduler, chooseSettings, type FaultProfile } from '../runner.ts';
import { World, type SimSettings } from '../world.ts';
import { SimClients } from './clients.ts';
import { CoordinatorServices, SimRms } from './services.ts';
import { CoordinatorSimStateMachine, machineFor, type CoordinatorMutant } from './state-machine.ts';

export interface CoordinatorRunOptions {
  seed: number;
  steps: number;
  nodes?: number;
  /** A deliberately broken coordinator (negative tests). */
  mutant?: CoordinatorMutant;
  traceSize?: number;
}

export interface CoordinatorRunResult {
  seed: number;
  settings: SimSettings;
  profile: FaultProfile;
  skews: Record<string, number>;
  steps: number;
  violation: Violation | null;
  trace: string[];
  stats: SimClients['stats'] & {
    recoveryRounds: number;
    leaderChanges: number;
    crashes: number;
    /** Snapshot captures the nodes completed, and entries applied between their steps. */
    captures: number;
    appliedDuringCaptures: number;
  };
  elapsedMs: number;
}

/**
 * Rounds (every node ticks once, then everything is delivered and synced) the recovery may
 * take.
 */
export const COORDINATOR_RECOVERY_ROUNDS = 1_500;

/** Rows a capture's slice holds in even seeds' runs: a few, so a capture spans many turns. */
const CAPTURE_SLICE_ROWS = 1;
/** Empty steps before each of them (one per 1 ms turn): a capture as slow as a large state's. */
const CAPTURE_IDLE_STEPS = 4;

/**
 * Snapshots: odd seeds encode as a node does with its default (DEFAULT_SNAPSHOT_SLICE_MS; the
 * simulator's states are small, so at once); even seeds one step of CAPTURE_SLICE_ROWS rows
 * per turn, after CAPTURE_IDLE_STEPS idle turns (as a large state's capture), so entries apply
 * between the steps of every capture (copy-on-write: the state machine's wrapper checks each
 * capture's bytes against the state at its index).
 */
function captureSliceMs(seed: number): number {
  return seed % 2 === 0 ? 0 : DEFAULT_SNAPSHOT_SLICE_MS;
}

/** A node's state machine, kept in `made` too (the run sums their capture counts). */
function simMachine(
  opts: CoordinatorRunOptions,
  made: CoordinatorSimStateMachine[],
): CoordinatorSimStateMachine {
  const sm = new CoordinatorSimStateMachine(
    machineFor(opts.mutant ?? 'none'),
    ...(opts.seed % 2 === 0 ? [CAPTURE_SLICE_ROWS, CAPTURE_IDLE_STEPS] : []),
  );
  made.push(sm);
  return sm;
}

/** The world's counts; the captures the machines completed, entries applied meanwhile. */
function worldCounts(
  world: World,
  machines: readonly CoordinatorSimStateMachine[],
): { leaderChanges: number; crashes: number; captures: number; appliedDuringCaptures: number } {
  let [captures, appliedDuringCaptures] = [0, 0];
  for (const m of machines) {
    captures += m.captureStats.captures;
    appliedDuringCaptures += m.captureStats.appliedDuring;
  }
  const { leaderChanges, crashes } = world.stats;
  return { leaderChanges, crashes, captures, appliedDuringCaptures };
}

export async function runCoordinatorSimulation(
  opts: CoordinatorRunOptions,
): Promise<CoordinatorRunResult> {
  const t0 = performance.now();
  const rng = new Prng(opts.seed);
  const { settings, profile: drawn } = chooseSettings(rng, {
    seed: opts.seed,
    steps: opts.steps,
    // A coordinator entry batches a turn's commands: the Raft's uncommitted-bytes bound is
    // left at its production size (600 bytes would refuse a large batch forever).
    settings: { maxUncommittedBytes: 1 << 20, snapshotSliceMs: captureSliceMs(opts.seed) },
    ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
  });
  // Client requests come from the TMs; the Raft-level key-value proposals are off.
  const profile: FaultProfile = { ...drawn, propose: 0 };
  const own = rng.fork();
  const skews = drawSkews(own, settings);
  const rms = new SimRms();
  // The retry horizon (from begin): often within a run's few simulated seconds.
  const retryHorizonMs = own.pick([2_000, 4_000, 600_000]);
  const machines: CoordinatorSimStateMachine[] = [];
  const services = new CoordinatorServices(new Map(nodeIdEntries(skews)), rms, { retryHorizonMs });
  let clients: SimClients | null = null;
  const world = new World({
    settings,
    prng: rng.fork(),
    traceSize: opts.traceSize ?? 60,
    stateMachine: () => simMachine(opts, machines),
    onNodeUp: (node) => {
      const sm = node.sm as CoordinatorSimStateMachine | null;
      if (sm) sm.onCommand = (applied) => clients?.observeCommand(node.id, applied);
      services.up(node);
    },
    onNodeDown: (node) => {
      services.down(node);
      clients?.nodeDown(node.id);
    },
    onStep: () => clients?.check(),
  });
  // A command proposed again (a retried driver step) is the same bytes at another index.
  world.checker.repeatedPayloadsAllowed = true;
  clients = new SimClients(world, services, rms, own.fork(), own.int(2, 5));
  const c = drawClientFaults(own, clients, retryHorizonMs);
  const scheduler = new Scheduler(world, rng.fork(), profile);
  const clientShare = own.pick([0.2, 0.35]);
  const driver: StepDriver = { world, clients: c, rms, services, scheduler, own, clientShare };
  let steps = 0;
  let recoveryRounds = 0;
  try {
    await world.act(() => world.boot());
    for (; steps < opts.steps && world.checker.violation === null; steps++) await driveStep(driver);
    if (world.checker.violation === null) recoveryRounds = await recover(world, c, rms, services);
  } catch (err) {
    world.checker.report(
      'driver-assertion',
      `uncaught in step ${world.step}: ${(err as Error)?.stack ?? String(err)}`,
    );
  }
  return {
    seed: opts.seed,
    settings,
    profile,
    skews,
    steps: world.step,
    violation: world.checker.violation,
    trace: world.trace.tail(),
    stats: { ...c.stats, recoveryRounds, ...worldCounts(world, machines) },
    elapsedMs: performance.now() - t0,
  };
}

/** The RMs' failure rates, drawn from `own`, and the horizon the checker expects. */
function drawClientFaults(own: Prng, clients: SimClients, retryHorizonMs: number): SimClients {
  clients.retryHorizonMs = retryHorizonMs;
  clients.flaky = own.pick([0, 0.2, 0.5]);
  clients.unretryable = own.pick([0.1, 0.3, 0.5]);
  return clients;
}

/**
 * Per-node wall-clock skew, drawn from `own`: usually within five seconds, sometimes an hour
 * either way.
 */
function drawSkews(own: Prng, settings: SimSettings): Record<NodeId, number> {
  const skews: Record<NodeId, number> = {};
  for (let i = 1; i <= settings.nodes + settings.spares; i++)
    skews[requireNodeId(`n${i}`)] = own.chance(0.15)
      ? own.pick([-1, 1]) * 3_600_000
      : own.int(-5_000, 5_000);
  return skews;
}

/** What one step of the run acts on, and the share of steps the TMs and RMs take. */
interface StepDriver {
  world: World;
  clients: SimClients;
  rms: SimRms;
  services: CoordinatorServices;
  scheduler: Scheduler;
  own: Prng;
  clientShare: number;
}

/**
 * One step of the run, drawn from `own`: a TM/RM step, the RMs going (un)reachable, a node's
 * wall clock stepping, or else a Raft-level step or fault from the scheduler.
 */
async function driveStep(d: StepDriver): Promise<void> {
  const { world, rms, own, clientShare } = d;
  const r = own.float();
  if (r < clientShare) await world.act(() => d.clients.step());
  else if (r < clientShare + 0.005)
    await world.act(() => {
      rms.down = !rms.down;
      world.log(`RMs ${rms.down ? 'unreachable' : 'reachable'}`);
    });
  else if (r < clientShare + 0.015) await world.act(() => d.clients.operatorStep());
  else if (r < clientShare + 0.016) {
    const id = own.pick(world.ids);
    const ms = own.pick([-3_600_000, -30_000, 30_000, 3_600_000]);
    await world.act(() => {
      d.services.stepClock(id, ms);
      world.log(`wall clock of ${id} steps ${ms} ms`);
    });
  } else await world.act(() => d.scheduler.pickAndAct());
}

/**
 * Heals everything (links, disks, crashed nodes, RMs), lets the TMs finish the transaction
 * they hold and starts no new one; then every transaction must end within the budget, and
 * the leader must hold every acknowledged begin and decision.
 */
async function recover(
  world: World,
  clients: SimClients,
  rms: SimRms,
  services: CoordinatorServices,
): Promise<number> {
  world.log('--- recovery: heal everything, restart crashed nodes, RMs healthy ---');
  clients.stopping = true;
  clients.flaky = 0;
  clients.unretryable = 0;
  rms.down = false;
  world.heal();
  for (const n of world.nodes.values()) n.disk.failNextSync = false;
  for (const n of world.nodes.values())
    if (n.started && !n.up) await world.act(() => world.startNode(n.id));
  let rounds = 0;
  for (; rounds < COORDINATOR_RECOVERY_ROUNDS && world.checker.violation === null; rounds++) {
    await world.round();
    await world.act(() => clients.stepAll());
    // The operator resumes what failed or was stopped (forced: the horizon may have passed).
    if (rounds % 25 === 0) await world.act(() => clients.operatorSweep());
    const leader = world.leader();
    const machine = (leader?.sm as CoordinatorSimStateMachine | null)?.coordinator;
    // A leader that applied its first entry of the term (its store serves): it holds every
    // committed command, so what it does not hold was lost.
    const serving = leader ? services.byNode.get(leader.id)?.store.isLeader() === true : false;
    if (clients.allDone() && machine && serving && machine.liveSessionCount() === 0) {
      clients.checkAcked(leader!.id, machine);
      return rounds;
    }
  }
  if (world.checker.violation === null) {
    const leader = world.leader();
    const machine = (leader?.sm as CoordinatorSimStateMachine | null)?.coordinator;
    const live = machine
      ? machine
          .liveXids()
          .slice(0, 5)
          .map((x) => `${x}:${machine.getSession(x)!.status}`)
      : [];
    const busy = clients.tms.filter((t) => t.phase !== 'done').map((t) => `tm${t.id}:${t.phase}`);
    const first = machine?.liveXids()[0];
    if (first) world.log(`stuck session: ${JSON.stringify(machine!.getSession(first))}`);
    world.checker.report(
      'coordinator-liveness',
      `not every transaction ended within ${COORDINATOR_RECOVERY_ROUNDS} rounds of a healthy cluster (leader ${leader?.id ?? 'none'}; live ${machine?.liveSessionCount() ?? '?'} e.g. [${live.join(', ')}]; TMs not done [${busy.join(', ')}])`,
    );
  }
  return rounds;
}
