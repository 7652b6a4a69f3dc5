/**
 * A tiny synchronous harness of Raft cores (no driver): each node's Ready is persisted to
 * an in-memory disk at once, its messages go to one FIFO queue, committed entries are
 * applied to a list. Scripted scenario tests drive it step by step, read like the paper,
 * and feed the same InvariantChecker the simulator uses.
 */
import { RaftCore } from '../../src/raft/core/raft.ts';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import type {
  ConfChange,
  ConfState,
  DurableState,
  Entry,
  HardState,
  Message,
  NodeId,
  RaftConfig,
  Ready,
  Snapshot,
  Status,
} from '../../src/raft/core/types.ts';
import type { RaftCoreApi } from '../../src/raft/driver.ts';
import { crc32 } from '../../src/raft/storage/crc32.ts';
import {
  applyBatch,
  applyCompaction,
  emptyDiskState,
  lastIndex,
  termAt,
  type DiskState,
} from '../sim/fake-disk.ts';
import { InvariantChecker, bytesKey, type DiskView, type LogView } from '../sim/invariants.ts';
import { Prng } from '../support/prng.ts';

export interface HarnessOptions {
  /** Voters at bootstrap (default: every id). */
  voters?: NodeId[];
  config?: Partial<Omit<RaftConfig, 'id' | 'random'>>;
  seed?: number;
  /** Per-node starting disks (e.g. the logs of Figure 7). */
  disks?: Record<NodeId, { hardState: HardState; entries: Entry[] }>;
  /** Wraps a node's core (mutants). */
  wrap?: (core: RaftCoreApi, id: NodeId) => RaftCoreApi;
}

const enc = new TextEncoder();

export function data(s: string): Uint8Array {
  return enc.encode(s);
}

/** A log given as terms only: entries 1..n with empty-ish payloads naming index and term. */
export function logOfTerms(terms: number[]): Entry[] {
  return terms.map((term, i) => ({
    index: i + 1,
    term,
    type: 'normal',
    data: data(`e${i + 1}t${term}`),
  }));
}

class HNode {
  core: RaftCoreApi;
  disk: DiskState;
  applied: string[] = [];
  appliedIndex = 0;
  up = true;
  readonly view: DiskView;
  constructor(
    readonly id: NodeId,
    core: RaftCoreApi,
    disk: DiskState,
  ) {
    this.core = core;
    this.disk = disk;
    const v: LogView = {
      hardState: () => this.disk.hardState,
      lastIndex: () => lastIndex(this.disk),
      snapshotIndex: () => this.disk.snapshot?.meta.index ?? 0,
      termAt: (i) => termAt(this.disk, i),
    };
    // The harness syncs every write at once: written = synced.
    this.view = { synced: v, written: v };
  }
}

export class Cluster {
  readonly nodes = new Map<NodeId, HNode>();
  readonly checker: InvariantChecker;
  /** Every message ever sent, in order (for assertions like "the snapshot went in chunks"). */
  readonly sent: Message[] = [];
  queue: Message[] = [];
  private readonly blocked = new Set<string>();
  private readonly rng: Prng;
  private readonly bootstrap: ConfState;
  private readonly options: HarnessOptions;
  /** Set to drop messages matching a filter instead of queueing them. */
  dropIf: ((m: Message) => boolean) | null = null;

  constructor(
    readonly ids: NodeId[],
    options: HarnessOptions = {},
  ) {
    this.options = options;
    this.rng = new Prng(options.seed ?? 1);
    const voters = options.voters ?? ids;
    this.bootstrap = {
      voters: [...voters].sort(),
      learners: [],
      context: Object.fromEntries(voters.map((v) => [v, `addr-${v}`])),
    };
    this.checker = new InvariantChecker({
      maxInflightMsgs: options.config?.maxInflightMsgs ?? 256,
      maxPendingProposals: 1e9,
      maxPendingReads: 1e9,
      maxQueueLength: 1e9,
    });
    for (const id of ids) {
      const disk = emptyDiskState();
      const given = options.disks?.[id];
      if (given) {
        disk.hardState = { ...given.hardState };
        disk.entries = given.entries.map((e) => ({ ...e }));
        // Seed the log-matching registry with the given logs.
        this.checker.onWrite(
          id,
          { hardState: null, entries: disk.entries, snapshot: null },
          this.viewOf(disk),
          0,
        );
      }
      this.nodes.set(id, new HNode(id, this.makeCore(id, disk), disk));
    }
  }

  private viewOf(disk: DiskState): DiskView {
    const v: LogView = {
      hardState: () => disk.hardState,
      lastIndex: () => lastIndex(disk),
      snapshotIndex: () => disk.snapshot?.meta.index ?? 0,
      termAt: (i) => termAt(disk, i),
    };
    return { synced: v, written: v };
  }

  private makeCore(id: NodeId, disk: DiskState): RaftCoreApi {
    const random = this.rng.fork();
    const config: RaftConfig = {
      ...defaultRaftConfig(id, () => random.float()),
      electionTicks: 10,
      heartbeatTicks: 1,
      ...this.options.config,
      id,
      random: () => random.float(),
    };
    const durable: DurableState = {
      hardState: { ...disk.hardState },
      snapshot: disk.snapshot && { meta: disk.snapshot.meta, bytes: disk.snapshot.data.length },
      entries: disk.entries.map((e) => ({ ...e })),
      initialConf: this.bootstrap,
    };
    this.checker.noteTerm(id, disk.hardState.term);
    const core: RaftCoreApi = new RaftCore(config, durable);
    return this.options.wrap ? this.options.wrap(core, id) : core;
  }

  node(id: NodeId): HNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  core(id: NodeId): RaftCoreApi {
    return this.node(id).core;
  }

  status(id: NodeId): Status {
    return this.core(id).status();
  }

  /** Terms of the node's durable log, from its first index. */
  terms(id: NodeId): number[] {
    return this.node(id).disk.entries.map((e) => e.term);
  }

  /** The node's durable log as "index@term:content" strings. */
  log(id: NodeId): Entry[] {
    return this.node(id).disk.entries;
  }

  // ------------------------------------------------------------------ processing

  /** Runs every pending Ready of `id`: persist (synced at once), send, apply, advance. */
  process(id: NodeId): void {
    const n = this.node(id);
    if (!n.up) return;
    while (n.core.hasReady()) {
      const rd: Ready = n.core.ready();
      this.checker.onReady(id, rd);
      if (rd.hardState || rd.entries.length || rd.snapshot) {
        const first = rd.entries[0];
        const prevTerm = first
          ? rd.snapshot && first.index - 1 === rd.snapshot.meta.index
            ? rd.snapshot.meta.term
            : termAt(n.disk, first.index - 1)
          : undefined;
        const before = n.disk.hardState;
        applyBatch(n.disk, { hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot });
        this.checker.onWrite(
          id,
          { hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot },
          n.view,
          prevTerm,
        );
        this.checker.onSync(id, before, n.disk.hardState);
      }
      for (const m of rd.messages) this.send(id, m);
      for (const m of rd.messagesAfterPersist) this.send(id, m);
      // The core holds no snapshot data: its chunks are read from the node's disk.
      for (const c of rd.snapshotChunks) {
        const snap = n.disk.snapshot;
        if (snap === null || snap.meta.index !== c.meta.index || snap.meta.term !== c.meta.term)
          continue;
        const { length, ...fields } = c;
        const chunk = snap.data.slice(c.offset, c.offset + length);
        this.send(id, { type: 'snap', ...fields, chunk, crc: crc32(snap.data) });
      }
      if (rd.snapshot) {
        n.applied = JSON.parse(new TextDecoder().decode(rd.snapshot.data)) as string[];
        n.appliedIndex = rd.snapshot.meta.index;
      }
      for (const e of rd.committedEntries) {
        if (e.index !== n.appliedIndex + 1)
          throw new Error(`${id} applies ${e.index} after ${n.appliedIndex}`);
        n.appliedIndex = e.index;
        if (e.type === 'normal' && e.data.length > 0) n.applied.push(bytesKey(e.data));
      }
      n.core.advance(rd);
    }
  }

  processAll(): void {
    for (const id of this.ids) this.process(id);
  }

  private send(from: NodeId, m: Message): void {
    const n = this.node(from);
    this.checker.onSend(from, m, n.view);
    this.sent.push(m);
    if (this.blocked.has(`${m.from}>${m.to}`) || this.dropIf?.(m)) return;
    this.queue.push(m);
  }

  /**
   * Delivers the oldest queued message (dropped if its link is blocked or its target down). Returns
   * it.
   */
  deliverOne(): Message | undefined {
    const m = this.queue.shift();
    if (!m) return undefined;
    const to = this.nodes.get(m.to);
    if (!to || !to.up || this.blocked.has(`${m.from}>${m.to}`)) return m;
    to.core.step(structuredClone(m));
    this.process(m.to);
    return m;
  }

  /** Delivers until the queue is empty (bounded). */
  deliverAll(max = 100_000): void {
    this.processAll();
    for (let i = 0; i < max && this.queue.length > 0; i++) this.deliverOne();
    if (this.queue.length > 0) throw new Error('deliverAll: the cluster does not quiesce');
  }

  /** Delivers only messages matching `keep`; the rest are dropped. */
  deliverWhere(keep: (m: Message) => boolean): void {
    this.processAll();
    for (let i = 0; i < 100_000 && this.queue.length > 0; i++) {
      const m = this.queue[0]!;
      if (keep(m)) this.deliverOne();
      else this.queue.shift();
    }
  }

  tick(id: NodeId, times = 1): void {
    const n = this.node(id);
    if (!n.up) return;
    for (let i = 0; i < times; i++) {
      n.core.tick();
      this.process(id);
    }
  }

  /** Ticks every live node once per round and delivers everything after each round. */
  tickAll(rounds = 1): void {
    for (let r = 0; r < rounds; r++) {
      for (const id of this.ids) this.tick(id);
      this.deliverAll();
    }
  }

  campaign(id: NodeId): void {
    this.core(id).campaign();
    this.process(id);
  }

  /** Campaigns on `id` and delivers everything: `id` should then lead. */
  elect(id: NodeId): void {
    this.campaign(id);
    this.deliverAll();
  }

  propose(id: NodeId, payload: string): { index: number; term: number } {
    const r = this.core(id).propose(data(payload));
    this.process(id);
    return r;
  }

  proposeConfChange(id: NodeId, cc: ConfChange): { index: number; term: number } {
    const r = this.core(id).proposeConfChange(cc);
    this.process(id);
    return r;
  }

  /** Local compaction on `id` at its applied index; the snapshot data is its applied list. */
  compact(id: NodeId): Snapshot {
    const n = this.node(id);
    const meta = n.core.snapshotMeta(n.appliedIndex);
    const snap: Snapshot = { meta, data: new TextEncoder().encode(JSON.stringify(n.applied)) };
    applyCompaction(n.disk, snap);
    n.core.compact({ meta: snap.meta, bytes: snap.data.length });
    return snap;
  }

  leaders(): NodeId[] {
    return this.ids.filter((id) => this.node(id).up && this.status(id).role === 'leader');
  }

  // ------------------------------------------------------------------ faults

  /** Blocks both directions between each node of `group` and every node outside it. */
  isolate(...group: NodeId[]): void {
    for (const a of group)
      for (const b of this.ids) if (!group.includes(b)) (this.block(a, b), this.block(b, a));
  }

  /** Blocks one direction. */
  block(from: NodeId, to: NodeId): void {
    this.blocked.add(`${from}>${to}`);
  }

  heal(): void {
    this.blocked.clear();
  }

  /** Stops a node: its in-memory state is gone; its disk (always synced here) stays. */
  crash(id: NodeId): void {
    this.node(id).up = false;
    this.queue = this.queue.filter((m) => m.to !== id);
  }

  /** Restarts a node from its disk. */
  restart(id: NodeId): void {
    const n = this.node(id);
    n.core = this.makeCore(id, n.disk);
    n.applied = n.disk.snapshot
      ? (JSON.parse(new TextDecoder().decode(n.disk.snapshot.data)) as string[])
      : [];
    n.appliedIndex = n.disk.snapshot?.meta.index ?? 0;
    n.up = true;
    this.process(id);
  }

  /** Fails on the first invariant violation the checker recorded. */
  assertSafe(): void {
    const v = this.checker.violation;
    if (v) throw new Error(`invariant violated: [${v.invariant}] ${v.message}`);
  }
}
