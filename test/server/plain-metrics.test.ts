/**
 * The plain-number counters and histograms publish at scrape time exactly what prom-client's
 * own inc and observe would show: same text on /metrics, series by series.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { PlainCounter, PlainHistogram } from '../../src/server/plain-metrics.ts';

const BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** A deterministic spread of values, some past the last bound and some on a bound. */
function values(n: number): number[] {
  let x = 12345;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const v = (x / 2 ** 31) ** 4 * 40;
    out.push(i % 17 === 0 ? BUCKETS[i % BUCKETS.length]! : v);
  }
  return out;
}

function pair() {
  const plain = new Registry();
  const reference = new Registry();
  return { plain, reference };
}

describe('PlainHistogram', () => {
  it('shows what prom-client observe shows, unlabelled and labelled, across scrapes', async () => {
    const { plain, reference } = pair();
    const p = new PlainHistogram({
      name: 'h_seconds',
      help: 'h',
      buckets: BUCKETS,
      registers: [plain],
    });
    const r = new Histogram({
      name: 'h_seconds',
      help: 'h',
      buckets: BUCKETS,
      registers: [reference],
    });
    const pl = new PlainHistogram<'action' | 'branch_type'>({
      name: 'hl_seconds',
      help: 'hl',
      labelNames: ['branch_type', 'action'],
      buckets: BUCKETS,
      registers: [plain],
    });
    const rl = new Histogram<'action' | 'branch_type'>({
      name: 'hl_seconds',
      help: 'hl',
      labelNames: ['branch_type', 'action'],
      buckets: BUCKETS,
      registers: [reference],
    });
    expect(await plain.metrics()).toBe(await reference.metrics());
    const vs = values(3_000);
    for (let i = 0; i < vs.length; i++) {
      const v = vs[i]!;
      p.observe('', {}, v);
      r.observe(v);
      const action = i % 3 === 0 ? 'rollback' : 'commit';
      const type = i % 5 === 0 ? 'TCC' : 'AT';
      pl.observe(`${action} ${type}`, { action, branch_type: type }, v);
      rl.observe({ action, branch_type: type }, v);
      if (i % 1_000 === 999) expect(await plain.metrics()).toBe(await reference.metrics());
    }
    expect(await plain.metrics()).toBe(await reference.metrics());
    expect(await plain.getMetricsAsJSON()).toEqual(await reference.getMetricsAsJSON());
  });
});

describe('PlainCounter', () => {
  it('shows what prom-client inc shows, unlabelled and labelled, across scrapes', async () => {
    const { plain, reference } = pair();
    const p = new PlainCounter({ name: 'c_total', help: 'c', registers: [plain] });
    const r = new Counter({ name: 'c_total', help: 'c', registers: [reference] });
    const pl = new PlainCounter<'result'>({
      name: 'cl_total',
      help: 'cl',
      labelNames: ['result'],
      registers: [plain],
    });
    const rl = new Counter<'result'>({
      name: 'cl_total',
      help: 'cl',
      labelNames: ['result'],
      registers: [reference],
    });
    expect(await plain.metrics()).toBe(await reference.metrics());
    const results = ['Committed', 'Rollbacked', 'OK', 'LOCK_CONFLICT'];
    for (let i = 0; i < 2_000; i++) {
      const result = results[(i * 7) % (i < 500 ? 2 : 4)]!;
      pl.inc(result, { result });
      rl.inc({ result });
      if (i % 3 === 0) {
        p.of('', {}).inc();
        r.inc();
      }
      if (i % 700 === 0) expect(await plain.metrics()).toBe(await reference.metrics());
    }
    expect(await plain.metrics()).toBe(await reference.metrics());
    expect(await plain.getMetricsAsJSON()).toEqual(await reference.getMetricsAsJSON());
  });
});
