/**
 * The coordinator under the simulator (test/sim/coordinator/): the real coordinator on every
 * simulated node, TMs and RMs that retry with request ids, crashes, partitions, leader
 * changes and clock skew. Runs are replayable from their seed; a broken coordinator is
 * caught; seeds that once found a bug stay fixed.
 */
import { describe, expect, it } from 'vitest';
import { runCoordinatorSimulation } from './coordinator/run.ts';

const describeViolation = (r: { violation: { invariant: string; message: string } | null }) =>
  r.violation ? `[${r.violation.invariant}] ${r.violation.message}` : '';

describe('the coordinator under the simulator', () => {
  it('the same seed replays the same run, event for event', async () => {
    const a = await runCoordinatorSimulation({ seed: 11, steps: 1000, traceSize: 400 });
    const b = await runCoordinatorSimulation({ seed: 11, steps: 1000, traceSize: 400 });
    expect(b.trace).toEqual(a.trace);
    expect(b.stats).toEqual(a.stats);
    expect(a.violation, describeViolation(a)).toBeNull();
  });

  it('random runs keep every invariant, and transactions do commit, roll back and retry', async () => {
    const totals = {
      begun: 0,
      committed: 0,
      rolledBack: 0,
      rmCalls: 0,
      recovered: 0,
      resumedFailed: 0,
      horizonStops: 0,
    };
    for (let seed = 100; seed < 112; seed++) {
      const r = await runCoordinatorSimulation({ seed, steps: 1500 });
      expect(r.violation, `seed ${seed}: ${describeViolation(r)}`).toBeNull();
      totals.resumedFailed += r.stats.resumedFailed;
      totals.horizonStops += r.stats.horizonStops;
      totals.begun += r.stats.begun;
      totals.committed += r.stats.committed;
      totals.rolledBack += r.stats.rolledBack;
      totals.rmCalls += r.stats.rmCalls;
      if (r.stats.recoveryRounds > 0) totals.recovered += 1;
    }
    // The runs did what they are for (a run that never commits checks nothing).
    expect(totals.begun).toBeGreaterThan(50);
    expect(totals.committed).toBeGreaterThan(20);
    expect(totals.rolledBack).toBeGreaterThan(5);
    expect(totals.rmCalls).toBeGreaterThan(totals.committed);
    expect(totals.recovered).toBeGreaterThan(6);
    // Failed ends were resumed by the operator, and retries stopped at the horizon.
    expect(totals.resumedFailed).toBeGreaterThan(3);
    expect(totals.horizonStops).toBeGreaterThan(0);
  });

  it('catches a state machine whose resume of a failed end overturns the decision', async () => {
    const caught: string[] = [];
    for (let seed = 1; seed <= 20; seed++) {
      const r = await runCoordinatorSimulation({ seed, steps: 1500, mutant: 'resume-flip' });
      if (r.violation) {
        expect(['end-state-moves', 'decision-final'], describeViolation(r)).toContain(
          r.violation.invariant,
        );
        caught.push(`${seed}`);
      }
    }
    expect(caught.length).toBeGreaterThanOrEqual(2);
  });

  it('catches a state machine that lets a rollback overturn a commit decision', async () => {
    const caught: string[] = [];
    for (let seed = 1; seed <= 20; seed++) {
      const r = await runCoordinatorSimulation({ seed, steps: 1500, mutant: 'decision-flip' });
      if (r.violation) {
        // Seen as a decision that changed, or (from a failed end) as an end state that moved.
        expect(['decision-final', 'end-state-moves'], describeViolation(r)).toContain(
          r.violation.invariant,
        );
        caught.push(`${seed}`);
      }
    }
    expect(caught.length).toBeGreaterThanOrEqual(3);
  });

  it('catches a state machine that forgets which request registered a branch (a confirm without a try)', async () => {
    const caught: string[] = [];
    // 40 seeds: the schedules move with the simulator's own features (captures stepped a row
    // at a time, staggered snapshot points); after those, 6 of seeds 1..40 catch it.
    for (let seed = 1; seed <= 40; seed++) {
      const r = await runCoordinatorSimulation({
        seed,
        steps: 1500,
        mutant: 'forgetful-register',
      });
      if (r.violation) {
        expect(r.violation.invariant, describeViolation(r)).toBe('branch-try-first');
        caught.push(`${seed}`);
      }
    }
    expect(caught.length).toBeGreaterThanOrEqual(3);
  });

  it('seed 5: a new leader confirming its term stamped commands with its raw wall clock (an hour ahead), and dropped every finished record', async () => {
    const r = await runCoordinatorSimulation({ seed: 5, steps: 1500 });
    expect(r.violation, describeViolation(r)).toBeNull();
  });

  it('seed 403621413: a dropped ChangeGlobalStatus to CommitFailed parked the transaction, cancelling its retry: Committing forever with nobody driving it', async () => {
    const r = await runCoordinatorSimulation({ seed: 403621413, steps: 1500 });
    expect(r.violation, describeViolation(r)).toBeNull();
  });

  it('seed 506348672: a new leader stamped commands with its raw wall clock (an hour ahead) before it applied its predecessor’s, which then timed out at once and lost their finished records', async () => {
    const r = await runCoordinatorSimulation({ seed: 506348672, steps: 1500 });
    expect(r.violation, describeViolation(r)).toBeNull();
  });
});
