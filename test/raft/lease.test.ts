/**
 * Lease reads (issue 12, item 3): a leader serves reads without a quorum round while its
 * lease holds. The lease rests on the followers' promise not to vote for an election
 * timeout after they confirmed its heartbeat, measured on their clocks; the leader
 * shortens it by the drift bound it assumes. These scenarios run on one global time with
 * per-node clock rates: within the bound no read is stale; beyond it the linearizable-read
 * checker must catch the stale read an old leader serves after a new one acknowledged a
 * write.
 */
import { describe, expect, it } from 'vitest';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import { RaftCore } from '../../src/raft/core/raft.ts';
import type { Message, NodeId } from '../../src/raft/core/types.ts';
import type { World } from '../sim/world.ts';
import { logOfTerms } from './harness.ts';
import { assertSafe, bootWorld, proposeAndWait, status } from './world-helpers.ts';
import { nid } from '../support/node-id.ts';

const TICK_MS = 10;
const ELECTION_TICKS = 10;

/** Global time moves by `ms` in small steps; every message and disk write goes through. */
async function run(w: World, ms: number, each?: () => void): Promise<void> {
  for (let t = 0; t < ms && w.checker.violation === null; t += TICK_MS / 4) {
    each?.();
    await w.act(() => w.advanceTime(TICK_MS / 4));
    await w.flush();
  }
}

async function leaseWorld(maxClockDrift: number) {
  const w = await bootWorld(
    {
      nodes: 3,
      tickMs: TICK_MS,
      electionTicks: ELECTION_TICKS,
      heartbeatTicks: 1,
      leaseReads: true,
      maxClockDrift,
      clockRates: [1, 1, 1, 1, 1],
      snapshotEveryEntries: 0,
    },
    7,
  );
  for (let i = 0; i < 400 && w.leader() === null; i++) await run(w, TICK_MS);
  const leader = w.leader();
  if (leader === null) throw new Error('no leader');
  expect((await proposeAndWait(w, leader.id, 'k', 'first')).ok).toBe(true);
  await run(w, 3 * TICK_MS);
  return { w, leader: leader.id };
}

/**
 * The leader's clock runs slow and a follower b's fast (by `drift` each way). The other
 * follower c stops hearing the leader first, so only b's confirmations hold the lease.
 * Then the leader is cut off; c asks for votes at every step, and wins as soon as b stops
 * honouring the old leader (an election timeout of b's clock after b last heard it); the
 * new leader acknowledges a write; the old leader is asked to read all along. Returns how
 * many reads it served on its lease.
 */
async function partitionedLeaderReads(w: World, leader: NodeId, drift: number): Promise<number> {
  const [b, c] = w.ids.slice(0, 3).filter((id) => id !== leader) as [NodeId, NodeId];
  w.setClockRate(leader, 1 - drift);
  w.setClockRate(b, 1 + drift);
  await w.act(() => w.block([[leader, c]]));
  await run(w, 3 * ELECTION_TICKS * TICK_MS);
  // Its lease is fresh: it answers on the lease, with no quorum round.
  const before = w.stats.leaseReads;
  await w.act(() => void w.read(leader));
  expect(w.stats.leaseReads).toBe(before + 1);
  await w.act(() => w.isolate([leader]));
  let wrote = false;
  await run(w, 4 * ELECTION_TICKS * TICK_MS, () => {
    if (w.node(leader).driver?.status().role === 'leader') void w.read(leader);
    const fresh = w.leader();
    if (fresh === null || fresh.id === leader) w.campaign(c);
    else if (!wrote) {
      wrote = true;
      w.propose(fresh.id, 'k', 'second');
    }
  });
  if (w.checker.violation === null) expect(wrote).toBe(true);
  return w.stats.leaseReads - before;
}

describe('lease reads', () => {
  it('are off by default: every read is a quorum round', async () => {
    const w = await bootWorld({ nodes: 3, snapshotEveryEntries: 0 });
    for (let i = 0; i < 200 && w.leader() === null; i++) await w.round();
    const leader = w.leader()!.id;
    expect((await proposeAndWait(w, leader, 'k', 'v')).ok).toBe(true);
    for (let i = 0; i < 5; i++) {
      await w.act(() => void w.read(leader));
      await w.flush();
    }
    expect(w.stats.readsDone).toBe(5);
    expect(w.stats.leaseReads).toBe(0);
    expect(status(w, leader).leaseRemainingMs).toBe(0);
  });

  it('within the drift bound, an old leader cut off stops serving before a new leader can write', async () => {
    const { w, leader } = await leaseWorld(0.05);
    const served = await partitionedLeaderReads(w, leader, 0.04);
    expect(served).toBeGreaterThan(1);
    assertSafe(w);
  });

  it('beyond the drift bound, the stale read of the old leader is caught', async () => {
    const { w, leader } = await leaseWorld(0.05);
    // Four times the bound the leader assumes.
    await partitionedLeaderReads(w, leader, 0.2);
    expect(w.checker.violation?.invariant).toBe('read-linearizable');
  });

  it('are off while leadership is handed over: the transferee may win at once', async () => {
    const { w, leader } = await leaseWorld(0.05);
    expect(status(w, leader).leaseRemainingMs).toBeGreaterThan(0);
    const to = w.ids.slice(0, 3).find((id) => id !== leader)!;
    await w.act(() => w.transfer(leader, to));
    expect(status(w, leader).leaseRemainingMs).toBe(0);
    const before = w.stats.leaseReads;
    await w.act(() => void w.read(leader));
    expect(w.stats.leaseReads).toBe(before);
    await run(w, 2 * TICK_MS);
    expect(w.leader()?.id).toBe(to);
    assertSafe(w);
  });

  it('a voter that (re)starts grants no vote for an election timeout: it may have confirmed a lease just before it went down', () => {
    const voter = (leaseReads: boolean) =>
      new RaftCore(
        { ...defaultRaftConfig(nid('b'), () => 0.5), electionTicks: ELECTION_TICKS, leaseReads },
        {
          hardState: { term: 3, vote: nid('a'), commit: 5 },
          snapshot: null,
          entries: logOfTerms([1, 1, 2, 3, 3]),
          initialConf: { voters: [nid('a'), nid('b'), nid('c')], learners: [], context: {} },
        },
      );
    const request: Message = {
      type: 'vote',
      from: nid('c'),
      to: nid('b'),
      term: 4,
      lastLogIndex: 5,
      lastLogTerm: 3,
      transfer: false,
    };
    const answers = (core: RaftCore) => {
      const rd = core.ready();
      core.advance(rd);
      return [...rd.messages, ...rd.messagesAfterPersist].filter((m) => m.type === 'voteResp');
    };
    // Without lease reads it answers at once (and grants).
    const plain = voter(false);
    plain.step(request);
    expect(answers(plain)).toMatchObject([{ type: 'voteResp', reject: false }]);
    // With lease reads: silence for an election timeout of its own ticks, then a grant.
    const leased = voter(true);
    for (let i = 0; i < ELECTION_TICKS - 1; i++) {
      leased.step(request);
      expect(answers(leased)).toEqual([]);
      leased.tick();
    }
    leased.tick();
    leased.step(request);
    expect(answers(leased)).toMatchObject([{ type: 'voteResp', reject: false }]);
    // Nor does an operator's campaign run while it honours a leader it heard.
    const follower = voter(true);
    follower.campaign();
    expect(follower.status().role).toBe('follower');
    expect(follower.status().term).toBe(3);
  });
});
