/**
 * The nemesis schedule: a pure function of the seed and the settings, computed and
 * printed BEFORE anything starts, so a run can be replayed and a failure reported by its
 * seed alone.
 *
 * The schedule fixes each step's kind, its abstract target (the leader, a follower, a
 * random node — resolved when the step runs, since who leads is up to the cluster), a
 * `pick` that deterministically chooses among several candidates, its durations, and the
 * quiet gap after it. Steps run one after another: a fault phase per step, then a recovery
 * gap in which the cluster must serve again.
 *
 * The first round touches every enabled nemesis once (in a seeded order), so even a short
 * run exercises all of them; further steps are drawn at random until the planned time
 * reaches `durationMs`.
 */
import {
  CLIENT_DOWN_MAX_MS,
  CLIENT_DOWN_MIN_MS,
  DOWN_MAX_MS,
  DOWN_MIN_MS,
  GAP_MAX_MS,
  GAP_MIN_MS,
  PARTITION_MAX_MS,
  PARTITION_MIN_MS,
  PAUSE_MAX_ELECTION_TIMEOUTS,
  PAUSE_MIN_ELECTION_TIMEOUTS,
  WARMUP_MS,
} from './limits.ts';
import { Prng } from '../test/support/prng.ts';

export const NEMESIS_KINDS = [
  'kill',
  'pause',
  'partition',
  'restart-all',
  'membership',
  'client-kill',
] as const;
export type NemesisKind = (typeof NEMESIS_KINDS)[number];

/** Which node a step hits; resolved when it runs. */
export type NodeTarget = 'leader' | 'follower' | 'random';

interface StepBase {
  /** Position in the schedule, from 1. */
  n: number;
  /** Planned start, ms after the fault phase began (an estimate: steps run back to back). */
  plannedAtMs: number;
  /** Quiet time after the step before the next one, ms. */
  gapAfterMs: number;
}

export type NemesisStep = StepBase &
  (
    | { kind: 'kill'; target: NodeTarget; pick: number; downMs: number }
    | { kind: 'pause'; target: NodeTarget; pick: number; pauseMs: number }
    | {
        kind: 'partition';
        target: NodeTarget;
        pick: number;
        mode: 'cut' | 'blackhole';
        holdMs: number;
      }
    | { kind: 'restart-all'; downMs: number }
    | { kind: 'membership'; target: NodeTarget; pick: number }
    | { kind: 'client-kill'; client: number; downMs: number }
  );

export interface ScheduleSettings {
  seed: number;
  /** Planned length of the fault phase, ms (the first round may need longer). */
  durationMs: number;
  kinds: readonly NemesisKind[];
  /** Client processes (client-kill picks among them). */
  clients: number;
  /** The cluster's largest election timeout (2 · electionTicks · tickMs), ms: pauses exceed it. */
  electionTimeoutMaxMs: number;
}

/**
 * Rough time a step takes beyond its own durations (a node process starting, a membership change),
 * ms. For planning only.
 */
const STEP_OVERHEAD_ESTIMATE_MS: Record<NemesisKind, number> = {
  kill: 3_000,
  pause: 500,
  partition: 500,
  'restart-all': 4_000,
  membership: 8_000,
  'client-kill': 3_000,
};

export function parseNemesisList(text: string): NemesisKind[] {
  if (text.trim() === '' || text.trim() === 'none') return [];
  if (text.trim() === 'all') return [...NEMESIS_KINDS];
  const kinds = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const k of kinds) {
    if (!(NEMESIS_KINDS as readonly string[]).includes(k))
      throw new Error(
        `unknown nemesis "${k}"; expected some of ${NEMESIS_KINDS.join(', ')} (or all, none)`,
      );
  }
  return [...new Set(kinds)] as NemesisKind[];
}

export function planSchedule(s: ScheduleSettings): NemesisStep[] {
  const rnd = new Prng(s.seed).fork('nemesis');
  if (s.kinds.length === 0) return [];
  const kinds = s.kinds.filter((k) => k !== 'client-kill' || s.clients > 0);
  const steps: NemesisStep[] = [];
  let t = WARMUP_MS;
  const firstRound = rnd.shuffle(kinds);
  for (let i = 0; ; i++) {
    const kind = i < firstRound.length ? firstRound[i]! : t < s.durationMs ? rnd.pick(kinds) : null;
    if (kind === null) break;
    const step = drawStep(rnd, kind, steps.length + 1, t, s);
    steps.push(step);
    t += estimatedMs(step) + step.gapAfterMs;
  }
  return steps;
}

function drawStep(
  rnd: Prng,
  kind: NemesisKind,
  n: number,
  plannedAtMs: number,
  s: ScheduleSettings,
): NemesisStep {
  const base = { n, plannedAtMs, gapAfterMs: rnd.int(GAP_MIN_MS, GAP_MAX_MS) };
  const target = (): NodeTarget => rnd.pick(['leader', 'leader', 'follower', 'random'] as const); // leaders are where failovers happen: twice as likely
  const pick = () => rnd.int(0, 1_000_000);
  switch (kind) {
    case 'kill':
      return {
        ...base,
        kind,
        target: target(),
        pick: pick(),
        downMs: rnd.int(DOWN_MIN_MS, DOWN_MAX_MS),
      };
    case 'pause':
      return {
        ...base,
        kind,
        target: target(),
        pick: pick(),
        pauseMs: rnd.int(
          Math.ceil(PAUSE_MIN_ELECTION_TIMEOUTS * s.electionTimeoutMaxMs),
          Math.ceil(PAUSE_MAX_ELECTION_TIMEOUTS * s.electionTimeoutMaxMs),
        ),
      };
    case 'partition':
      return {
        ...base,
        kind,
        target: target(),
        pick: pick(),
        mode: rnd.chance(0.5) ? 'cut' : 'blackhole',
        holdMs: rnd.int(PARTITION_MIN_MS, PARTITION_MAX_MS),
      };
    case 'restart-all':
      return { ...base, kind, downMs: rnd.int(DOWN_MIN_MS, DOWN_MAX_MS) };
    case 'membership':
      return { ...base, kind, target: target(), pick: pick() };
    case 'client-kill':
      return {
        ...base,
        kind,
        client: rnd.int(0, s.clients - 1),
        downMs: rnd.int(CLIENT_DOWN_MIN_MS, CLIENT_DOWN_MAX_MS),
      };
  }
}

/** The planned length of a step without its gap, ms. */
export function estimatedMs(step: NemesisStep): number {
  const own =
    step.kind === 'kill' || step.kind === 'restart-all' || step.kind === 'client-kill'
      ? step.downMs
      : step.kind === 'pause'
        ? step.pauseMs
        : step.kind === 'partition'
          ? step.holdMs
          : 0;
  return own + STEP_OVERHEAD_ESTIMATE_MS[step.kind];
}

/** Resolves an abstract target among the candidates now: `pick` indexes a sorted list. */
export function resolveTarget(
  target: NodeTarget,
  pick: number,
  nodes: { leader: string | null; members: readonly string[] },
): string | null {
  const members = [...nodes.members].sort();
  if (members.length === 0) return null;
  if (target === 'leader') return nodes.leader ?? members[pick % members.length]!;
  if (target === 'follower') {
    const followers = members.filter((m) => m !== nodes.leader);
    return followers.length > 0 ? followers[pick % followers.length]! : null;
  }
  return members[pick % members.length]!;
}

/** One line per step, for the run's preamble. */
export function describeStep(step: NemesisStep): string {
  const at = `≈${(step.plannedAtMs / 1000).toFixed(1)}s`;
  const gap = `then ${(step.gapAfterMs / 1000).toFixed(1)}s quiet`;
  let what: string;
  switch (step.kind) {
    case 'kill':
      what = `SIGKILL ${step.target} (pick ${step.pick}), restart after ${step.downMs} ms`;
      break;
    case 'pause':
      what = `SIGSTOP ${step.target} (pick ${step.pick}) for ${step.pauseMs} ms, then SIGCONT`;
      break;
    case 'partition':
      what = `isolate ${step.target} (pick ${step.pick}) by ${step.mode} for ${step.holdMs} ms`;
      break;
    case 'restart-all':
      what = `SIGKILL every node, restart all after ${step.downMs} ms`;
      break;
    case 'membership':
      what = `remove ${step.target} (pick ${step.pick}) through changeCluster, wipe it, re-add it`;
      break;
    case 'client-kill':
      what = `SIGKILL client c${step.client} mid-transaction, restart it after ${step.downMs} ms`;
      break;
  }
  return `#${String(step.n).padStart(2)} ${at.padStart(7)} ${step.kind.padEnd(11)} ${what}; ${gap}`;
}
