/**
 * The simulated world: N nodes, each the REAL RaftDriver around the REAL RaftCore, with a
 * fake disk, a fake clock and a fake transport behind the driver's ports, on a fake
 * network. The world exposes single actions (tick a node, deliver a message, sync a disk,
 * crash, partition, propose, ...); a scheduler (runner.ts) or a scripted test picks them.
 * After each action `settle()` drains every pending promise — nothing else runs, so a
 * run is a pure function of its choices. The world feeds an InvariantChecker.
 */
import { AssertionFailure } from '../../src/shared/errors.ts';
import { requireNodeId } from '../../src/shared/ids.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { RaftCore } from '../../src/raft/core/raft.ts';
import { RaftDriver, type RaftCoreApi, type RaftStateChange } from '../../src/raft/driver.ts';
import type {
  ConfChange,
  ConfState,
  DurableState,
  Message,
  NodeId,
  RaftConfig,
} from '../../src/raft/core/types.ts';
import { FakeClock } from './fake-clock.ts';
import { FakeDisk, type DiskBug } from './fake-disk.ts';
import { FakeNetwork, type FakeTransport, describeMessage } from './fake-network.ts';
import {
  InvariantChecker,
  bytesKey,
  type InvariantName,
  type NodeObservation,
} from './invariants.ts';
import { ObservedCore } from './observed-core.ts';
import { Prng } from '../support/prng.ts';
import { SimStateMachine, encodePayload, type SimApplyResult } from './state-machine.ts';

export interface SimSettings {
  /** Voters at bootstrap (n1..nN). */
  nodes: number;
  /** Further ids (n(N+1)...) that may join later. */
  spares: number;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  maxMsgBytes: number;
  maxInflightMsgs: number;
  snapshotChunkBytes: number;
  maxUncommittedBytes: number;
  snapshotEveryEntries: number;
  /** The driver's snapshotSliceMs: 0 encodes one slice per turn (the fake clock stands still). */
  snapshotSliceMs: number;
  /** The driver's snapshotStagger: members take their snapshots at different log points. */
  snapshotStagger: boolean;
  /** The driver's snapshotWhenIdle; null: its default. */
  snapshotWhenIdle: { bytes: number; ticks: number } | null;
  maxPendingProposals: number;
  maxPendingReads: number;
  readTimeoutTicks: number;
  maxQueueLength: number;
  diskBug: DiskBug;
  /** Lease reads on every node (the driver's leaseReads), with this clock drift bound. */
  leaseReads: boolean;
  /** The driver's pipelineAppends (a leader's appends leave during its round's write). */
  pipelineAppends: boolean;
  /** The driver's applyBeforeOwnWrite (committed entries applied during a node's own write). */
  applyBeforeOwnWrite: boolean;
  /**
   * The driver's yieldBeforePersist, as the server sets it (a round whose appends leave
   * yields before its write starts): the yield lasts until the world's next action, so a
   * delivery, tick, sync or crash may come between a round's appends and its write.
   */
  yieldBeforePersist: boolean;
  maxClockDrift: number;
  /**
   * Null: every node's clock is ticked on its own (arbitrary drift; the default). Else one
   * global time, and node i's clock runs at clockRates[i] times its speed (`advanceTime`):
   * what lease reads need, with rates within 1 ± maxClockDrift, or beyond it to break them.
   */
  clockRates: number[] | null;
}

export const DEFAULT_SETTINGS: SimSettings = {
  nodes: 3,
  spares: 2,
  tickMs: 10,
  electionTicks: 10,
  heartbeatTicks: 2,
  maxMsgBytes: 1024,
  maxInflightMsgs: 4,
  snapshotChunkBytes: 64,
  maxUncommittedBytes: 1 << 20,
  snapshotEveryEntries: 20,
  snapshotSliceMs: 0,
  snapshotStagger: true,
  snapshotWhenIdle: null,
  maxPendingProposals: 16,
  maxPendingReads: 16,
  readTimeoutTicks: 40,
  maxQueueLength: 64,
  diskBug: 'none',
  leaseReads: false,
  pipelineAppends: true,
  applyBeforeOwnWrite: true,
  yieldBeforePersist: false,
  maxClockDrift: 0.05,
  clockRates: null,
};

export interface WorldOptions {
  settings: SimSettings;
  /** Randomness for the nodes' election timeouts (the scheduler has its own). */
  prng: Prng;
  /** Wraps each node's core (mutants for negative tests). */
  wrapCore?: (core: RaftCoreApi, id: NodeId) => RaftCoreApi;
  /** Builds each node's core; default the real RaftCore (experiments may pass a patched copy). */
  coreFactory?: (config: RaftConfig, durable: DurableState) => RaftCoreApi;
  /** Events kept for the trace tail. */
  traceSize?: number;
  /** Invariants not to report (negative tests that isolate one checker). */
  ignore?: InvariantName[];
  /**
   * Builds a node's state machine (negative tests swap in a broken one; the coordinator mode its
   * own).
   */
  stateMachine?: (id: NodeId) => SimStateMachine;
  /** Called once a node's driver started (the coordinator mode builds its services on it). */
  onNodeUp?: (node: SimNode) => void;
  /** Called when a node goes down (crash or fatal), before its driver is dropped. */
  onNodeDown?: (node: SimNode) => void;
  /** Further checks after every step (the coordinator mode's invariants). */
  onStep?: () => void;
}

export class SimNode {
  incarnation = 0;
  up = false;
  /** Ever started (a spare that never joined is not). */
  started = false;
  driver: RaftDriver | null = null;
  sm: SimStateMachine | null = null;
  clock: FakeClock | null = null;
  transport: FakeTransport | null = null;
  readonly disk: FakeDisk;
  readonly random: Prng;
  /** Rounds yielding before their write (yieldBeforePersist), resumed by the next action. */
  yields: Array<() => void> = [];
  constructor(
    readonly id: NodeId,
    bug: DiskBug,
    random: Prng,
  ) {
    this.disk = new FakeDisk(bug);
    this.random = random;
  }
}

export interface WorldStats {
  proposed: number;
  acked: number;
  refused: Record<string, number>;
  reads: number;
  readsDone: number;
  /** Reads served on the leader's lease (no quorum round). */
  leaseReads: number;
  crashes: number;
  fatals: number;
  leaderChanges: number;
  snapshotsSent: number;
  confChanges: number;
  /** Appends with entries a leader sent while its round's write was under way (pipelined). */
  appendsPipelined: number;
  /** Entries applied while the node's round was under way (takeUnblocked). */
  appliedUnblocked: number;
  /** Entries applied before the node's own disk held them synced (a quorum of others did). */
  appliedBeforeOwnSync: number;
}

/** A bounded ring of recent events, formatted for a failure report. */
export class Trace {
  private readonly buf: string[] = [];
  private next = 0;
  constructor(readonly size: number) {}
  add(line: string): void {
    if (this.size <= 0) return;
    if (this.buf.length < this.size) this.buf.push(line);
    else this.buf[this.next] = line;
    this.next = (this.next + 1) % this.size;
  }
  tail(): string[] {
    return this.buf.length < this.size
      ? [...this.buf]
      : [...this.buf.slice(this.next), ...this.buf.slice(0, this.next)];
  }
}

export class World {
  readonly settings: SimSettings;
  readonly net: FakeNetwork;
  readonly checker: InvariantChecker;
  readonly nodes = new Map<NodeId, SimNode>();
  readonly ids: NodeId[];
  readonly bootstrap: ConfState;
  readonly trace: Trace;
  readonly stats: WorldStats = {
    proposed: 0,
    acked: 0,
    refused: {},
    reads: 0,
    readsDone: 0,
    leaseReads: 0,
    crashes: 0,
    fatals: 0,
    leaderChanges: 0,
    snapshotsSent: 0,
    confChanges: 0,
    appendsPipelined: 0,
    appliedUnblocked: 0,
    appliedBeforeOwnSync: 0,
  };
  step = 0;
  /** Global time in ms (clockRates mode only). */
  time = 0;
  private seq = 0;
  /** When set, every message that leaves a node is appended here (scripted tests). */
  recorded: Message[] | null = null;
  private readonly wrapCore: ((core: RaftCoreApi, id: NodeId) => RaftCoreApi) | undefined;
  private readonly makeStateMachine: (id: NodeId) => SimStateMachine;
  private readonly coreFactory: (config: RaftConfig, durable: DurableState) => RaftCoreApi;
  private readonly onNodeUp: ((node: SimNode) => void) | undefined;
  private readonly onNodeDown: ((node: SimNode) => void) | undefined;
  private readonly onStep: (() => void) | undefined;
  /** Results of client proposals by client sequence number, for scripted tests. */
  readonly outcomes = new Map<
    number,
    { ok: true; result: SimApplyResult } | { ok: false; error: Error }
  >();

  constructor(options: WorldOptions) {
    const s = options.settings;
    this.settings = s;
    this.wrapCore = options.wrapCore;
    this.makeStateMachine = options.stateMachine ?? (() => new SimStateMachine());
    this.coreFactory = options.coreFactory ?? ((config, durable) => new RaftCore(config, durable));
    this.onNodeUp = options.onNodeUp;
    this.onNodeDown = options.onNodeDown;
    this.onStep = options.onStep;
    this.trace = new Trace(options.traceSize ?? 50);
    this.net = new FakeNetwork(s.maxQueueLength);
    this.checker = new InvariantChecker(
      {
        maxInflightMsgs: s.maxInflightMsgs,
        maxPendingProposals: s.maxPendingProposals,
        maxPendingReads: s.maxPendingReads,
        maxQueueLength: s.maxQueueLength,
      },
      options.ignore,
    );
    this.ids = [];
    for (let i = 1; i <= s.nodes + s.spares; i++) this.ids.push(requireNodeId(`n${i}`));
    const voters = this.ids.slice(0, s.nodes);
    this.bootstrap = {
      voters,
      learners: [],
      context: Object.fromEntries(voters.map((v) => [v, `sim://${v}`])),
    };
    this.checker.quorumView = (id) => {
      const driver = this.nodes.get(id)?.driver;
      if (!driver) return null;
      const st = driver.status();
      const leader = st.leader !== null ? this.nodes.get(st.leader)?.driver : undefined;
      return {
        voters: st.conf.voters,
        ...(leader ? { leaderVoters: leader.status().conf.voters } : {}),
        disk: (v) => this.nodes.get(v)?.disk.view,
      };
    };
    for (const id of this.ids) {
      const node = new SimNode(id, s.diskBug, options.prng.fork());
      node.disk.observer = {
        onWrite: (batch, prevTerm) => {
          if (batch.snapshot) this.stats.snapshotsSent++;
          this.checker.onWrite(id, batch, node.disk.view, prevTerm);
        },
        onSync: (before, after) => this.checker.onSync(id, before, after),
      };
      this.nodes.set(id, node);
    }
    this.net.observer = {
      onSend: (from, m) => {
        const node = this.nodes.get(from);
        if (!node) return;
        this.recorded?.push(m);
        const unaddressedMember = (to: NodeId): boolean => {
          if (!node.transport || node.transport.peers.has(to) || !node.driver) return false;
          const conf = node.driver.status().conf;
          return conf.voters.includes(to) || conf.learners.includes(to);
        };
        this.checker.onSend(from, m, node.disk.view, unaddressedMember);
      },
    };
  }

  node(id: NodeId): SimNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  log(line: string): void {
    this.trace.add(`#${this.step} ${line}`);
  }

  /** Lets every pending promise run (there are no timers or I/O: the world is quiet after). */
  async settle(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Starts the bootstrap voters. */
  async boot(): Promise<void> {
    for (const id of this.bootstrap.voters) await this.startNode(id);
  }

  // ---------------------------------------------------------------- lifecycle

  /** A node's core (wrapped by a mutant, if any), shown to the checkers. */
  private observedCore(id: NodeId, config: RaftConfig, durable: DurableState): RaftCoreApi {
    let core: RaftCoreApi = this.coreFactory(config, durable);
    if (this.wrapCore) core = this.wrapCore(core, id);
    return new ObservedCore(core, {
      onReady: (rd) => this.checker.onReady(id, rd),
      onLeaderCommit: (from, to, voters) => this.checker.onLeaderCommit(from, to, voters),
      onUnblocked: (out) => {
        for (const m of out.messages)
          if (m.type === 'app' && m.entries.length > 0) this.stats.appendsPipelined++;
        this.stats.appliedUnblocked += out.committedEntries.length;
      },
      onReadIndex: (ctx) => this.checker.onReadIndexRequest(ctx),
    });
  }

  /** Starts (or restarts) a node from its durable disk. */
  async startNode(id: NodeId): Promise<void> {
    const node = this.node(id);
    if (node.up) return;
    node.incarnation++;
    node.started = true;
    const inc = node.incarnation;
    const clock = new FakeClock();
    const transport = this.net.attach(id);
    const sm = this.makeStateMachine(id);
    sm.observer = {
      onApply: (index, payload, hash) => {
        if (index > node.disk.view.synced.lastIndex()) this.stats.appliedBeforeOwnSync++;
        this.checker.onApply(id, inc, index, payload, hash, node.disk.view);
      },
      onRestore: (index, stateIndex, hash) =>
        this.checker.onRestore(id, inc, index, stateIndex, hash),
    };
    const s = this.settings;
    const { electionTicks, heartbeatTicks, maxMsgBytes, maxInflightMsgs } = s;
    const { snapshotChunkBytes, maxUncommittedBytes } = s;
    const raft: Partial<Omit<RaftConfig, 'id' | 'random'>> = {
      ...{ electionTicks, heartbeatTicks, maxMsgBytes, maxInflightMsgs },
      ...{ snapshotChunkBytes, maxUncommittedBytes },
    };
    const driver = new RaftDriver({
      id,
      storage: node.disk.open(),
      transport,
      clock,
      stateMachine: sm,
      initialConf: this.bootstrap,
      logger: silentLogger(),
      raft,
      random: () => node.random.float(),
      tickMs: s.tickMs,
      snapshotEveryEntries: s.snapshotEveryEntries,
      snapshotSliceMs: s.snapshotSliceMs,
      snapshotStagger: s.snapshotStagger,
      ...(s.snapshotWhenIdle ? { snapshotWhenIdle: s.snapshotWhenIdle } : {}),
      maxPendingProposals: s.maxPendingProposals,
      maxPendingReads: s.maxPendingReads,
      readTimeoutTicks: s.readTimeoutTicks,
      leaseReads: s.leaseReads,
      pipelineAppends: s.pipelineAppends,
      applyBeforeOwnWrite: s.applyBeforeOwnWrite,
      ...(s.yieldBeforePersist
        ? { yieldBeforePersist: () => new Promise<void>((resolve) => node.yields.push(resolve)) }
        : {}),
      maxClockDrift: s.maxClockDrift,
      createCore: (config, durable) => this.observedCore(id, config, durable),
    });
    driver.onFatal((err) => this.onFatal(node, inc, err));
    driver.onStateChange((st) => this.onStateChange(st));
    node.driver = driver;
    node.sm = sm;
    node.clock = clock;
    node.transport = transport;
    node.up = true;
    this.checker.onStart(id, inc, node.disk.view);
    this.log(
      `start ${id}#${inc} (durable term ${node.disk.synced.hardState.term}, commit ${node.disk.synced.hardState.commit}, last ${node.disk.view.synced.lastIndex()})`,
    );
    try {
      await driver.start();
    } catch (err) {
      this.checker.report('driver-assertion', `${id} failed to start: ${String(err)}`);
      return;
    }
    if (node.up && node.incarnation === inc) this.onNodeUp?.(node);
  }

  private onStateChange(st: RaftStateChange): void {
    if (st.role === 'leader') this.stats.leaderChanges++;
    this.log(
      `${st.id} is ${st.role} in term ${st.term} (leader ${st.leader ?? '-'}) voters [${st.conf.voters.join(',')}] learners [${st.conf.learners.join(',')}]`,
    );
  }

  private onFatal(node: SimNode, inc: number, err: unknown): void {
    if (node.incarnation !== inc) return;
    this.stats.fatals++;
    this.log(`${node.id} FATAL: ${String(err)}`);
    if (
      err instanceof AssertionFailure ||
      (err instanceof Error && err.cause instanceof AssertionFailure)
    ) {
      this.checker.report('driver-assertion', `${node.id}: ${String(err)}`);
    }
    // The process exits: what it did not sync is lost.
    this.kill(node);
  }

  private kill(node: SimNode): void {
    if (node.up) this.onNodeDown?.(node);
    node.up = false;
    // A dead process's rounds never resume (as its pending writes never end).
    node.yields = [];
    node.disk.crash();
    node.clock?.clear();
    this.net.detach(node.id);
    node.driver = null;
    node.sm = null;
    node.clock = null;
    node.transport = null;
  }

  crash(id: NodeId): void {
    const node = this.node(id);
    if (!node.up) return;
    this.stats.crashes++;
    this.log(`crash ${id} (losing ${node.disk.pendingWrites} unsynced writes)`);
    this.kill(node);
  }

  // ---------------------------------------------------------------- single actions

  tick(id: NodeId): void {
    const node = this.node(id);
    if (!node.up || !node.clock) return;
    node.clock.advance(this.settings.tickMs);
  }

  /** Global time (clockRates mode): every live node's clock moves by `ms` times its rate. */
  advanceTime(ms: number): void {
    const rates = this.settings.clockRates;
    if (rates === null) throw new Error('advanceTime needs settings.clockRates');
    this.time += ms;
    this.ids.forEach((id, i) => {
      const node = this.node(id);
      if (node.up && node.clock) node.clock.advance(ms * (rates[i] ?? 1));
    });
  }

  /** Changes a node's clock rate (clockRates mode), e.g. to slow the leader once elected. */
  setClockRate(id: NodeId, rate: number): void {
    const rates = this.settings.clockRates;
    if (rates === null) throw new Error('setClockRate needs settings.clockRates');
    rates[this.ids.indexOf(id)] = rate;
  }

  sync(id: NodeId): void {
    const node = this.node(id);
    const failing = node.disk.failNextSync;
    if (node.disk.syncOne()) this.log(`sync ${id}${failing ? ' FAILED (EIO)' : ''}`);
  }

  deliver(link: string, position = 0, duplicate = false): void {
    const m = this.net.deliver(link, position, duplicate);
    if (m)
      this.log(
        `${duplicate ? 'dup ' : ''}deliver${position > 0 ? `[${position}]` : ''} ${describeMessage(m)}`,
      );
  }

  drop(link: string, position = 0): void {
    const m = this.net.drop(link, position);
    if (m) this.log(`drop ${describeMessage(m)}`);
  }

  /** Blocks every directed link in `pairs`. */
  block(pairs: Array<[NodeId, NodeId]>): void {
    for (const [a, b] of pairs) this.net.block(a, b);
    this.log(`partition: blocked ${pairs.map(([a, b]) => `${a}>${b}`).join(' ')}`);
  }

  /** Cuts `group` off from everyone else, both ways. */
  isolate(group: NodeId[]): void {
    const pairs: Array<[NodeId, NodeId]> = [];
    for (const a of group)
      for (const b of this.ids) if (!group.includes(b)) pairs.push([a, b], [b, a]);
    this.block(pairs);
  }

  heal(): void {
    this.net.healAll();
    this.log('heal all links');
  }

  failNextWrite(id: NodeId): void {
    this.node(id).disk.failNextSync = true;
    this.log(`disk of ${id} will fail its next sync`);
  }

  /** Proposes `<seq>|k<key>=<value>` on `id`; returns the client sequence number. */
  propose(id: NodeId, key = 'k', value?: string): number {
    const node = this.node(id);
    const seq = ++this.seq;
    if (!node.up || !node.driver) return seq;
    const payload = encodePayload(seq, key, value ?? `v${seq}`);
    const text = bytesKey(payload);
    this.stats.proposed++;
    this.log(`propose ${text} on ${id}`);
    node.driver.propose(payload).then(
      (r) => {
        const res = r as SimApplyResult;
        this.stats.acked++;
        this.outcomes.set(seq, { ok: true, result: res });
        this.checker.onAck(res.index, text);
        this.log(`ack ${text} at ${res.index}`);
      },
      (err: Error) => {
        this.stats.refused[err.name] = (this.stats.refused[err.name] ?? 0) + 1;
        this.outcomes.set(seq, { ok: false, error: err });
        this.log(`refused ${text}: ${err.name}`);
      },
    );
    return seq;
  }

  read(id: NodeId): Promise<boolean> {
    const node = this.node(id);
    if (!node.up || !node.driver) return Promise.resolve(false);
    const driver = node.driver;
    const mustSee = this.checker.highestAckedIndex;
    this.stats.reads++;
    const leaseBefore = driver.status().leaseReadsServed;
    const p = driver.read();
    const onLease = driver.status().leaseReadsServed > leaseBefore;
    if (onLease) this.stats.leaseReads++;
    this.log(`read on ${id} (must see ${mustSee})${onLease ? ' on the lease' : ''}`);
    return p.then(
      () => {
        this.stats.readsDone++;
        const applied = driver.status().applied;
        this.checker.onReadDone(id, applied, mustSee);
        this.log(`read on ${id} done at applied ${applied}`);
        return true;
      },
      (err: Error) => {
        this.log(`read on ${id} refused: ${err.name}`);
        return false;
      },
    );
  }

  changeMembership(on: NodeId, cc: ConfChange): void {
    const node = this.node(on);
    if (!node.up || !node.driver) return;
    this.stats.confChanges++;
    this.log(`conf change on ${on}: ${cc.type} ${cc.nodeId}`);
    node.driver.changeMembership(cc).then(
      () => this.log(`conf change ${cc.type} ${cc.nodeId} applied on ${on}`),
      (err: Error) =>
        this.log(`conf change ${cc.type} ${cc.nodeId} refused: ${err.name}: ${err.message}`),
    );
  }

  transfer(from: NodeId, to: NodeId): void {
    const node = this.node(from);
    if (!node.up || !node.driver) return;
    try {
      node.driver.transferLeadership(to);
      this.log(`transfer leadership ${from} → ${to}`);
    } catch (err) {
      this.log(`transfer ${from} → ${to} refused: ${(err as Error).name}`);
    }
  }

  snapshotNow(id: NodeId): void {
    const node = this.node(id);
    if (!node.up || !node.driver) return;
    this.log(`snapshot now on ${id}`);
    node.driver.snapshotNow().catch(() => {});
  }

  campaign(id: NodeId): void {
    const node = this.node(id);
    if (!node.up || !node.driver) return;
    this.log(`force campaign on ${id}`);
    node.driver.campaign();
  }

  // ---------------------------------------------------------------- views

  upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  /** The live node that believes it leads in the highest term, if any. */
  leader(): SimNode | null {
    let best: SimNode | null = null;
    let bestTerm = -1;
    for (const n of this.nodes.values()) {
      if (!n.up || !n.driver) continue;
      const st = n.driver.status();
      if (st.role === 'leader' && st.term > bestTerm) {
        best = n;
        bestTerm = st.term;
      }
    }
    return best;
  }

  maxTerm(): number {
    let t = 0;
    for (const n of this.nodes.values())
      if (n.up && n.driver) t = Math.max(t, n.driver.status().term);
    return t;
  }

  /** Runs the checkers that look at the whole cluster; call after every action. */
  check(): void {
    const obs: NodeObservation[] = [];
    for (const n of this.nodes.values()) {
      obs.push({
        id: n.id,
        incarnation: n.incarnation,
        up: n.up,
        status: n.up && n.driver ? n.driver.status() : null,
        disk: n.disk.view,
      });
    }
    this.checker.afterStep(obs, this.net.queueLengths());
  }

  /** One action, then settle, then check. */
  async act(action: () => void | Promise<void>): Promise<void> {
    this.step++;
    // A round yielding before its write (yieldBeforePersist) resumes after this action.
    const yields: Array<() => void> = [];
    for (const n of this.nodes.values()) yields.push(...n.yields.splice(0));
    await action();
    for (const resume of yields) resume();
    await this.settle();
    this.check();
    if (this.checker.violation === null) this.onStep?.();
  }

  /**
   * Delivers everything queued and syncs every disk, round-robin, until quiet (bounded).
   * A link whose oldest message matches `hold` is left alone.
   */
  async flush(maxSteps = 10_000, hold?: (m: Message) => boolean): Promise<void> {
    for (let i = 0; i < maxSteps && this.checker.violation === null;) {
      let did = false;
      for (const link of this.net.busyLinks()) {
        const head = this.net.peek(link, 0);
        if (hold && head && hold(head)) continue;
        await this.act(() => this.deliver(link, 0));
        did = true;
        i++;
      }
      for (const n of this.nodes.values()) {
        if (n.disk.pendingWrites > 0) {
          await this.act(() => this.sync(n.id));
          did = true;
          i++;
        }
      }
      if (!did) return;
    }
  }

  /** Ticks every live node once (or moves global time by a tick), then flushes. */
  async round(): Promise<void> {
    if (this.settings.clockRates !== null)
      await this.act(() => this.advanceTime(this.settings.tickMs));
    else for (const n of this.upNodes()) await this.act(() => this.tick(n.id));
    await this.flush();
  }
}
