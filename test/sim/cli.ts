/**
 * The simulator's command line.
 *
 *   npm run sim -- --seed <n> --steps <m> [--nodes <k>]   replay one run (prints the trace tail on
 *   a violation)
 *   npm run sim -- --runs <r> --steps <m> [--nodes <k>]   r runs from random seeds
 *
 * Prints the seed and every setting first. Exits 1 if any run violated an invariant.
 * Ends a multi-run with `runs: R, steps: S, violations: V`.
 */
import { randomInt } from 'node:crypto';
import { chooseSettings, describeSettings, runSimulation, type RunResult } from './runner.ts';
import { Prng } from '../support/prng.ts';

interface Args {
  seed: number | null;
  baseSeed: number | null;
  runs: number;
  steps: number;
  nodes: number | undefined;
  verbose: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seed: null,
    baseSeed: null,
    runs: 1,
    steps: 2000,
    nodes: undefined,
    verbose: false,
  };
  const int = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < 0) {
      console.error(`--${name} needs a non-negative integer, got ${v ?? 'nothing'}`);
      process.exit(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--seed':
        args.seed = int('seed', argv[++i]);
        break;
      case '--base-seed':
        args.baseSeed = int('base-seed', argv[++i]);
        break;
      case '--runs':
        args.runs = int('runs', argv[++i]);
        break;
      case '--steps':
        args.steps = int('steps', argv[++i]);
        break;
      case '--nodes': {
        const n = int('nodes', argv[++i]);
        if (n !== 1 && n !== 3 && n !== 5) {
          console.error('--nodes must be 1, 3 or 5');
          process.exit(2);
        }
        args.nodes = n;
        break;
      }
      case '--verbose':
      case '-v':
        args.verbose = true;
        break;
      case '--help':
      case '-h':
        console.log(
          'usage: sim [--seed N | --runs R [--base-seed B]] [--steps M] [--nodes 1|3|5] [--verbose]',
        );
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

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
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
  const byInvariant = new Map<string, number>();
  let knownBug = 0;
  for (let i = 0; i < args.runs; i++) {
    const seed = seeds.nextU32() >>> 1;
    const r = await runSimulation({ seed, steps: args.steps, nodes: args.nodes });
    steps += r.steps;
    acked += r.stats.acked;
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
