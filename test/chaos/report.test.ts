/**
 * The report's timing arithmetic: failovers, time to a new leader, to the first commit,
 * percentiles.
 */
import { describe, expect, it } from 'vitest';
import type { HistoryEvent } from '../../chaos/history.ts';
import { countFailovers, timeToNewLeader, type LeaderSample } from '../../chaos/monitor.ts';
import type { StepRecord } from '../../chaos/nemesis.ts';
import { distribution, percentile, stepTimings, timeToFirstCommit } from '../../chaos/report.ts';

const timeline: LeaderSample[] = [
  { t: 100, leader: { id: 'node1', term: 2 } },
  { t: 1_000, leader: null },
  { t: 1_700, leader: { id: 'node2', term: 3 } },
  { t: 5_000, leader: { id: 'node2', term: 5 } },
];

const commit = (t0: number, t: number, value = 'Committed'): HistoryEvent => ({
  t,
  t0,
  process: 'c0.1',
  app: 'a',
  type: 'ok',
  op: 'commit',
  xid: 'x',
  value,
});

describe('report timings', () => {
  it('counts leader changes, by id or term, across gaps without a leader', () => {
    expect(countFailovers(timeline)).toBe(2);
    expect(countFailovers([])).toBe(0);
  });

  it('measures the time to the first leader of a later term', () => {
    expect(timeToNewLeader(timeline, 900, 2, 4_000)).toBe(800);
    expect(timeToNewLeader(timeline, 2_000, 3, 4_000)).toBeNull();
    expect(timeToNewLeader(timeline, 2_000, 3, 6_000)).toBe(3_000);
  });

  it('measures the time to the first acknowledged commit sent after the fault', () => {
    const events = [
      commit(800, 1_050),
      commit(1_100, 2_500),
      commit(1_200, 2_000),
      commit(1_300, 1_400, 'Rollbacked'),
    ];
    // The commit answered at 1 050 was sent before the fault; the rolled-back one does not count.
    expect(timeToFirstCommit(events, 1_000)).toBe(1_000);
    expect(timeToFirstCommit(events, 3_000)).toBeNull();
  });

  it('computes nearest-rank percentiles', () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 99)).toBe(4);
    expect(distribution([5, null, 1, 3])).toEqual({ n: 3, p50: 3, p99: 5, max: 5 });
  });

  it('gives each step its timings, bounded by the next step', () => {
    const rec = (n: number, faultAt: number, term: number): StepRecord => ({
      n,
      kind: 'kill',
      target: 'node1',
      leaderBefore: { id: 'node1', term },
      faultAt,
      healedAt: faultAt + 10,
      detail: '',
    });
    const steps = stepTimings([rec(1, 900, 2), rec(2, 2_000, 3)], timeline, [commit(1_100, 2_500)]);
    expect(steps.map((s) => [s.timeToLeaderMs, s.timeToFirstCommitMs])).toEqual([
      [800, 1_600],
      [3_000, null],
    ]);
  });
});
