/**
 * Counters and histograms counted in plain numbers on the hot path and published to their
 * prom-client metric at scrape time (its `collect()`), so /metrics shows the same names,
 * labels and values as with prom-client's own `inc` and `observe` (issue 12: those hash and
 * validate a label object, and a histogram makes a closure and converts its bound to a
 * property key, on every call — 2–3 % of the lock scenario's leader).
 *
 * A series is found by a key the caller makes (one label value, or a few joined): the
 * caller promises that one key always names the same labels. Label sets stay bounded by
 * the callers (closed sets, or capped like the TC's resource label).
 */
import {
  Counter,
  Histogram,
  type CounterConfiguration,
  type HistogramConfiguration,
} from 'prom-client';

type Labels<T extends string> = Partial<Record<T, string | number>>;

/** A counter's series: `inc` adds to a plain number, published at the next scrape. */
export interface PlainCounterSeries {
  inc(): void;
}

class CounterSeries<T extends string> implements PlainCounterSeries {
  pending = 0;
  constructor(readonly labels: Labels<T>) {}
  inc(): void {
    this.pending += 1;
  }
}

/** A prom-client Counter whose hot-path increments are plain numbers until scraped. */
export class PlainCounter<T extends string = string> {
  readonly metric: Counter<T>;
  private readonly series = new Map<string, CounterSeries<T>>();

  constructor(config: Omit<CounterConfiguration<T>, 'collect'>) {
    const flush = () => this.flush();
    this.metric = new Counter<T>({
      ...config,
      collect() {
        flush();
      },
    });
  }

  /** The series of `labels`, named by `key` (made once per key). */
  of(key: string, labels: Labels<T>): PlainCounterSeries {
    let s = this.series.get(key);
    if (s === undefined) {
      s = new CounterSeries(labels);
      this.series.set(key, s);
      // As prom-client's inc would: the series shows (at 0) from its first use on.
      this.metric.inc(labels, 0);
    }
    return s;
  }

  inc(key: string, labels: Labels<T>): void {
    this.of(key, labels).inc();
  }

  /** Publishes what was counted since the last scrape (integers: the sums are exact). */
  flush(): void {
    for (const s of this.series.values())
      if (s.pending > 0) {
        this.metric.inc(s.labels, s.pending);
        s.pending = 0;
      }
  }
}

/** A histogram's series: `observe` counts in plain numbers, published at the next scrape. */
export interface PlainHistogramSeries {
  observe(value: number): void;
}

class HistogramSeries<T extends string> implements PlainHistogramSeries {
  /** Observations per bucket (not cumulative); past the last bound only `count` grows. */
  readonly counts: number[];
  /** Totals since the series began, summed in the order observed (as prom-client does). */
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels<T>,
    readonly hash: string,
    private readonly bounds: readonly number[],
  ) {
    this.counts = bounds.map(() => 0);
  }
  observe(value: number): void {
    if (!Number.isFinite(value)) return; // prom-client throws; no caller passes one
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++)
      if (value <= bounds[i]!) {
        this.counts[i]! += 1;
        break;
      }
    this.sum += value;
    this.count += 1;
  }
}

/** What prom-client 15's Histogram keeps per series (read by its `get()`). */
interface HistogramEntry {
  labels: object;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

/**
 * A prom-client Histogram whose hot-path observations are plain numbers until scraped. The
 * scrape writes each series' totals into the Histogram's own series (prom-client has no
 * public way to set a histogram); test/server/plain-metrics.test.ts compares the text with
 * prom-client's observe, so a prom-client that keeps them otherwise fails there.
 */
export class PlainHistogram<T extends string = string> {
  readonly metric: Histogram<T>;
  private readonly series = new Map<string, HistogramSeries<T>>();
  private readonly bounds: readonly number[];
  private readonly labelNames: readonly string[];

  constructor(config: Omit<HistogramConfiguration<T>, 'collect'> & { buckets: number[] }) {
    const flush = () => this.flush();
    this.metric = new Histogram<T>({
      ...config,
      collect() {
        flush();
      },
    });
    this.bounds = [...config.buckets];
    this.labelNames = [...(config.labelNames ?? [])].sort();
  }

  /** The series of `labels`, named by `key` (made once per key). */
  of(key: string, labels: Labels<T>): PlainHistogramSeries {
    let s = this.series.get(key);
    if (s === undefined) {
      // prom-client's key of the series: its sorted label names with their values.
      let hash = '';
      for (const name of this.labelNames) {
        const value = (labels as Record<string, unknown>)[name];
        if (value !== undefined) hash += `${name}:${String(value)},`;
      }
      s = new HistogramSeries(labels, hash, this.bounds);
      this.series.set(key, s);
    }
    return s;
  }

  observe(key: string, labels: Labels<T>, value: number): void {
    this.of(key, labels).observe(value);
  }

  /** Publishes every series' totals into the Histogram. */
  flush(): void {
    const map = (this.metric as unknown as { hashMap: Record<string, HistogramEntry> }).hashMap;
    for (const s of this.series.values()) {
      if (s.count === 0) continue; // prom-client shows a labelled series once observed
      let entry = map[s.hash];
      if (entry === undefined) {
        this.metric.zero(s.labels);
        entry = map[s.hash];
        if (entry === undefined)
          throw new Error(`prom-client keeps histogram series otherwise than expected (${s.hash})`);
      }
      for (let i = 0; i < this.bounds.length; i++)
        entry.bucketValues[this.bounds[i]!] = s.counts[i]!;
      entry.sum = s.sum;
      entry.count = s.count;
    }
  }
}
