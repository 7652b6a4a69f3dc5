/**
 * Named scenarios on the simulated world: the real RaftDriver around the real RaftCore,
 * with fake disks (unsynced writes lost on crash), fake network and fake clocks. Every
 * step is checked by the simulator's invariant checkers.
 */
import { describe, expect, it } from 'vitest';
import { NotLeaderError, ProposalDroppedError } from '../../src/shared/errors.ts';
import type { Message, NodeId } from '../../src/raft/core/types.ts';
import {
  assertSafe,
  bootWorld,
  electedLeader,
  proposeAndWait,
  status,
  until,
} from './world-helpers.ts';
import { nid } from '../support/node-id.ts';

const grantsFrom = (msgs: Message[], from: NodeId, term: number) =>
  msgs.filter((m) => m.type === 'voteResp' && !m.reject && m.from === from && m.term === term);

describe('partitions', () => {
  it('a partitioned old leader comes back, steps down, and its uncommitted entries are overwritten', async () => {
    const w = await bootWorld({ nodes: 3, electionTicks: 8 });
    const old = await electedLeader(w);
    expect((await proposeAndWait(w, old.id, 'a', 'before')).ok).toBe(true);
    const oldTerm = status(w, old.id).term;
    await w.act(() => w.isolate([old.id]));
    // A write on the old leader cannot commit: it has no quorum.
    const lost = w.propose(old.id, 'a', 'lost');
    await until(
      w,
      () => w.leader() !== null && w.leader()!.id !== old.id,
      'a new leader on the majority side',
    );
    const fresh = w.leader()!;
    expect(status(w, fresh.id).term).toBeGreaterThan(oldTerm);
    expect((await proposeAndWait(w, fresh.id, 'a', 'after')).ok).toBe(true);
    await w.act(() => w.heal());
    await until(
      w,
      () =>
        status(w, old.id).applied >= status(w, fresh.id).applied &&
        status(w, old.id).role === 'follower',
      'the old leader catches up as a follower',
    );
    // The old leader's write was refused (leadership lost before it committed) and is gone.
    const out = w.outcomes.get(lost);
    expect(out?.ok).toBe(false);
    if (out && !out.ok) expect(out.error).toBeInstanceOf(ProposalDroppedError);
    expect(w.node(old.id).sm!.get('a')).toBe('after');
    assertSafe(w);
  });

  it('an asymmetric partition of five: the leader reaches only some followers, keeps leading, and the others cannot disrupt it', async () => {
    const w = await bootWorld({ nodes: 5, electionTicks: 8 });
    const leader = await electedLeader(w);
    const term = status(w, leader.id).term;
    const others = w.ids.slice(0, 5).filter((id) => id !== leader.id);
    const [b, c, d, e] = others as [NodeId, NodeId, NodeId, NodeId];
    // The leader's messages to d and e are lost; d and e still reach everyone.
    await w.act(() =>
      w.block([
        [leader.id, d],
        [leader.id, e],
      ]),
    );
    for (let i = 0; i < 10; i++)
      expect((await proposeAndWait(w, leader.id, 'k', `v${i}`)).ok).toBe(true);
    // d and e time out and try pre-votes for many election timeouts; b and c hear the leader and
    // refuse.
    for (let i = 0; i < 80; i++) await w.round();
    expect(status(w, leader.id).role).toBe('leader');
    expect(status(w, leader.id).term).toBe(term);
    expect(status(w, b).term).toBe(term);
    expect(status(w, c).term).toBe(term);
    assertSafe(w);
    // (That d and e catch up after the heal is checked below.)
  });
});

describe('snapshots', () => {
  it('a follower that falls behind a compaction receives the snapshot in chunks and converges', async () => {
    const w = await bootWorld({
      nodes: 3,
      snapshotEveryEntries: 5,
      snapshotChunkBytes: 24,
      electionTicks: 8,
    });
    // The lagger is down from the start (the same story with a follower cut off while the
    // leader pipelines to it is checked below).
    const lagger = nid('n3');
    await w.act(() => w.crash(lagger));
    const leader = await electedLeader(w);
    for (let i = 0; i < 25; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    expect(status(w, leader.id).firstIndex).toBeGreaterThan(2); // compacted behind
    w.recorded = [];
    await w.act(() => w.startNode(lagger));
    await until(
      w,
      () => status(w, lagger).applied >= status(w, leader.id).applied,
      'the lagging follower catches up',
    );
    const chunks = w.recorded.filter((m) => m.type === 'snap' && m.to === lagger);
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.some((m) => m.type === 'snap' && m.offset > 0)).toBe(true);
    expect(w.node(lagger).disk.synced.snapshot).not.toBeNull();
    expect(w.node(lagger).sm!.hash).toBe(w.node(leader.id).sm!.hash);
    expect(w.node(lagger).sm!.get('k0')).toBe(w.node(leader.id).sm!.get('k0'));
    assertSafe(w);
  });

  it('a corrupt snapshot is refused before anything of it is persisted; the follower keeps running and installs the one resent (issue 13, item 4)', async () => {
    const w = await bootWorld({
      nodes: 3,
      snapshotEveryEntries: 5,
      snapshotChunkBytes: 24,
      electionTicks: 8,
    });
    const lagger = nid('n3');
    await w.act(() => w.crash(lagger));
    const leader = await electedLeader(w);
    for (let i = 0; i < 25; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    // The first snapshot stream to the lagger is corrupted in flight, chunk by chunk.
    let corrupted = 0;
    w.net.tamper = (m) => {
      if (m.type !== 'snap' || m.to !== lagger) return m;
      const st = w.node(lagger).driver?.status();
      if (!st || st.snapshotsRejected > 0) return m;
      corrupted++;
      return { ...m, chunk: new Uint8Array(m.chunk.length).fill(0x7b) };
    };
    await w.act(() => w.startNode(lagger));
    await until(
      w,
      () => status(w, lagger).applied >= status(w, leader.id).applied,
      'the lagging follower catches up',
    );
    expect(corrupted).toBeGreaterThan(0);
    const st = status(w, lagger);
    expect(st.snapshotsRejected).toBe(1);
    expect(st.snapshotsRestored).toBe(1);
    expect(w.stats.fatals).toBe(0);
    expect(w.node(lagger).incarnation).toBe(1 + 1); // started once after the crash, never again
    expect(w.node(lagger).sm!.hash).toBe(w.node(leader.id).sm!.hash);
    // The node restarts from what it persisted: only the good snapshot ever reached its disk.
    await w.act(() => w.crash(lagger));
    await w.act(() => w.startNode(lagger));
    await until(
      w,
      () => status(w, lagger).applied >= status(w, leader.id).applied,
      'the follower restarts from its disk',
    );
    assertSafe(w);
  });

  it('the leader streams its snapshot from its disk, chunk by chunk: a copy damaged there is refused by the recorded checksum, even one that decodes', async () => {
    const w = await bootWorld({
      nodes: 3,
      snapshotEveryEntries: 5,
      snapshotChunkBytes: 24,
      electionTicks: 8,
    });
    const lagger = nid('n3');
    await w.act(() => w.crash(lagger));
    const leader = await electedLeader(w);
    for (let i = 0; i < 25; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    // Bit rot in the leader's snapshot file after it was written: one value's digit changes,
    // so the data still decodes into a valid state, just not the replicated one.
    const disk = w.node(leader.id).disk;
    const onDisk = disk.synced.snapshot!;
    const at = new TextDecoder().decode(onDisk.data).search(/"v\d/) + 2;
    expect(at).toBeGreaterThan(1);
    onDisk.data[at] = onDisk.data[at] === 0x30 ? 0x31 : 0x30;
    const readsBefore = disk.snapshotReads;
    await w.act(() => w.startNode(lagger));
    w.recorded = [];
    for (let i = 0; i < 60; i++) await w.round();
    const starts = w.recorded.filter((m) => m.type === 'snap' && m.to === lagger && m.offset === 0);
    // Refused whole, it is streamed again after a heartbeat's answer, not back to back
    // (which read the whole file and sent it tens of thousands of times in these 60 ticks).
    expect(starts.length).toBeGreaterThan(1);
    expect(starts.length).toBeLessThanOrEqual(60);
    // Every chunk came from the disk; the whole was refused, nothing of it restored.
    expect(disk.snapshotReads).toBeGreaterThan(readsBefore + 1);
    expect(status(w, lagger).snapshotsRejected).toBeGreaterThan(0);
    expect(status(w, lagger).snapshotsRestored).toBe(0);
    // The leader's next snapshot is sound: the lagger installs it and converges.
    for (let i = 25; i < 35; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    await until(
      w,
      () => status(w, lagger).applied >= status(w, leader.id).applied,
      'the lagging follower catches up on a sound snapshot',
    );
    expect(status(w, lagger).snapshotsRestored).toBe(1);
    for (let i = 0; i < 4; i++)
      expect(w.node(lagger).sm!.get(`k${i}`)).toBe(w.node(leader.id).sm!.get(`k${i}`));
    assertSafe(w);
  });

  /** Each node's snapshot indexes (on its disk) while `count` proposals commit one by one. */
  async function snapshotPoints(stagger: boolean, count: number) {
    const w = await bootWorld({ nodes: 3, snapshotEveryEntries: 30, snapshotStagger: stagger });
    const leader = await electedLeader(w);
    const points = new Map<NodeId, number[]>(w.ids.slice(0, 3).map((id) => [id, []]));
    const note = () => {
      for (const [id, seen] of points) {
        const at = w.node(id).disk.synced.snapshot?.meta.index;
        if (at !== undefined && at !== seen.at(-1)) seen.push(at);
      }
    };
    for (let i = 0; i < count; i++) {
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
      note();
    }
    assertSafe(w);
    return [...points.values()];
  }

  it('staggered snapshot points: the members take theirs a third of a threshold apart, never at one index', async () => {
    // E.g. n1 at 30, 60, 90…; n2 at 21, 51, 81…; n3 at 11, 41, 71… (the leader's no-op is 1).
    const [a, b, c] = await snapshotPoints(true, 200);
    for (const [x, y] of [
      [a!, b!],
      [a!, c!],
      [b!, c!],
    ] as const) {
      expect(x.length).toBeGreaterThanOrEqual(5);
      // Past the first point of each, any two members' points are ≥ 30/3 - 2 entries apart
      // (a proposal is an entry; a point may land an entry or two past its threshold).
      for (const p of x.slice(1)) {
        const nearest = Math.min(...y.slice(1).map((q) => Math.abs(p - q)));
        expect(nearest).toBeGreaterThanOrEqual(8);
      }
    }
    // Never later than the unstaggered trigger: at most 30 entries between two points.
    for (const pts of [a!, b!, c!])
      for (let i = 1; i < pts.length; i++) expect(pts[i]! - pts[i - 1]!).toBeLessThanOrEqual(32);
  });

  it("staggered snapshot points hold across a restart from its own snapshot and a catch-up by the leader's", async () => {
    const w = await bootWorld({ nodes: 3, snapshotEveryEntries: 30 });
    const leader = await electedLeader(w);
    // x: the follower ranked last by id (a restart that moved its point would move it onto
    // another member's, whoever leads); y: the other.
    const [y, x] = w.ids
      .slice(0, 3)
      .filter((id) => id !== leader.id)
      .sort() as NodeId[] as [NodeId, NodeId];
    let next = 0;
    const propose = async (n: number) => {
      for (let i = 0; i < n; i++, next++)
        expect((await proposeAndWait(w, leader.id, `k${next % 4}`, `v${next}`)).ok).toBe(true);
    };
    await propose(115);
    // x restarts from its own snapshot and the log after it; y misses 80 entries and gets
    // the leader's snapshot.
    await w.act(() => w.crash(x));
    await w.act(() => w.startNode(x));
    await w.act(() => w.crash(y));
    await propose(80);
    await w.act(() => w.startNode(y));
    await until(w, () => status(w, y).applied >= status(w, leader.id).applied, 'y catches up');
    expect(status(w, y).snapshotsRestored).toBe(1);
    const points = new Map<NodeId, number[]>([leader.id, x, y].map((id) => [id, []]));
    for (let i = 0; i < 150; i++) {
      await propose(1);
      for (const [id, seen] of points) {
        const at = w.node(id).disk.synced.snapshot?.meta.index;
        if (at !== undefined && at !== seen.at(-1)) seen.push(at);
      }
    }
    const [l, px, py] = [...points.values()].map((p) => p.slice(1)) as [
      number[],
      number[],
      number[],
    ];
    for (const [p, q] of [
      [l, px],
      [l, py],
      [px, py],
    ] as const) {
      expect(p.length).toBeGreaterThanOrEqual(3);
      for (const at of p.slice(1))
        expect(Math.min(...q.slice(1).map((b) => Math.abs(at - b)))).toBeGreaterThanOrEqual(8);
    }
    assertSafe(w);
  });

  /** The tick at which each node's idle snapshot reached its disk. */
  async function idleSnapshotTicks(stagger: boolean): Promise<number[]> {
    const w = await bootWorld({
      nodes: 3,
      snapshotEveryEntries: 0,
      snapshotStagger: stagger,
      snapshotWhenIdle: { bytes: 1, ticks: 10 },
    });
    const leader = await electedLeader(w);
    for (let i = 0; i < 10; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    const ids = w.ids.slice(0, 3);
    const at = new Map<NodeId, number>();
    for (let tick = 0; tick < 60 && at.size < 3; tick++) {
      await w.round();
      for (const id of ids)
        if (!at.has(id) && (w.node(id).disk.synced.snapshot?.meta.index ?? 0) > 1) at.set(id, tick);
    }
    assertSafe(w);
    return ids.map((id) => at.get(id) ?? Number.NaN);
  }

  it('staggered idle snapshots: the members compact an idle log 10 ticks apart, not at once', async () => {
    // Each waits (1 + rank) × 10 ticks from its last apply (the members' last applies are a
    // tick or three apart: a follower learns the commit index with the next heartbeat).
    const ticks = (await idleSnapshotTicks(true)).sort((p, q) => p - q);
    expect(ticks.every(Number.isFinite)).toBe(true);
    expect(ticks[1]! - ticks[0]!).toBeGreaterThanOrEqual(6);
    expect(ticks[2]! - ticks[1]!).toBeGreaterThanOrEqual(6);
    // Without the stagger: all three within those few ticks.
    const same = (await idleSnapshotTicks(false)).sort((p, q) => p - q);
    expect(same[2]! - same[0]!).toBeLessThanOrEqual(3);
  });

  it('without the stagger, the members take their snapshots at the same indexes (what the stagger prevents)', async () => {
    const [a, b, c] = await snapshotPoints(false, 120);
    const common = a!.filter((p) => b!.includes(p) && c!.includes(p));
    expect(common.length).toBeGreaterThanOrEqual(2);
  });

  it('a node restarts from its snapshot and log and applies the same state', async () => {
    const w = await bootWorld({ nodes: 3, snapshotEveryEntries: 4 });
    const leader = await electedLeader(w);
    for (let i = 0; i < 11; i++)
      expect((await proposeAndWait(w, leader.id, 'k', `v${i}`)).ok).toBe(true);
    const other = w.ids.slice(0, 3).find((id) => id !== leader.id)!;
    await until(
      w,
      () => status(w, other).applied === status(w, leader.id).applied,
      'follower caught up',
    );
    const hash = w.node(other).sm!.hash;
    await w.act(() => w.crash(other));
    await w.act(() => w.startNode(other));
    await until(
      w,
      () => status(w, other).applied === status(w, leader.id).applied,
      'restarted follower replays',
    );
    expect(w.node(other).sm!.hash).toBe(hash);
    assertSafe(w);
  });
});

describe('disk failures', () => {
  it('a disk write that fails: the vote it recorded is never granted and the node fail-stops', async () => {
    const w = await bootWorld({ nodes: 3, electionTicks: 6 });
    const leader = await electedLeader(w);
    const [voter, candidate] = w.ids.slice(0, 3).filter((id) => id !== leader.id) as [
      NodeId,
      NodeId,
    ];
    await w.act(() => w.crash(leader.id));
    // The voter restarts (so it is in no leader's lease) and is never ticked (so it does not
    // campaign itself).
    await w.act(() => w.crash(voter));
    await w.act(() => w.startNode(voter));
    await w.act(() => w.campaign(candidate));
    // Deliver one message at a time; arm the voter's disk just before the vote request reaches it.
    let armed = false;
    let voteTerm = 0;
    for (let i = 0; i < 500 && w.node(voter).up; i++) {
      const links = w.net.busyLinks();
      const dirty = w.upNodes().filter((n) => n.disk.pendingWrites > 0);
      if (links.length === 0 && dirty.length === 0) break;
      for (const link of links) {
        const m = w.net.peek(link, 0)!;
        if (!armed && m.type === 'vote' && m.to === voter) {
          armed = true;
          voteTerm = m.term;
          w.failNextWrite(voter);
        }
        await w.act(() => w.deliver(link));
      }
      for (const n of dirty) await w.act(() => w.sync(n.id));
    }
    expect(armed).toBe(true);
    expect(w.node(voter).up).toBe(false); // fail-stop
    expect(grantsFrom(w.recorded!, voter, voteTerm)).toEqual([]);
    expect(
      w.node(voter).disk.synced.hardState.vote === candidate &&
        w.node(voter).disk.synced.hardState.term === voteTerm,
    ).toBe(false);
    assertSafe(w);
    // It restarts from what is durable and the cluster recovers.
    await w.act(() => w.startNode(voter));
    await w.act(() => w.startNode(leader.id));
    const l2 = await electedLeader(w);
    expect((await proposeAndWait(w, l2.id)).ok).toBe(true);
    assertSafe(w);
  });

  // A leader's append may leave before its own write (thesis §10.2.1; see the driver), so
  // the entry can reach followers; what must hold is that the leader stops at once, sends
  // nothing after the failed write, rejects its proposal, and nothing unsafe follows.
  it('a leader whose disk fails stops, sends nothing after the failed write, and rejects its pending proposals', async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    w.recorded = [];
    await w.act(() => w.failNextWrite(leader.id));
    const seq = w.propose(leader.id, 'k', 'doomed');
    await w.act(() => {});
    const appsBefore = w.recorded.filter((m) => m.type === 'app' && m.from === leader.id).length;
    await w.act(() => w.sync(leader.id));
    expect(w.node(leader.id).up).toBe(false);
    expect(w.recorded.filter((m) => m.type === 'app' && m.from === leader.id).length).toBe(
      appsBefore,
    );
    const out = w.outcomes.get(seq);
    expect(out?.ok).toBe(false);
    assertSafe(w);
  });
});

describe('leadership transfer', () => {
  it('hands leadership to the chosen voter without waiting for an election timeout', async () => {
    const w = await bootWorld({ nodes: 3, electionTicks: 20 });
    const leader = await electedLeader(w);
    expect((await proposeAndWait(w, leader.id)).ok).toBe(true);
    const target = w.ids.slice(0, 3).find((id) => id !== leader.id)!;
    const term = status(w, leader.id).term;
    await w.act(() => w.transfer(leader.id, target));
    await w.flush(); // no ticks at all
    expect(status(w, target).role).toBe('leader');
    expect(status(w, target).term).toBe(term + 1);
    expect(status(w, leader.id).role).toBe('follower');
    expect((await proposeAndWait(w, target)).ok).toBe(true);
    assertSafe(w);
  });

  it('refuses proposals while a transfer is in progress', async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    const target = w.ids.slice(0, 3).find((id) => id !== leader.id)!;
    await w.act(() => w.isolate([target])); // the transfer cannot complete
    await w.act(() => w.transfer(leader.id, target));
    const seq = w.propose(leader.id);
    await w.act(() => {});
    const out = w.outcomes.get(seq);
    expect(out?.ok).toBe(false);
    if (out && !out.ok) expect(out.error).toBeInstanceOf(ProposalDroppedError);
    assertSafe(w);
  });
});

describe('ReadIndex', () => {
  it('a read on the leader completes after a quorum round and sees every acknowledged write', async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    const ack = await proposeAndWait(w, leader.id, 'x', '1');
    expect(ack.ok).toBe(true);
    let done = false;
    void w.read(leader.id).then((ok) => (done = ok));
    await w.act(() => {});
    expect(done).toBe(false); // needs the heartbeat round
    await until(w, () => done, 'the read completes');
    if (ack.ok) expect(status(w, leader.id).applied).toBeGreaterThanOrEqual(ack.result.index);
    assertSafe(w);
  });

  it('a read completes while the leader and its followers are all still writing: heartbeats and their answers do not wait behind a disk write (issue 12, item 3)', async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    expect((await proposeAndWait(w, leader.id, 'k', 'before')).ok).toBe(true);
    await until(
      w,
      () => w.ids.slice(0, 3).every((id) => status(w, id).applied === status(w, leader.id).applied),
      'everyone applied the write',
    );
    // A write starts a round on every node that only a sync would finish; no disk syncs.
    w.propose(leader.id, 'k', 'slow');
    await w.act(() => {});
    const deliverAll = async () => {
      for (let i = 0; i < 50 && w.net.busyLinks().length > 0; i++)
        for (const link of w.net.busyLinks()) await w.act(() => w.deliver(link));
    };
    await deliverAll();
    for (const id of w.ids.slice(0, 3)) expect(w.node(id).disk.pendingWrites).toBeGreaterThan(0);
    let done = false;
    void w.read(leader.id).then((ok) => (done = ok));
    await w.act(() => {});
    await deliverAll();
    expect(done).toBe(true);
    for (const id of w.ids.slice(0, 3)) expect(w.node(id).disk.pendingWrites).toBeGreaterThan(0);
    assertSafe(w);
  });

  it("a read on a follower is refused with the leader's id", async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    const follower = w.ids.slice(0, 3).find((id) => id !== leader.id)!;
    await w.round();
    const err = await w
      .node(follower)
      .driver!.read()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotLeaderError);
    expect((err as NotLeaderError).leaderId).toBe(leader.id);
  });

  it('a partitioned leader cannot complete a read; the read fails once it steps down', async () => {
    const w = await bootWorld({ nodes: 3, electionTicks: 6 });
    const leader = await electedLeader(w);
    await w.round();
    await w.act(() => w.isolate([leader.id]));
    let outcome: boolean | null = null;
    void w.read(leader.id).then((ok) => (outcome = ok));
    await until(w, () => outcome !== null, 'the read is answered');
    expect(outcome).toBe(false);
    expect(status(w, leader.id).role).not.toBe('leader');
    assertSafe(w);
  });
});

describe('membership', () => {
  it('a learner catches up without voting, then is promoted to voter', async () => {
    const w = await bootWorld({ nodes: 3, spares: 1 });
    const leader = await electedLeader(w);
    for (let i = 0; i < 5; i++) expect((await proposeAndWait(w, leader.id)).ok).toBe(true);
    await w.act(() => w.startNode(nid('n4')));
    await w.act(() =>
      w.changeMembership(leader.id, { type: 'addLearner', nodeId: nid('n4'), context: 'sim://n4' }),
    );
    await until(
      w,
      () =>
        status(w, nid('n4')).applied === status(w, leader.id).applied &&
        status(w, leader.id).conf.learners.includes(nid('n4')),
      'the learner catches up',
    );
    expect(status(w, leader.id).conf.voters).not.toContain('n4');
    expect(status(w, nid('n4')).role).toBe('follower');
    expect(
      w.recorded!.some((m) => (m.type === 'vote' || m.type === 'preVote') && m.to === 'n4'),
    ).toBe(false);
    await w.act(() =>
      w.changeMembership(leader.id, { type: 'addVoter', nodeId: nid('n4'), context: '' }),
    );
    await until(
      w,
      () =>
        status(w, nid('n4')).conf.voters.includes(nid('n4')) &&
        status(w, leader.id).conf.voters.length === 4,
      'promotion applied',
    );
    // Four voters: a write needs three of them.
    expect((await proposeAndWait(w, leader.id)).ok).toBe(true);
    assertSafe(w);
  });

  it('removing the leader makes it step down once the change commits; the rest elect a new leader', async () => {
    const w = await bootWorld({ nodes: 3 });
    const leader = await electedLeader(w);
    expect((await proposeAndWait(w, leader.id)).ok).toBe(true);
    await w.act(() => w.changeMembership(leader.id, { type: 'removeNode', nodeId: leader.id }));
    await until(
      w,
      () => w.leader() !== null && w.leader()!.id !== leader.id,
      'a new leader among the remaining voters',
    );
    expect(status(w, leader.id).role).not.toBe('leader');
    const fresh = w.leader()!;
    expect(status(w, fresh.id).conf.voters).not.toContain(leader.id);
    expect((await proposeAndWait(w, fresh.id)).ok).toBe(true);
    // The removed node keeps running and ticking; it does not disrupt the new leader.
    const term = status(w, fresh.id).term;
    for (let i = 0; i < 60; i++) await w.round();
    expect(w.leader()?.id).toBe(fresh.id);
    expect(status(w, fresh.id).term).toBe(term);
    assertSafe(w);
  });
});

/**
 * Regressions of the stalled-window bug (test/raft/replication.test.ts): a follower whose
 * pipelined appends were all lost must still catch up once the network heals.
 */
describe('one voter plus learners (issue 13, item 1)', () => {
  it("a learner never applies an entry the single voter had not made durable, though the voter's appends leave before its write", async () => {
    const w = await bootWorld({ nodes: 1, spares: 2, electionTicks: 6, snapshotEveryEntries: 0 });
    const leader = await electedLeader(w);
    expect(leader.id).toBe('n1');
    await w.act(() => w.startNode(nid('n2')));
    await w.act(() =>
      w.changeMembership(nid('n1'), { type: 'addLearner', nodeId: nid('n2'), context: 'sim://n2' }),
    );
    expect((await proposeAndWait(w, nid('n1'), 'k', 'before')).ok).toBe(true);
    await until(
      w,
      () =>
        status(w, nid('n1')).conf.learners.includes(nid('n2')) &&
        status(w, nid('n2')).applied === status(w, nid('n1')).applied,
      'the learner catches up',
    );
    const applied = status(w, nid('n2')).applied;

    // X: its append leaves for the learner before the voter's own write; everything is
    // delivered and the learner's disk syncs, the voter's never does.
    w.propose(nid('n1'), 'k', 'x');
    await w.act(() => {});
    for (let i = 0; i < 50 && w.net.busyLinks().length > 0; i++) {
      for (const link of w.net.busyLinks()) await w.act(() => w.deliver(link));
      await w.act(() => w.sync(nid('n2')));
    }
    expect(w.node(nid('n1')).disk.pendingWrites).toBeGreaterThan(0);
    // The learner holds X but does not know it committed: nothing is committed until the
    // single voter's write is durable.
    expect(status(w, nid('n2')).lastIndex).toBe(applied + 1);
    expect(status(w, nid('n2')).applied).toBe(applied);
    expect(w.node(nid('n2')).sm!.get('k')).toBe('before');

    // The voter crashes before its fsync: X is gone. It restarts, leads again and commits
    // its no-op where X was; the learner's X is overwritten, never applied.
    await w.act(() => w.crash(nid('n1')));
    await w.act(() => w.startNode(nid('n1')));
    await until(
      w,
      () =>
        w.leader()?.id === 'n1' &&
        status(w, nid('n1')).commit > applied &&
        status(w, nid('n2')).applied === status(w, nid('n1')).applied,
      'the voter leads again and the learner follows it',
    );
    expect(w.node(nid('n2')).sm!.get('k')).toBe('before');
    expect((await proposeAndWait(w, nid('n1'), 'k', 'after')).ok).toBe(true);
    await until(
      w,
      () => w.node(nid('n2')).sm?.get('k') === 'after',
      'the learner applies later writes',
    );
    assertSafe(w);
  });
});

describe('followers whose pipelined appends were lost catch up', () => {
  it('after an asymmetric partition heals, the followers the leader could not reach catch up', async () => {
    const w = await bootWorld({ nodes: 5, electionTicks: 8 });
    const leader = await electedLeader(w);
    const [, , d, e] = w.ids.slice(0, 5).filter((id) => id !== leader.id) as [
      NodeId,
      NodeId,
      NodeId,
      NodeId,
    ];
    await w.act(() =>
      w.block([
        [leader.id, d],
        [leader.id, e],
      ]),
    );
    for (let i = 0; i < 10; i++)
      expect((await proposeAndWait(w, leader.id, 'k', `v${i}`)).ok).toBe(true);
    await w.act(() => w.heal());
    await until(
      w,
      () =>
        status(w, d).applied === status(w, leader.id).applied &&
        status(w, e).applied === status(w, leader.id).applied,
      'd and e catch up',
      200,
    );
  });

  it('a follower cut off while the leader pipelines to it gets the snapshot after the heal', async () => {
    const w = await bootWorld({
      nodes: 3,
      snapshotEveryEntries: 5,
      snapshotChunkBytes: 24,
      electionTicks: 8,
    });
    const leader = await electedLeader(w);
    const lagger = w.ids.slice(0, 3).find((id) => id !== leader.id)!;
    await w.act(() => w.isolate([lagger]));
    for (let i = 0; i < 25; i++)
      expect((await proposeAndWait(w, leader.id, `k${i % 4}`, `v${i}`)).ok).toBe(true);
    await w.act(() => w.heal());
    await until(
      w,
      () => status(w, lagger).applied >= status(w, leader.id).applied,
      'the lagging follower catches up',
      200,
    );
  });
});
