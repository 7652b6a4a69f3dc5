/**
 * The simulator's command line.
 *
 *   npm run sim -- --seed <n> --steps <m> [--nodes <k>]   replay one run (prints the trace tail on
 *   a violation)
 *   npm run sim -- --runs <r> --steps <m> [--nodes <k>]   r runs from random seeds
 *   npm run sim -- --coordinator [--seed <n> | --runs <r>] ...   the same with the real coordinator
 *                                                          on every node, TMs and RMs
 *                                                          (coordinator/run.ts)
 *
 * Prints the seed and every setting first. Exits 1 if any run violated an invariant.
 * Ends a multi-run with `runs: R, steps: S, violations: V`.
 */
import { randomInt } from 'node:crypto';
import { chooseSettings, describeSettings, runSimulation, type RunResult } from './runner.ts';
import { Prng } from '../support/prng.ts';
import { runCoordinatorSimulation, type CoordinatorRunResult } from './coordinator/run.ts';
import { COORDINATOR_MUTANTS, type CoordinatorMutant } from './coordinator/state-machine.ts';

interface Args {
  seed: number | null;
  baseSeed: number | null;
  runs: number;
  steps: number;
  nodes: number | undefined;
  verbose: boolean;
  coordinator: boolean;
  mutant: CoordinatorMutant;
}

const USAGE =
  'usage: sim [--coordinator [--mutant decision-flip|forgetful-register|resume-flip]] ' +
  '[--seed N | --runs R [--base-seed B]] [--steps M] [--nodes 1|3|5] [--verbose]';

/** A non-negative integer option value; exits 2 otherwise. */
function intArg(name: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < 0) {
    console.error(`--${name} needs a non-negative integer, got ${v ?? 'nothing'}`);
    process.exit(2);
  }
  return n;
}

/** The `--nodes` value: 1, 3 or 5; exits 2 otherwise. */
function nodesArg(v: string | undefined): number {
  const n = intArg('nodes', v);
  if (n !== 1 && n !== 3 && n !== 5) {
    console.error('--nodes must be 1, 3 or 5');
    process.exit(2);
  }
  return n;
}

/** The `--mutant` value: one of COORDINATOR_MUTANTS; exits 2 otherwise. */
function mutantArg(v: string | undefined): CoordinatorMutant {
  const m = v as CoordinatorMutant;
  if (!COORDINATOR_MUTANTS.includes(m)) {
    console.error(`--mutant must be one of ${COORDINATOR_MUTANTS.join(', ')}`);
    process.exit(2);
  }
  return m;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seed: null,
    baseSeed: null,
    runs: 1,
    steps: 2000,
    nodes: undefined,
    verbose: false,
    coordinator: false,
    mutant: 'none',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--seed':
        args.seed = intArg('seed', argv[++i]);
        break;
      case '--base-seed':
        args.baseSeed = intArg('base-seed', argv[++i]);
        break;
      case '--runs':
        args.runs = intArg('runs', argv[++i]);
        break;
      case '--steps':
        args.steps = intArg('steps', argv[++i]);
        break;
      case '--nodes':
        args.nodes = nodesArg(argv[++i]);
        break;
      case '--coordinator':
        args.coordinator = true;
        break;
      case '--mutant':
        args.mutant = mutantArg(argv[++i]);
        break;
      case '--verbose':
      case '-v':
        args.verbose = true;
        break;
      case '--help':
      case '-h':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        console.error(`unknown argument ${a}`);
        process.exit(2);
    }
  }
  return args;
}

function printViolation(r: RunResult): void {
  const v = r.violation;
  if (!v) return;
  console.log(`VIOLATION seed=${r.seed}: [${v.invariant}] ${v.message}`);
  console.log(`--- last ${r.trace.length} events ---`);
  for (const line of r.trace) console.log(`  ${line}`);
  console.log(
    `--- replay: npm run sim -- --seed ${r.seed} --steps ${r.steps - r.recoverySteps} --nodes ${r.settings.nodes} ---`,
  );
}

function describeCoordinatorRun(r: CoordinatorRunResult): string {
  const s = r.stats;
  const skews = Object.entries(r.skews)
    .map(([id, ms]) => `${id}:${ms}`)
    .join(',');
  return `seed=${r.seed} nodes=${r.settings.nodes} skews=[${skews}] steps=${r.steps} begun=${s.begun} branches=${s.registered} committed=${s.committed} rolledBack=${s.rolledBack} gaveUp=${s.gaveUp} rmCalls=${s.rmCalls} unretryable=${s.unretryable} operator=${s.operatorActions} forced=${s.forced} horizonStops=${s.horizonStops} horizonRefused=${s.horizonRefused} resumedFailed=${s.resumedFailed} crashes=${s.crashes} leaderChanges=${s.leaderChanges} recoveryRounds=${s.recoveryRounds} captures=${s.captures} appliedDuringCaptures=${s.appliedDuringCaptures} in ${r.elapsedMs.toFixed(0)} ms`;
}

function printCoordinatorViolation(r: CoordinatorRunResult, steps: number, mutant: string): void {
  const v = r.violation;
  if (!v) return;
  console.log(`VIOLATION seed=${r.seed}: [${v.invariant}] ${v.message}`);
  console.log(`--- last ${r.trace.length} events ---`);
  for (const line of r.trace) console.log(`  ${line}`);
  console.log(
    `--- replay: npm run sim -- --coordinator --seed ${r.seed} --steps ${steps}${mutant !== 'none' ? ` --mutant ${mutant}` : ''} ---`,
  );
}

/** The coordinator mode: one replayable run, or many from a base seed. */
async function mainCoordinator(args: Args): Promise<void> {
  const run = (seed: number) =>
    runCoordinatorSimulation({
      seed,
      steps: args.steps,
      mutant: args.mutant,
      ...(args.nodes !== undefined ? { nodes: args.nodes } : {}),
    });
  if (args.seed !== null) {
    const r = await run(args.seed);
    console.log(describeCoordinatorRun(r));
    if (args.verbose) for (const line of r.trace) console.log(`  ${line}`);
    if (r.violation) {
      printCoordinatorViolation(r, args.steps, args.mutant);
      process.exit(1);
    }
    console.log('ok: no violation');
    return;
  }
  const base = args.baseSeed ?? randomInt(0, 2 ** 31);
  console.log(
    `coordinator mode: base seed=${base} runs=${args.runs} steps=${args.steps}${args.mutant !== 'none' ? ` mutant=${args.mutant}` : ''} (replay the batch with --base-seed; a failing run prints its own seed)`,
  );
  const seeds = new Prng(base);
  const t0 = performance.now();
  let steps = 0;
  let violations = 0;
  let begun = 0;
  const ops = {
    unretryable: 0,
    resumedFailed: 0,
    horizonStops: 0,
    horizonRefused: 0,
    forced: 0,
    captures: 0,
    appliedDuringCaptures: 0,
  };
  for (let i = 0; i < args.runs; i++) {
    const seed = seeds.nextU32() >>> 1;
    const r = await run(seed);
    steps += r.steps;
    begun += r.stats.begun;
    for (const k of Object.keys(ops) as (keyof typeof ops)[]) ops[k] += r.stats[k];
    if (args.verbose) console.log(`run ${i + 1}: ${describeCoordinatorRun(r)}`);
    if (r.violation) {
      violations++;
      console.log(describeCoordinatorRun(r));
      printCoordinatorViolation(r, args.steps, args.mutant);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `elapsed ${secs.toFixed(1)} s, ${(steps / secs).toFixed(0)} steps/s, ${begun} transactions begun`,
  );
  console.log(
    `unretryable answers ${ops.unretryable}, failed ends resumed ${ops.resumedFailed} (applied, any node), stopped at the retry horizon ${ops.horizonStops}, resumes refused past it ${ops.horizonRefused}, forced resumes ${ops.forced}`,
  );
  console.log(
    `snapshot captures ${ops.captures}, entries applied between their steps ${ops.appliedDuringCaptures}`,
  );
  console.log(`runs: ${args.runs}, steps: ${steps}, violations: ${violations}`);
  if (violations > 0) process.exit(1);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.coordinator) return mainCoordinator(args);
  if (args.seed !== null) {
    // runSimulation draws the settings first from the same seed: print them before the run starts.
    const chosen = chooseSettings(new Prng(args.seed), {
      seed: args.seed,
      steps: args.steps,
      nodes: args.nodes,
    });
    console.log(describeSettings(args.seed, args.steps, chosen.settings, chosen.profile));
    const r = await runSimulation({ seed: args.seed, steps: args.steps, nodes: args.nodes });
    const s = r.stats;
    console.log(
      `steps=${r.steps} (recovery ${r.recoverySteps} steps, ${r.recoveryTicks} ticks) proposed=${s.proposed} acked=${s.acked} reads=${s.readsDone}/${s.reads} (lease ${s.leaseReads}) crashes=${s.crashes} fatals=${s.fatals} leaderChanges=${s.leaderChanges} confChanges=${s.confChanges} snapshotsInstalled=${s.snapshotsSent} refused=${JSON.stringify(s.refused)} in ${r.elapsedMs.toFixed(0)} ms`,
    );
    if (args.verbose) for (const line of r.trace) console.log(`  ${line}`);
    if (r.violation) {
      printViolation(r);
      process.exit(1);
    }
    console.log('ok: no violation');
    return;
  }

  const base = args.baseSeed ?? randomInt(0, 2 ** 31);
  console.log(
    `base seed=${base} runs=${args.runs} steps=${args.steps}${args.nodes ? ` nodes=${args.nodes}` : ''} (replay the batch with --base-seed; a failing run prints its own seed)`,
  );
  const seeds = new Prng(base);
  const t0 = performance.now();
  let steps = 0;
  let violations = 0;
  let acked = 0;
  const overlap = { appendsPipelined: 0, appliedUnblocked: 0, appliedBeforeOwnSync: 0 };
  const byInvariant = new Map<string, number>();
  let knownBug = 0;
  for (let i = 0; i < args.runs; i++) {
    const seed = seeds.nextU32() >>> 1;
    const r = await runSimulation({ seed, steps: args.steps, nodes: args.nodes });
    steps += r.steps;
    acked += r.stats.acked;
    for (const k of Object.keys(overlap) as Array<keyof typeof overlap>) overlap[k] += r.stats[k];
    if (args.verbose)
      console.log(
        `run ${i + 1}: ${describeSettings(seed, args.steps, r.settings, r.profile)} → ${r.violation ? 'VIOLATION' : 'ok'} (${r.steps} steps, ${r.stats.acked} acked, ${r.elapsedMs.toFixed(0)} ms)`,
      );
    if (r.violation) {
      violations++;
      byInvariant.set(r.violation.invariant, (byInvariant.get(r.violation.invariant) ?? 0) + 1);
      if (r.diagnosis === 'stalled-replication-window') knownBug++;
      console.log(describeSettings(seed, args.steps, r.settings, r.profile));
      printViolation(r);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `elapsed ${secs.toFixed(1)} s, ${(steps / secs).toFixed(0)} steps/s, ${acked} proposals acknowledged`,
    `\npipelined appends ${overlap.appendsPipelined}, entries applied during a round ${overlap.appliedUnblocked}, applied before their node's own sync ${overlap.appliedBeforeOwnSync}`,
  );
  if (violations > 0) {
    console.log(
      `violations by invariant: ${[...byInvariant].map(([k, v]) => `${k}=${v}`).join(' ')}`,
    );
    if (knownBug > 0)
      console.log(
        `${knownBug} of them look like a stalled replication window (followers in replicate state with a full in-flight window)`,
      );
  }
  console.log(`runs: ${args.runs}, steps: ${steps}, violations: ${violations}`);
  if (violations > 0) process.exit(1);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
