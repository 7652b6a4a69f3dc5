/**
 * Prometheus metrics of one node (prom-client), served as text at `GET /metrics`.
 *
 * One Registry per node (never prom-client's global one: tests run several nodes in one
 * process), with `node` and `group` as default labels. Other modules add their own
 * metrics to `metrics.registry` (`registers: [metrics.registry]`).
 *
 * Raft gauges are read from the node's status at scrape time (no polling). The TC service
 * adds the transaction metrics (src/server/tc/tc-metrics.ts). Node's process metrics keep
 * their standard names (process_*, nodejs_*).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { PlainHistogram } from './plain-metrics.ts';
import type { RaftControl } from './raft-control.ts';

/** Buckets for Raft RPC and disk latencies, in seconds (0.1 ms … ~1.6 s). */
export const LATENCY_BUCKETS_SECONDS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];
/** Buckets for HTTP openapi requests, in seconds (watch long polls land in the top ones). */
export const HTTP_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60];

/** The transport counters this module reads from a status, if present. */
interface TransportCounts {
  sent: number;
  received: number;
  reconnects: number;
  dropped: Record<string, number>;
  rejected: Record<string, number>;
  peers: Record<string, { connected: boolean }>;
}

const ROLES = ['follower', 'pre-candidate', 'candidate', 'leader', 'learner'] as const;

export interface NodeMetrics {
  /** The node's registry: add metrics here (`registers: [metrics.registry]`). */
  readonly registry: Registry;
  /** Records one Raft RPC's latency (message type, seconds), e.g. from the transport. */
  observeRaftRpc(type: string, seconds: number): void;
  /** Records one synced disk write of the driver, in seconds. */
  observePersist(seconds: number): void;
  /** Records one HTTP openapi request. */
  observeHttp(route: string, method: string, status: number, seconds: number): void;
  /** Counts a membership operation by kind and result. */
  countMembershipOp(kind: 'change' | 'transfer', result: 'ok' | 'error'): void;
  /** Starts reading Raft gauges from this node. Call once the Raft node exists. */
  bindRaft(control: RaftControl): void;
  /** Text exposition for a scrape. */
  render(): Promise<{ contentType: string; body: string }>;
}

export function createNodeMetrics(
  labels: { node: string; group: string },
  opts: { processMetrics?: boolean } = {},
): NodeMetrics {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  // Node's process metrics under their standard names (process_*, nodejs_*), as stock
  // dashboards expect them.
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });

  let control: RaftControl | null = null;
  const status: ReadStatus = () => {
    if (!control) return null;
    try {
      return control.status();
    } catch {
      return null;
    }
  };
  registerRaftGauges(registry, status);
  registerGroupMetrics(registry, status);
  registerTransportMetrics(registry, status);
  registerDriverMetrics(registry, status);
  const observed = registerObservedMetrics(registry);

  return {
    registry,
    ...observed,
    bindRaft(c) {
      control = c;
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

type RaftStatus = ReturnType<RaftControl['status']>;
/** The node's Raft status at scrape time; null before bindRaft or when it cannot be read. */
type ReadStatus = () => RaftStatus | null;

/** Gauges read from one number of the status: [name, help, read]. */
const STATUS_GAUGES: Array<[string, string, (st: RaftStatus) => number | undefined]> = [
  [
    'concord_raft_is_leader',
    '1 if this node is the leader of its group',
    (st) => (st.role === 'leader' ? 1 : 0),
  ],
  ['concord_raft_term', 'Current Raft term', (st) => st.term],
  [
    'concord_raft_commit_index',
    'Highest log index known committed (stored on a quorum)',
    (st) => st.commit,
  ],
  ['concord_raft_applied_index', 'Last log index applied to the state machine', (st) => st.applied],
  ['concord_raft_last_index', 'Last index of the Raft log on this node', (st) => st.lastIndex],
  [
    'concord_raft_log_entries',
    'Entries held in the Raft log (after the last snapshot)',
    (st) => Math.max(0, st.lastIndex - st.firstIndex + 1),
  ],
  [
    'concord_raft_log_bytes',
    'Entry data applied since the last local snapshot, bytes (held in memory until it)',
    (st) => st.bytesSinceSnapshot,
  ],
  [
    'concord_raft_snapshot_index',
    'Index covered by the latest snapshot on disk',
    (st) => st.snapshotIndex,
  ],
  [
    'concord_raft_pending_proposals',
    'Proposals accepted by this leader and not yet applied',
    (st) => st.pendingProposals,
  ],
];

/** The node's role, and one gauge per number of its status (0 while it has none). */
function registerRaftGauges(registry: Registry, status: ReadStatus): void {
  new Gauge({
    name: 'concord_raft_role',
    help: 'Raft role of this node: 1 for the current role, 0 for the others (learner: a non-voting member)',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      const st = status();
      const isLearner = st !== null && st.conf.learners.includes(st.id);
      for (const r of ROLES)
        this.set(
          { role: r },
          st !== null && (r === 'learner' ? isLearner : !isLearner && st.role === r) ? 1 : 0,
        );
    },
  });
  for (const [name, help, read] of STATUS_GAUGES)
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const st = status();
        this.set(st ? (read(st) ?? 0) : 0);
      },
    });
}

/** The group: its members, the followers' lag, and the entries this node appended as leader. */
function registerGroupMetrics(registry: Registry, status: ReadStatus): void {
  new Gauge({
    name: 'concord_raft_members',
    help: 'Members of the group by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const st = status();
      this.set({ kind: 'voter' }, st?.conf.voters.length ?? 0);
      this.set({ kind: 'learner' }, st?.conf.learners.length ?? 0);
    },
  });
  new Gauge({
    name: 'concord_raft_follower_lag_entries',
    help: "Leader only: how far each member's replicated log is behind the leader's last index",
    labelNames: ['peer'],
    registers: [registry],
    collect() {
      this.reset();
      const st = status();
      if (st?.role !== 'leader' || !st.progress) return;
      for (const [peer, pr] of Object.entries(st.progress))
        if (peer !== st.id) this.set({ peer }, Math.max(0, st.lastIndex - pr.match));
    },
  });
  // Entries appended by this node while leader: rate() of it is proposals per second.
  let lastLeaderIndex: number | null = null;
  new Counter({
    name: 'concord_raft_proposals_total',
    help: 'Log entries appended by this node as leader (proposals, membership changes, term no-ops); rate() gives proposals/s',
    registers: [registry],
    collect() {
      const st = status();
      if (st?.role !== 'leader') {
        lastLeaderIndex = null;
        return;
      }
      if (lastLeaderIndex !== null && st.lastIndex > lastLeaderIndex)
        this.inc(st.lastIndex - lastLeaderIndex);
      lastLeaderIndex = st.lastIndex;
    },
  });
}

/** The transport's counters: [name, help, read, label] (label null: one series, key `all`). */
const TRANSPORT_TOTALS: Array<
  [string, string, (t: TransportCounts) => Record<string, number>, string | null]
> = [
  [
    'concord_raft_messages_sent_total',
    'Raft messages handed to the peer transport',
    (t) => ({ all: t.sent }),
    null,
  ],
  [
    'concord_raft_messages_received_total',
    'Raft messages received from peers',
    (t) => ({ all: t.received }),
    null,
  ],
  [
    'concord_raft_messages_dropped_total',
    'Raft messages dropped by the transport (Raft retransmits), by reason',
    (t) => ({ ...t.dropped }),
    'reason',
  ],
  [
    'concord_raft_frames_rejected_total',
    'Frames from peers refused (unknown sender, wrong receiver, malformed), by reason',
    (t) => ({ ...t.rejected }),
    'reason',
  ],
  ['concord_raft_reconnects_total', 'Peer stream reconnects', (t) => ({ all: t.reconnects }), null],
];

/** The peer transport's cumulative counts, when the status carries them (RaftNode does). */
function registerTransportMetrics(registry: Registry, status: ReadStatus): void {
  const transportStats = () => {
    const t = (status() as { transport?: TransportCounts } | null)?.transport;
    return t && typeof t.sent === 'number' ? t : null;
  };
  for (const [name, help, read, label] of TRANSPORT_TOTALS) {
    const last = new Map<string, number>();
    new Counter({
      name,
      help,
      labelNames: label ? [label] : [],
      registers: [registry],
      collect() {
        const t = transportStats();
        if (!t) return;
        for (const [k, v] of Object.entries(read(t))) {
          const delta = deltaOf(v, last.get(k) ?? 0);
          if (delta > 0) {
            if (label) this.inc({ [label]: k }, delta);
            else this.inc(delta);
          }
          last.set(k, v);
        }
      },
    });
  }
  new Gauge({
    name: 'concord_raft_peer_connected',
    help: '1 if the stream to the peer is connected',
    labelNames: ['peer'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [peer, p] of Object.entries(transportStats()?.peers ?? {}))
        this.set({ peer }, p.connected ? 1 : 0);
    },
  });
}

/** What a cumulative count added since it was last read; a restarted one starts from zero. */
function deltaOf(value: number, last: number): number {
  return value >= last ? value - last : value;
}

/**
 * A Prometheus counter over a running total read at scrape time (undefined: nothing to read
 * now): each scrape adds what the total grew by; a total that went back (a new store or
 * driver starts from zero) counts from there.
 */
export function registerRunningTotal(
  registry: Registry,
  name: string,
  help: string,
  read: () => number | undefined,
): void {
  let last = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const v = read();
      if (v === undefined) return;
      const delta = deltaOf(v, last);
      if (delta > 0) this.inc(delta);
      last = v;
    },
  });
}

/** The driver's counters: [name, help, read]. */
const DRIVER_TOTALS: Array<[string, string, (st: RaftStatus) => number | undefined]> = [
  [
    'concord_raft_rounds_total',
    'Raft rounds (Readies) handled by the driver; rate() is rounds/s',
    (st) => st.counters?.rounds,
  ],
  [
    'concord_raft_round_entries_total',
    "Log entries persisted by the driver's rounds; divided by rounds: entries per round",
    (st) => st.counters?.entriesPersisted,
  ],
  [
    'concord_raft_entries_applied_total',
    'Committed entries applied to the state machine',
    (st) => st.counters?.entriesApplied,
  ],
  [
    'concord_raft_reads_total',
    'Linearizable reads completed (ReadIndex or lease); divided by rounds: reads per round',
    (st) => st.counters?.readsCompleted,
  ],
  [
    'concord_raft_lease_reads_total',
    "Reads served on the leader's lease, without a quorum round",
    (st) => st.leaseReadsServed,
  ],
  [
    'concord_raft_snapshots_total',
    'Local snapshots taken (log compactions)',
    (st) => st.counters?.snapshotsTaken,
  ],
  [
    'concord_raft_snapshot_milliseconds_total',
    'Milliseconds spent in local snapshots (encode + write)',
    (st) => st.counters?.snapshotMsTotal,
  ],
];

/**
 * The driver's hot-path counters: rate(rounds) is rounds/s; rate(entries)/rate(rounds)
 * entries per round; rate(reads)/rate(rounds) reads per round.
 */
function registerDriverMetrics(registry: Registry, status: ReadStatus): void {
  const counters = () => status()?.counters ?? null;
  for (const [name, help, read] of DRIVER_TOTALS)
    registerRunningTotal(registry, name, help, () => {
      const st = status();
      return st ? read(st) : undefined;
    });
  new Gauge({
    name: 'concord_raft_last_snapshot_milliseconds',
    help: 'The last local snapshot: encode (on the event loop, between rounds) and write (off the round loop), in ms',
    labelNames: ['phase'],
    registers: [registry],
    collect() {
      const c = counters();
      this.set({ phase: 'encode' }, c?.lastSnapshotEncodeMs ?? 0);
      this.set({ phase: 'write' }, c?.lastSnapshotWriteMs ?? 0);
    },
  });
  new Gauge({
    name: 'concord_raft_last_snapshot_longest_slice_milliseconds',
    help: 'The last local snapshot encoded in slices (one per event-loop turn): its longest slice, ms (the longest the loop waited for it)',
    registers: [registry],
    collect() {
      this.set(counters()?.lastSnapshotLongestSliceMs ?? 0);
    },
  });
  new Gauge({
    name: 'concord_raft_last_snapshot_bytes',
    help: 'Size of the last local snapshot (the encoded state machine), bytes',
    registers: [registry],
    collect() {
      this.set(counters()?.lastSnapshotBytes ?? 0);
    },
  });
}

/** The metrics other modules report to: Raft RPCs, disk writes, HTTP, membership operations. */
function registerObservedMetrics(
  registry: Registry,
): Pick<NodeMetrics, 'observeRaftRpc' | 'observePersist' | 'observeHttp' | 'countMembershipOp'> {
  // Per RPC and per round: counted in plain numbers, published at scrape time
  // (plain-metrics.ts; prom-client hashes and validates labels on every observe).
  const rpc = new PlainHistogram<'type'>({
    name: 'concord_raft_rpc_duration_seconds',
    help: 'Raft peer round trip by request type (app, heartbeat, snap, vote, preVote): from the oldest unanswered request to its answer',
    labelNames: ['type'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const persist = new PlainHistogram({
    name: 'concord_raft_persist_duration_seconds',
    help: 'Duration of one synced Raft log write (a round of entries and hard state)',
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const http = new Histogram({
    name: 'concord_http_request_duration_seconds',
    help: 'HTTP openapi requests by route, method and status',
    labelNames: ['route', 'method', 'status'],
    buckets: HTTP_BUCKETS_SECONDS,
    registers: [registry],
  });
  const membership = new Counter({
    name: 'concord_membership_operations_total',
    help: 'Membership changes and leadership transfers handled by this node, by result',
    labelNames: ['kind', 'result'],
    registers: [registry],
  });
  const persisted = persist.of('', {});
  return {
    // One series per type (a closed set).
    observeRaftRpc: (type, seconds) => rpc.observe(type, { type }, seconds),
    observePersist: (seconds) => persisted.observe(seconds),
    observeHttp: (route, method, statusCode, seconds) =>
      http.observe({ route, method, status: String(statusCode) }, seconds),
    countMembershipOp: (kind, result) => membership.inc({ kind, result }),
  };
}
