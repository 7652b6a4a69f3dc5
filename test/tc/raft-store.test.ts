/**
 * The Raft session store against a scripted Raft (no processes): leadership is announced
 * only once the leader applied its first entry of the term, a submit resolves only with the
 * applied outcome, not-leader answers name the leader's TC address, and concurrent reads
 * share ReadIndex barriers without ever reusing one that started before them.
 */
import { pack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  CoordinatorStateMachine,
  decodeCommand,
  encodeCommand,
  type BeginCommand,
  type LeadershipEvent,
} from '../../src/coordinator/index.ts';
import type { NodeId, Role } from '../../src/raft/core/types.ts';
import { nid } from '../support/node-id.ts';
import {
  AssertionFailure,
  NotLeaderError,
  ProposalDroppedError,
  StoppedError,
  TimeoutError,
} from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import {
  MAX_ENTRY_BYTES,
  RaftSessionStore,
  applyEntry,
  encodeBinBatchEntry,
  encodeEntry,
  isBatchEntry,
  type RaftPort,
} from '../../src/store/raft/index.ts';

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A Raft whose proposals and read barriers complete when the test says so. */
class ScriptedRaft implements RaftPort {
  role: Role = 'follower';
  term = 1;
  leader: NodeId | null = nid('n2');
  /** Until the leader's no-op is committed, ReadIndex is refused (as the core does). */
  termEntryCommitted = false;
  readonly machine = new CoordinatorStateMachine();
  readonly proposals: Array<{ data: Uint8Array; done: Deferred<unknown> }> = [];
  readonly reads: Deferred<void>[] = [];
  readCalls = 0;
  autoApply = true;
  private readonly listeners = new Set<
    (c: { role: Role; term: number; leader: NodeId | null }) => void
  >();

  status() {
    return { id: nid('n1'), role: this.role, term: this.term, leader: this.leader };
  }

  onStateChange(l: (c: { role: Role; term: number; leader: NodeId | null }) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  set(role: Role, term: number, leader: NodeId | null): void {
    this.role = role;
    this.term = term;
    this.leader = leader;
    this.termEntryCommitted = false;
    for (const l of this.listeners) l({ role, term, leader });
  }

  propose(data: Uint8Array): Promise<unknown> {
    if (this.role !== 'leader') return Promise.reject(new NotLeaderError(this.leader));
    const done = deferred<unknown>();
    this.proposals.push({ data, done });
    if (this.autoApply) this.applyNext();
    return done.promise;
  }

  applyNext(): void {
    const p = this.proposals.shift()!;
    p.done.resolve(applyEntry(this.machine, p.data));
  }

  read(): Promise<void> {
    this.readCalls++;
    if (this.role !== 'leader') return Promise.reject(new NotLeaderError(this.leader));
    if (!this.termEntryCommitted)
      return Promise.reject(
        new ProposalDroppedError('the leader has not yet committed an entry of its term'),
      );
    const d = deferred<void>();
    this.reads.push(d);
    return d.promise;
  }

  completeReads(): void {
    for (const d of this.reads.splice(0)) d.resolve();
  }

  /**
   * Until the store has asked for its read barrier (it retries one the term's entry refused
   * on its own schedule: a fixed sleep lost that race on a loaded machine, CI 2026-12-07).
   */
  async barrierIssued(): Promise<void> {
    const until = Date.now() + 5_000;
    while (this.reads.length === 0) {
      if (Date.now() > until) throw new Error('the store asked for no read barrier within 5 s');
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

const begin = (n: number): BeginCommand => ({
  kind: 'Begin',
  xid: `127.0.0.1:8091:${n}`,
  transactionId: String(n),
  applicationId: 'app',
  transactionServiceGroup: 'g',
  name: '',
  timeoutMs: 60_000,
  beginTime: 1_000,
  requestId: null,
});

function storeOver(
  raft: ScriptedRaft,
  opts: { submitTimeoutMs?: number; readTimeoutMs?: number } = {},
) {
  const events: LeadershipEvent[] = [];
  const store = new RaftSessionStore({
    raft,
    state: raft.machine,
    logger: silentLogger(),
    barrierRetryMs: 1,
    ...opts,
  });
  store.onLeadershipChange((e) => events.push(e));
  return { store, events };
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('RaftSessionStore', () => {
  it('a follower refuses with NOT_LEADER naming the leader (the TC edge adds its address)', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    expect(store.isLeader()).toBe(false);
    const err = await store.submit(begin(1)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotLeaderError);
    expect((err as NotLeaderError).leaderId).toBe('n2');
    await expect(store.read((s) => s.liveSessionCount())).rejects.toBeInstanceOf(NotLeaderError);
    expect(raft.proposals).toEqual([]);
  });

  it('announces leadership only after the leader applied its first entry of the term', async () => {
    const raft = new ScriptedRaft();
    const { store, events } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    await tick(20);
    // The no-op of term 2 is not committed: ReadIndex keeps being refused, nothing is announced.
    expect(store.isLeader()).toBe(false);
    expect(store.hasLeaderRole()).toBe(true);
    expect(events).toEqual([]);
    // Meanwhile a submit waits instead of failing.
    const pending = store.submit(begin(1));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    expect(events).toEqual([{ isLeader: true, term: 2 }]);
    expect(store.isLeader()).toBe(true);
    const outcome = await pending;
    expect(outcome).toEqual({ ok: true, value: { xid: '127.0.0.1:8091:1', deadline: 61_000 } });

    raft.set('follower', 3, nid('n2'));
    expect(events.at(-1)).toEqual({ isLeader: false, term: 3 });
    expect(store.isLeader()).toBe(false);
    store.close();
  });

  it('submit resolves with the applied outcome, never before the entry is applied', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    raft.autoApply = false;
    let settled = false;
    const p = store.submit(begin(7)).then((o) => ((settled = true), o));
    await tick(20);
    expect(settled).toBe(false);
    expect(raft.machine.getSession('127.0.0.1:8091:7')).toBeUndefined();
    raft.applyNext();
    const outcome = await p;
    expect(outcome.ok).toBe(true);
    // A refused command is an outcome too, not a rejection.
    raft.autoApply = true;
    expect((await store.submit(begin(7))).ok).toBe(false);
    store.close();
  });

  it('a command not decided in time is a TimeoutError (outcome unknown)', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft, { submitTimeoutMs: 30 });
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    raft.autoApply = false;
    await expect(store.submit(begin(9))).rejects.toBeInstanceOf(TimeoutError);
    store.close();
  });

  it('concurrent reads share barriers, and none reuses a barrier that started before it', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    const before = raft.readCalls;
    const first = Array.from({ length: 50 }, () => store.read((s) => s.liveSessionCount()));
    await tick();
    expect(raft.readCalls - before).toBe(1);
    // These arrive while the first barrier is in flight: they must wait for a new one.
    const second = Array.from({ length: 50 }, () => store.read((s) => s.liveSessionCount()));
    let secondDone = false;
    void Promise.all(second).then(() => (secondDone = true));
    raft.completeReads();
    await Promise.all(first);
    await tick();
    expect(secondDone).toBe(false);
    expect(raft.readCalls - before).toBe(2);
    raft.completeReads();
    await Promise.all(second);
    expect(raft.readCalls - before).toBe(2);
    store.close();
  });

  it('losing leadership fails the calls waiting for the barrier with NOT_LEADER', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    const waiting = store.submit(begin(3));
    await tick();
    raft.set('follower', 3, nid('n2'));
    const err = await waiting.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotLeaderError);
    expect((err as NotLeaderError).leaderId).toBe('n2');
    store.close();
  });

  it('the submits of one event-loop turn travel in one entry, one outcome each; a refused one leaves the others applied', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    raft.autoApply = false;
    // xid 11 twice: the second Begin is refused inside the batch.
    const submitted = [11, 12, 11, 13].map((n) => store.submit(begin(n)));
    await tick();
    expect(raft.proposals).toHaveLength(1);
    expect(isBatchEntry(raft.proposals[0]!.data)).toBe(true);
    raft.applyNext();
    const outcomes = await Promise.all(submitted);
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, false, true]);
    expect(raft.machine.liveSessionCount()).toBe(3);
    expect(store.batchCounts()).toEqual({ entries: 1, commands: 4 });
    // A lone submit still travels as a lone command (the format before batching).
    const lone = store.submit(begin(14));
    await tick();
    expect(isBatchEntry(raft.proposals[0]!.data)).toBe(false);
    raft.applyNext();
    expect((await lone).ok).toBe(true);
    store.close();
  });

  it('a batch entry is an array header and the commands’ own bytes; the first batch format (bins) applies the same', () => {
    for (const count of [2, 15, 16, 40]) {
      // Some xids twice: refused inside the batch, in both formats alike.
      const bytes = Array.from({ length: count }, (_, i) => encodeCommand(begin(1 + (i % 13))));
      const entry = encodeEntry(bytes);
      const payload = bytes.reduce((n, b) => n + b.length, 0);
      expect(entry.length).toBe(payload + (count < 16 ? 1 : 3));
      expect(isBatchEntry(entry)).toBe(true);
      const now = applyEntry(new CoordinatorStateMachine(), entry);
      const before = applyEntry(new CoordinatorStateMachine(), encodeBinBatchEntry(bytes));
      expect(now).toEqual(before);
      expect((now as { ok: boolean }[]).filter((o) => o.ok)).toHaveLength(Math.min(count, 13));
    }
    // A batch mixing the formats, an empty one, or an unknown kind is a corrupt log.
    const one = encodeCommand(begin(1));
    const mixed = pack([one, decodeCommand(one)]);
    expect(() => applyEntry(new CoordinatorStateMachine(), mixed)).toThrow(AssertionFailure);
    expect(() => applyEntry(new CoordinatorStateMachine(), pack([]))).toThrow(AssertionFailure);
    const unknown = pack([{ kind: 'Nope' }, { kind: 'Nope' }]);
    expect(() => applyEntry(new CoordinatorStateMachine(), unknown)).toThrow(AssertionFailure);
  });

  it('an entry is bounded: a turn with more than MAX_ENTRY_BYTES of commands is split', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    const xid = '127.0.0.1:8091:1';
    expect((await store.submit(begin(1))).ok).toBe(true);
    raft.autoApply = false;
    // Each register carries ~16 KiB of application data: 100 of them exceed one entry.
    const data = 'x'.repeat(16 * 1024 - 10);
    const registers = Array.from({ length: 100 }, (_, i) =>
      store.submit({
        kind: 'RegisterBranch',
        xid,
        branchId: String(500 + i),
        type: 'TCC',
        resourceId: 'r',
        lockKey: '',
        applicationData: data,
        clientId: 'c',
        applicationId: 'app',
        at: 2_000,
        requestId: null,
      }),
    );
    while (store.batchCounts().commands < 101) await tick();
    expect(raft.proposals.length).toBeGreaterThan(1);
    for (const p of raft.proposals) expect(p.data.length).toBeLessThanOrEqual(MAX_ENTRY_BYTES + 64);
    while (raft.proposals.length > 0) raft.applyNext();
    expect((await Promise.all(registers)).every((o) => o.ok)).toBe(true);
    expect(raft.machine.getSession(xid)?.branches).toHaveLength(100);
    store.close();
  });

  // Issue 13 item 11. Before the fix a caller that timed out stayed in the queue, so an
  // overloaded leader's queue grew without bound.
  it('a read that timed out leaves the barrier queue', async () => {
    const raft = new ScriptedRaft();
    const { store } = storeOver(raft, { readTimeoutMs: 40 });
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    // Its barrier never completes.
    const first = store.read((s) => s.liveSessionCount()).catch(() => undefined);
    await tick();
    const late = Array.from({ length: 50 }, () =>
      store.read((s) => s.liveSessionCount()).catch((e: unknown) => e),
    );
    await tick();
    expect(store.queuedReads()).toBe(50);
    for (const err of await Promise.all(late)) expect(err).toBeInstanceOf(TimeoutError);
    expect(store.queuedReads()).toBe(0);
    await first;
    store.close();
  });

  // Issue 18 item 4: the store's phases (following, confirming, serving, closed).
  it('a leader elected again in a later term without a seen step-down announces the loss first, and its waiting calls wait for the new term', async () => {
    const raft = new ScriptedRaft();
    const { store, events } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    expect(events).toEqual([{ isLeader: true, term: 2 }]);
    raft.set('leader', 4, nid('n1')); // the step-down of term 2 and the election of 4, coalesced
    expect(events).toEqual([
      { isLeader: true, term: 2 },
      { isLeader: false, term: 4 },
    ]);
    expect(store.isLeader()).toBe(false);
    expect(store.hasLeaderRole()).toBe(true);
    const waiting = store.submit(begin(5));
    raft.set('leader', 5, nid('n1')); // coalesced again while confirming term 4
    raft.termEntryCommitted = true;
    await raft.barrierIssued();
    raft.completeReads();
    await tick();
    expect(events.slice(2)).toEqual([{ isLeader: true, term: 5 }]);
    expect((await waiting).ok).toBe(true);
    store.close();
  });

  it('closing refuses the calls waiting for the barrier (StoppedError) and announces the loss of a served leadership', async () => {
    const raft = new ScriptedRaft();
    const { store, events } = storeOver(raft);
    raft.set('leader', 2, nid('n1'));
    const waiting = store.submit(begin(6)).catch((e: unknown) => e);
    await tick();
    store.close();
    expect(await waiting).toBeInstanceOf(StoppedError);
    expect(events).toEqual([]);
    await expect(store.submit(begin(7))).rejects.toBeInstanceOf(StoppedError);
    expect(store.hasLeaderRole()).toBe(false);

    const raft2 = new ScriptedRaft();
    const served = storeOver(raft2);
    raft2.set('leader', 3, nid('n1'));
    raft2.termEntryCommitted = true;
    await raft2.barrierIssued();
    raft2.completeReads();
    await tick();
    served.store.close();
    expect(served.events).toEqual([
      { isLeader: true, term: 3 },
      { isLeader: false, term: 3 },
    ]);
    raft2.set('leader', 4, nid('n1')); // a closed store follows nothing
    expect(served.events).toHaveLength(2);
  });
});
