/**
 * The console's charts: a small ring of samples of this node's own metrics, one every
 * SAMPLE_INTERVAL_MS over the last SAMPLE_WINDOW_MS — transactions ended per second, the mean
 * latency of TC calls and the live transactions (where this node counts them: the leader).
 * Read from the node's Prometheus registry (counters and histograms are cheap to read; the
 * scrape-time gauges that walk every session are not used).
 */
import type { Registry } from 'prom-client';

export const SAMPLE_INTERVAL_MS = 2_000;
export const SAMPLE_WINDOW_MS = 10 * 60_000;
const MAX_SAMPLES = SAMPLE_WINDOW_MS / SAMPLE_INTERVAL_MS;

export interface Sample {
  /** Epoch ms. */
  t: number;
  /** Global transactions ended per second since the previous sample. */
  tps: number;
  /** Mean TC call latency since the previous sample, ms (null: no calls). */
  latencyMs: number | null;
  /** Live transactions (null: this node does not count them). */
  live: number | null;
}

interface Totals {
  ended: number;
  callSeconds: number;
  calls: number;
}

export class MetricSampler {
  private readonly ring: Sample[] = [];
  private last: { t: number; totals: Totals } | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly registry: Registry,
    private readonly liveCount: () => number | null,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  samples(): Sample[] {
    return [...this.ring];
  }

  /** Takes one sample now (the timer calls it; never throws). */
  async sample(): Promise<void> {
    let totals: Totals;
    try {
      totals = await this.totals();
    } catch {
      return;
    }
    const t = this.now();
    const prev = this.last;
    this.last = { t, totals };
    if (prev === null || t <= prev.t) return;
    const calls = totals.calls - prev.totals.calls;
    const seconds = totals.callSeconds - prev.totals.callSeconds;
    this.ring.push({
      t,
      tps: Math.max(0, ((totals.ended - prev.totals.ended) * 1000) / (t - prev.t)),
      latencyMs: calls > 0 ? (seconds * 1000) / calls : null,
      live: this.liveCount(),
    });
    if (this.ring.length > MAX_SAMPLES) this.ring.shift();
  }

  private async totals(): Promise<Totals> {
    const ended = await this.sum('concord_tc_global_ended_total', null);
    const callSeconds = await this.sum('concord_tc_call_seconds', 'concord_tc_call_seconds_sum');
    const calls = await this.sum('concord_tc_call_seconds', 'concord_tc_call_seconds_count');
    return { ended, callSeconds, calls };
  }

  /** The sum over labels of a metric's values (of one series name for a histogram). */
  private async sum(name: string, series: string | null): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const data = await metric.get();
    let total = 0;
    for (const v of data.values as Array<{ value: number; metricName?: string }>)
      if (series === null || v.metricName === series) total += v.value;
    return total;
  }
}
