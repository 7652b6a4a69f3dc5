/**
 * The chaos suite in CI: a real three-node cluster, four client processes running TCC
 * transactions into PostgreSQL through the SDK and its fence, and a seeded schedule that
 * touches every nemesis once — kill, pause, partition, restart-all, membership change,
 * client kill. The checker must find 0 violations.
 *
 * Longer runs are one flag away (or use `npm run chaos`, see docs/chaos.md):
 *   CHAOS_DURATION=120 CHAOS_SEED=7 npx vitest run test/chaos/chaos.test.ts
 * CHAOS_VERBOSE=1 prints the run's progress lines as they come.
 */
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatReport } from '../../chaos/report.ts';
import { runChaos } from '../../chaos/run.ts';
import { NEMESIS_KINDS } from '../../chaos/schedule.ts';
import {
  DEFAULT_CLIENTS,
  DEFAULT_CONCURRENCY,
  DEFAULT_ELECTION_TICKS,
  DEFAULT_TICK_MS,
  TXN_TIMEOUT_MS,
} from '../../chaos/limits.ts';
// Type-only: brings the two entry points (which run on import) into the root `tsc --noEmit`.
import type {} from '../../chaos/cli.ts';
import type {} from '../../chaos/client.ts';

/** 0: one round, every nemesis once (the first round is always complete). */
const DURATION_S = Number(process.env.CHAOS_DURATION ?? 0);
const SEED = Number(process.env.CHAOS_SEED ?? 20_251_123);
const VERBOSE = process.env.CHAOS_VERBOSE === '1';
/** Fault-free run of the sabotage test, ms: long enough for planned rollbacks to happen. */
const SABOTAGE_RUN_MS = 6_000;
/** Budget of the default (one round) run; a longer run gets its duration on top. */
const ROUND_BUDGET_MS = 240_000;

describe('chaos', () => {
  it(
    'a seeded schedule touching every nemesis leaves 0 violations',
    async () => {
      const lines: string[] = [];
      const report = await runChaos({
        seed: SEED,
        durationMs: DURATION_S * 1000,
        nemeses: NEMESIS_KINDS,
        clients: DEFAULT_CLIENTS,
        concurrency: DEFAULT_CONCURRENCY,
        tickMs: DEFAULT_TICK_MS,
        electionTicks: DEFAULT_ELECTION_TICKS,
        snapshotEveryEntries: 2_000,
        txnTimeoutMs: TXN_TIMEOUT_MS,
        print: (l) => (VERBOSE ? console.log(l) : lines.push(l)),
      });
      const text = formatReport(report);
      if (!report.ok || VERBOSE) console.log(`${lines.join('\n')}\n\n${text}`);

      expect(report.harnessErrors, text).toEqual([]);
      expect(report.crashes, text).toEqual([]);
      expect(report.check.violations, text).toEqual([]);
      expect(new Set(report.steps.map((s) => s.kind))).toEqual(new Set(NEMESIS_KINDS));
      expect(report.steps.filter((s) => s.error)).toEqual([]);
      // The workload really ran through the faults, both ways, and the TC was checked.
      expect(report.check.stats.committed).toBeGreaterThan(0);
      expect(report.check.stats.rolledBack).toBeGreaterThan(0);
      expect(report.check.notes).toEqual([]);
      expect(report.ok).toBe(true);
      // A passing run leaves nothing behind; a failing one keeps its logs, histories and report.
      rmSync(report.settings.runDir, { recursive: true, force: true });
    },
    ROUND_BUDGET_MS + DURATION_S * 2_000,
  );

  it(
    'a bug planted in the workload fails the run: the pipeline from histories and tables to the checker is live',
    async () => {
      const lines: string[] = [];
      // Cancels commit their fence row but skip the business cancel: money stays frozen.
      const report = await runChaos({
        seed: SEED,
        durationMs: SABOTAGE_RUN_MS,
        nemeses: [],
        clients: 2,
        concurrency: DEFAULT_CONCURRENCY,
        tickMs: DEFAULT_TICK_MS,
        electionTicks: DEFAULT_ELECTION_TICKS,
        snapshotEveryEntries: 2_000,
        txnTimeoutMs: TXN_TIMEOUT_MS,
        sabotage: 'lost-cancel',
        print: (l) => (VERBOSE ? console.log(l) : lines.push(l)),
      });
      const text = formatReport(report);
      if (VERBOSE) console.log(text);
      expect(report.harnessErrors, `${lines.join('\n')}\n${text}`).toEqual([]);
      expect(report.ok).toBe(false);
      expect(Object.keys(report.check.counts).sort()).toEqual([
        'branch-pending',
        'fence-mismatch',
        'reservation-left',
        'rolledback-branch-not-cancelled',
      ]);
      rmSync(report.settings.runDir, { recursive: true, force: true });
    },
    ROUND_BUDGET_MS,
  );
});
