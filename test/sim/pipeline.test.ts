/**
 * Pipelined appends and apply-before-own-write (issue 12), in scripted schedules on the
 * simulated cluster, and the unsafe variant the checkers must catch: a leader that counts
 * its own unsynced entries toward a commit.
 */
import { describe, expect, it } from 'vitest';
import type { InvariantName } from './invariants.ts';
import { countUnsyncedSelf } from './mutants.ts';
import { runSimulation, type RunOptions, type RunResult } from './runner.ts';
import { DEFAULT_SETTINGS, World, type SimNode } from './world.ts';
import { Prng } from '../support/prng.ts';
import type { Message, NodeId } from '../../src/raft/core/types.ts';

async function electedWorld(
  opts: { mutant?: boolean; ignore?: InvariantName[]; yieldBeforePersist?: boolean } = {},
) {
  const w = new World({
    settings: {
      ...DEFAULT_SETTINGS,
      nodes: 3,
      snapshotEveryEntries: 0,
      yieldBeforePersist: opts.yieldBeforePersist ?? false,
    },
    prng: new Prng(7),
    traceSize: 80,
    ...(opts.mutant ? { wrapCore: countUnsyncedSelf } : {}),
    ...(opts.ignore ? { ignore: opts.ignore } : {}),
  });
  await w.act(() => w.boot());
  for (let r = 0; r < 200 && !w.leader(); r++) await w.round();
  const leader = w.leader();
  expect(leader).not.toBeNull();
  // Let the no-op commit everywhere.
  for (let r = 0; r < 3; r++) await w.round();
  return { w, leader: leader as SimNode };
}

/** Delivers what is queued (but what `hold` keeps) and syncs the disks of `sync`, until quiet. */
async function flushSome(
  w: World,
  sync: readonly NodeId[],
  hold: (m: Message) => boolean = () => false,
): Promise<void> {
  for (let i = 0; i < 2000 && w.checker.violation === null; i++) {
    let did = false;
    for (const link of w.net.busyLinks()) {
      const head = w.net.peek(link, 0);
      if (head && hold(head)) continue;
      await w.act(() => w.deliver(link, 0));
      did = true;
    }
    for (const id of sync) {
      if (w.node(id).disk.pendingWrites > 0) {
        await w.act(() => w.sync(id));
        did = true;
      }
    }
    if (!did) return;
  }
}

describe('pipelined appends', () => {
  it('an entry proposed while the leader writes reaches the followers at once; the leader persists it next, in order', async () => {
    const { w, leader } = await electedWorld();
    const followers = w.ids.slice(0, 3).filter((id) => id !== leader.id);
    w.recorded = [];
    await w.act(() => void w.propose(leader.id, 'a'));
    // The first entry's round is writing (not synced): a second proposal arrives now.
    expect(leader.disk.pendingWrites).toBe(1);
    const first = leader.disk.view.written.lastIndex();
    await w.act(() => void w.propose(leader.id, 'b'));
    const second = first + 1;
    // Its appends left already, to both followers, before the first write ended.
    for (const f of followers)
      expect(
        w.recorded.some(
          (m) => m.type === 'app' && m.to === f && m.entries.some((e) => e.index === second),
        ),
      ).toBe(true);
    // ... while the leader's disk holds only the first round's write.
    expect(leader.disk.pendingWrites).toBe(1);
    expect(leader.disk.view.written.lastIndex()).toBe(first);
    // The first write ends; the next round writes the second entry, after the first.
    await w.act(() => w.sync(leader.id));
    expect(leader.disk.pendingWrites).toBe(1);
    expect(leader.disk.view.written.lastIndex()).toBe(second);
    expect(leader.disk.view.synced.lastIndex()).toBe(first);
    await w.flush();
    expect(w.stats.appendsPipelined).toBeGreaterThan(0);
    expect([...w.outcomes.values()].every((o) => o.ok)).toBe(true);
    expect(w.checker.violation).toBeNull();
  });
});

describe('apply before the leader’s own write', () => {
  it('an entry both followers hold is applied and acknowledged before the leader’s write ends; it survives the leader’s crash', async () => {
    const { w, leader } = await electedWorld();
    const followers = w.ids.slice(0, 3).filter((id) => id !== leader.id);
    const seq = w.propose(leader.id, 'a');
    await w.act(() => undefined);
    const index = leader.disk.view.written.lastIndex();
    // The followers write and answer; the leader's disk never syncs.
    await flushSome(w, followers);
    expect(w.outcomes.get(seq)?.ok).toBe(true);
    expect(leader.disk.view.synced.lastIndex()).toBeLessThan(index);
    expect(w.stats.appliedBeforeOwnSync).toBeGreaterThan(0);
    // The leader crashes before its write: the entry is on the followers' disks only.
    await w.act(() => w.crash(leader.id));
    await w.act(() => w.startNode(leader.id));
    for (let r = 0; r < 300 && !w.leader(); r++) await w.round();
    for (let r = 0; r < 5; r++) await w.round();
    expect(w.checker.violation).toBeNull();
    const now = w.leader();
    expect(now).not.toBeNull();
    expect(now?.disk.view.synced.termAt(index)).toBeDefined();
  });

  it('a leader that counts its unsynced entries is caught by commit-durable', async () => {
    const { w, leader } = await electedWorld({ mutant: true });
    const [f1] = w.ids.slice(0, 3).filter((id) => id !== leader.id) as [NodeId, NodeId];
    w.propose(leader.id, 'a');
    await w.act(() => undefined);
    // One follower answers; the leader's own write is still under way.
    await flushSome(w, [f1]);
    expect(w.checker.violation?.invariant).toBe('commit-durable');
  });

  it('... and, with commit-durable muted, by the end-to-end checkers (the acknowledged entry is lost)', async () => {
    const { w, leader } = await electedWorld({ mutant: true, ignore: ['commit-durable'] });
    const [f1, f2] = w.ids.slice(0, 3).filter((id) => id !== leader.id) as [NodeId, NodeId];
    const seq = w.propose(leader.id, 'a');
    await w.act(() => undefined);
    // Only f1 gets the append (and answers); f2 hears nothing of it.
    await flushSome(w, [f1], (m) => m.to === f2 && m.type === 'app');
    expect(w.outcomes.get(seq)?.ok).toBe(true);
    // The appends to f2 are lost; the leader crashes before its write ends and f1 is cut
    // off: f2 and the restarted leader, neither holding the entry, elect f2.
    while (w.net.peek(`${leader.id}>${f2}`, 0)) await w.act(() => w.drop(`${leader.id}>${f2}`));
    await w.act(() => w.crash(leader.id));
    await w.act(() => w.startNode(leader.id));
    await w.act(() => w.isolate([f1]));
    for (let r = 0; r < 300 && w.checker.violation === null; r++) {
      if (w.leader()?.id !== f2) await w.act(() => w.campaign(f2));
      await w.round();
      if (w.leader()?.id === f2) break;
    }
    await w.act(() => w.heal());
    for (let r = 0; r < 20 && w.checker.violation === null; r++) await w.round();
    expect(SAFETY).toContain(w.checker.violation?.invariant);
  });

  it('random schedules catch the same mutant', async () => {
    const r = await firstViolation(
      { steps: 2000, wrapCore: (core) => countUnsyncedSelf(core), ignore: ['liveness'] },
      5,
    );
    expect(r?.violation?.invariant).toBe('commit-durable');
  });
});

const SAFETY: InvariantName[] = [
  'state-machine-safety',
  'leader-completeness',
  'acked-not-lost',
  'log-matching',
];

async function firstViolation(
  opts: Omit<RunOptions, 'seed'>,
  maxSeeds: number,
): Promise<RunResult | null> {
  for (let seed = 1; seed <= maxSeeds; seed++) {
    const r = await runSimulation({ ...opts, seed });
    if (r.violation) return r;
  }
  return null;
}

describe('apply before a follower’s own write (review of issue 12)', () => {
  /**
   * f1's disk is slow: it holds `a` in a write under way when the append of `b` tells it
   * that `a` is committed (the leader and f2 hold it synced). f1 applies `a` at once, before
   * its own write of it ends — never `b` (not committed), never anything twice.
   */
  async function followerAppliesEarly() {
    const { w, leader } = await electedWorld();
    const [f1, f2] = w.ids.slice(0, 3).filter((id) => id !== leader.id) as [NodeId, NodeId];
    const fast = [leader.id, f2];
    const a = w.propose(leader.id, 'a');
    await w.act(() => undefined);
    const ia = leader.disk.view.written.lastIndex();
    // f1 gets `a` and starts writing it; only the leader's and f2's disks sync.
    await flushSome(w, fast);
    expect(w.outcomes.get(a)?.ok).toBe(true);
    expect(w.node(f1).disk.pendingWrites).toBe(1);
    expect(w.node(f1).disk.view.synced.lastIndex()).toBeLessThan(ia);
    const before = w.stats.appliedBeforeOwnSync;
    const b = w.propose(leader.id, 'b');
    await w.act(() => undefined);
    const ib = ia + 1;
    // The append of `b` carries commit ≥ ia; f2 does not answer it yet (its disk waits), so
    // `b` is not committed: f1 must apply `a` and stop there.
    await flushSome(w, [leader.id]);
    const st = w.node(f1).driver!.status();
    expect(st.commit).toBeGreaterThanOrEqual(ia);
    expect(st.commit).toBeLessThan(ib);
    expect(st.applied).toBe(ia);
    expect(w.stats.appliedBeforeOwnSync).toBeGreaterThan(before);
    // f1's first write is still under way: `a` is applied there, on no synced disk of f1's.
    expect(w.node(f1).disk.view.synced.lastIndex()).toBeLessThan(ia);
    expect(w.checker.violation).toBeNull();
    return { w, leader, f1, f2, a, b, ia, ib };
  }

  it('a follower applies an entry committed by the others before its own write of it ends, and only that', async () => {
    const { w, b, ib } = await followerAppliesEarly();
    // The next heartbeat carries the commit index of `b` to the followers.
    for (let r = 0; r < 10; r++) await w.round();
    expect(w.outcomes.get(b)?.ok).toBe(true);
    for (const id of w.ids.slice(0, 3))
      expect(w.node(id).driver!.status().applied).toBeGreaterThanOrEqual(ib);
    expect(w.checker.violation).toBeNull();
  });

  it('a snapshot asked for while such an entry is not on the follower’s disk waits for its write; a crash before it loses nothing', async () => {
    const { w, f1, a, b, ia, ib } = await followerAppliesEarly();
    const taken = w.node(f1).driver!.status().counters.snapshotsTaken;
    // Asked for now, it may not be taken at the applied index (beyond f1's durable log).
    await w.act(() => w.snapshotNow(f1));
    expect(w.node(f1).driver!.status().counters.snapshotsTaken).toBe(taken);
    expect(w.node(f1).disk.view.written.snapshotIndex()).toBeLessThan(ia);
    // f1 crashes before its write ends: it forgets `a` (its state is rebuilt from its disk),
    // which the leader and f2 still hold; it learns it again.
    await w.act(() => w.crash(f1));
    await w.act(() => w.startNode(f1));
    for (let r = 0; r < 10; r++) await w.round();
    expect(w.outcomes.get(a)?.ok).toBe(true);
    expect(w.outcomes.get(b)?.ok).toBe(true);
    expect(w.node(f1).driver!.status().applied).toBeGreaterThanOrEqual(ib);
    // A snapshot now (everything applied is on f1's disk) stands on a durable commit index.
    await w.act(() => w.snapshotNow(f1));
    for (let r = 0; r < 10; r++) await w.round();
    const disk = w.node(f1).disk.view.synced;
    expect(disk.snapshotIndex()).toBeGreaterThanOrEqual(ia);
    expect(disk.snapshotIndex()).toBeLessThanOrEqual(disk.hardState().commit);
    expect(w.checker.violation).toBeNull();
  });
});

describe('yieldBeforePersist in the simulator (as the server sets it)', () => {
  it('a leader’s round sends its appends, then yields: a delivery comes before its write starts', async () => {
    const { w, leader } = await electedWorld({ yieldBeforePersist: true });
    const [f1] = w.ids.slice(0, 3).filter((id) => id !== leader.id) as [NodeId, NodeId];
    w.recorded = [];
    await w.act(() => void w.propose(leader.id, 'a'));
    // The appends left; the write waits for the next action.
    expect(w.recorded.some((m) => m.type === 'app' && m.entries.length > 0)).toBe(true);
    expect(leader.disk.pendingWrites).toBe(0);
    // Any action resumes it: here, the append reaches f1 first.
    await w.act(() => w.deliver(`${leader.id}>${f1}`, 0));
    expect(leader.disk.pendingWrites).toBe(1);
    await w.flush();
    for (let r = 0; r < 3; r++) await w.round();
    expect([...w.outcomes.values()].every((o) => o.ok)).toBe(true);
    expect(w.checker.violation).toBeNull();
  });
});
