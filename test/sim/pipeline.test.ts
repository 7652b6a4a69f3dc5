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

async function electedWorld(opts: { mutant?: boolean; ignore?: InvariantName[] } = {}) {
  const w = new World({
    settings: { ...DEFAULT_SETTINGS, nodes: 3, snapshotEveryEntries: 0 },
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
