/**
 * Where the time goes on the nodes during a measured window (issue 12 item 7): a sample of
 * every node's /metrics (and /proc/<pid>/stat) at the start and at the end of the window,
 * turned into per-transaction and per-round figures:
 *
 *  - CPU µs per transaction of each node process (user + system, from prom-client's
 *    process_cpu_seconds_total; /proc ticks if /metrics did not answer);
 *  - event-loop delay of each node (perf_hooks monitorEventLoopDelay through prom-client:
 *    its histogram is reset at every scrape, so the end sample covers the window; printed
 *    beyond the monitor's 10 ms resolution);
 *  - the leader's Raft rounds/s, entries per round, commands per entry, reads per round,
 *    and the snapshots every node took (count, ms).
 */
import { readFileSync } from 'node:fs';
import { nodeGet } from './node-http.ts';

/** Linux USER_HZ: /proc/<pid>/stat counts CPU time in these. */
const CLOCK_TICKS_PER_S = 100;
/**
 * prom-client's monitorEventLoopDelay resolution (its default eventLoopMonitoringPrecision),
 * ms: the histogram records the interval between its timer's runs, so a delay is what
 * exceeds this.
 */
const LOOP_MONITOR_RESOLUTION_MS = 10;
/** How long one scrape may take, ms. */
const SCRAPE_TIMEOUT_MS = 3_000;

export interface StatsNode {
  nodeId: string;
  /** HTTP control endpoint. */
  control: { host: string; port: number };
  proc: { pid?: number | undefined };
}

export interface NodeSample {
  nodeId: string;
  at: number;
  /** CPU seconds (user + system) of the process, or null. */
  cpuS: number | null;
  /** Metric name (labels dropped, values of one name summed) → value, from /metrics. */
  metrics: Map<string, number>;
}

function procCpuSeconds(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS_PER_S;
  } catch {
    return null;
  }
}

/** Parses Prometheus text: sums the samples of each metric name over its labels. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    out.set(m[1]!, (out.get(m[1]!) ?? 0) + v);
  }
  return out;
}

/** A prom-client default metric, with or without the `concord_` prefix older nodes gave it. */
function metric(metrics: Map<string, number>, name: string): number | undefined {
  return metrics.get(name) ?? metrics.get(`concord_${name}`);
}

async function sampleNode(n: StatsNode): Promise<NodeSample> {
  let metrics = new Map<string, number>();
  try {
    const res = await nodeGet(`${n.control.host}:${n.control.port}`, '/metrics', SCRAPE_TIMEOUT_MS);
    metrics = parseMetrics(await res.text());
  } catch {
    // a node that does not answer gives what /proc has
  }
  const cpuS = metric(metrics, 'process_cpu_seconds_total') ?? procCpuSeconds(n.proc.pid);
  return { nodeId: n.nodeId, at: performance.now(), cpuS, metrics };
}

/** One sample of every node (in parallel). */
export function sampleNodes(nodes: readonly StatsNode[]): Promise<NodeSample[]> {
  return Promise.all(nodes.map(sampleNode));
}

export interface NodeWindow {
  nodeId: string;
  leader: boolean;
  /** CPU µs of this process per transaction (null: not measured). */
  cpuUsPerTx: number | null;
  /** Share of one core, %. */
  cpuPct: number | null;
  /** Event-loop delay over the window, ms (null: not exposed). */
  loopP50Ms: number | null;
  loopP99Ms: number | null;
  loopMaxMs: number | null;
  snapshots: number;
  snapshotMs: number;
}

export interface WindowStats {
  seconds: number;
  nodes: NodeWindow[];
  /** Sum of the nodes' CPU µs per transaction. */
  nodesCpuUsPerTx: number | null;
  /** The leader's Raft figures (null: no leader, or not raft mode). */
  raft: {
    roundsPerS: number;
    entriesPerRound: number;
    commandsPerEntry: number | null;
    readsPerRound: number;
  } | null;
}

/** The window between two samples of the same nodes, per transaction (`tx` counted in it). */
export function windowStats(
  from: readonly NodeSample[],
  to: readonly NodeSample[],
  tx: number,
): WindowStats {
  const nodes: NodeWindow[] = [];
  let total: number | null = null;
  let raft: WindowStats['raft'] = null;
  let seconds = 0;
  for (const b of to) {
    const a = from.find((x) => x.nodeId === b.nodeId);
    if (!a) continue;
    const s = (b.at - a.at) / 1000;
    seconds = Math.max(seconds, s);
    const d = (name: string) => (b.metrics.get(name) ?? 0) - (a.metrics.get(name) ?? 0);
    const cpu = a.cpuS !== null && b.cpuS !== null ? b.cpuS - a.cpuS : null;
    const cpuUsPerTx = cpu !== null && tx > 0 ? (cpu * 1e6) / tx : null;
    if (cpuUsPerTx !== null) total = (total ?? 0) + cpuUsPerTx;
    const ms = (name: string) => {
      const v = metric(b.metrics, name);
      return v === undefined ? null : Math.max(0, v * 1000 - LOOP_MONITOR_RESOLUTION_MS);
    };
    const leader = b.metrics.get('concord_raft_is_leader') === 1;
    nodes.push({
      nodeId: b.nodeId,
      leader,
      cpuUsPerTx,
      cpuPct: cpu !== null && s > 0 ? (cpu / s) * 100 : null,
      loopP50Ms: ms('nodejs_eventloop_lag_p50_seconds'),
      loopP99Ms: ms('nodejs_eventloop_lag_p99_seconds'),
      loopMaxMs: ms('nodejs_eventloop_lag_max_seconds'),
      snapshots: d('concord_raft_snapshots_total'),
      snapshotMs: d('concord_raft_snapshot_milliseconds_total'),
    });
    const rounds = d('concord_raft_rounds_total');
    if (leader && rounds > 0 && s > 0) {
      const entries = d('concord_raft_proposed_entries_total');
      raft = {
        roundsPerS: rounds / s,
        entriesPerRound: d('concord_raft_round_entries_total') / rounds,
        commandsPerEntry: entries > 0 ? d('concord_raft_proposed_commands_total') / entries : null,
        readsPerRound: d('concord_raft_reads_total') / rounds,
      };
    }
  }
  return { seconds, nodes, nodesCpuUsPerTx: total, raft };
}

const f0 = (v: number | null) => (v === null ? '-' : v.toFixed(0));
const f1 = (v: number | null) => (v === null ? '-' : v.toFixed(1));

/** Lines for the bench's output, each to be prefixed with the run's label. */
export function describeWindow(w: WindowStats, clientUsPerTx: number | null): string[] {
  const cpu = w.nodes
    .map((n) => `${n.nodeId}${n.leader ? '*' : ''} ${f0(n.cpuUsPerTx)} (${f0(n.cpuPct)}%)`)
    .join(', ');
  const lines = [
    `CPU µs/tx: ${cpu}; nodes ${f0(w.nodesCpuUsPerTx)}` +
      (clientUsPerTx !== null ? `, client ${f0(clientUsPerTx)}` : '') +
      ' (* leader; % of one core)',
    `event-loop delay p50/p99/max ms: ${w.nodes
      .map((n) => `${n.nodeId} ${f1(n.loopP50Ms)}/${f1(n.loopP99Ms)}/${f1(n.loopMaxMs)}`)
      .join(', ')}`,
  ];
  const snaps = w.nodes.filter((n) => n.snapshots > 0);
  const snapText =
    snaps.length === 0
      ? 'snapshots none'
      : `snapshots ${snaps.map((n) => `${n.nodeId} ${n.snapshots} (${f0(n.snapshotMs)} ms)`).join(', ')}`;
  if (w.raft)
    lines.push(
      `raft (leader): ${f0(w.raft.roundsPerS)} rounds/s, ${w.raft.entriesPerRound.toFixed(2)} entries/round, ` +
        `${f1(w.raft.commandsPerEntry)} commands/entry, ${w.raft.readsPerRound.toFixed(2)} reads/round; ${snapText}`,
    );
  else lines.push(snapText);
  return lines;
}
