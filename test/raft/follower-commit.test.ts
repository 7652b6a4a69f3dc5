/**
 * What a follower may take as committed (review of 8a1f638, issue 12): with apply before
 * the node's own write, a follower applies committed entries from its in-memory log, the
 * unsynced and the stale parts of it included. So the commit index it takes from an append
 * must be min(leader's commit, last index the append proved matching) — never its own last
 * index, whose tail may be an old term's — and a heartbeat must carry no more than what the
 * leader knows the follower holds (its match).
 */
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../../src/raft/core/raft.ts';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import type { Entry, Message } from '../../src/raft/core/types.ts';
import { Cluster, logOfTerms } from './harness.ts';
import { nid } from '../support/node-id.ts';

const a = nid('a');
const b = nid('b');
const c = nid('c');

/**
 * b holds 1@1 2@1 3@2 4@2 (4@2 from the leader of term 2, never committed), has commit 2,
 * and is a follower in term 3, whose leader c holds 1@1 2@1 3@2 4@3 5@3, committed to 5.
 */
function staleFollower(): RaftCore {
  return new RaftCore(
    { ...defaultRaftConfig(b, () => 0.5), preVote: false },
    {
      hardState: { term: 3, vote: null, commit: 2 },
      snapshot: null,
      entries: logOfTerms([1, 1, 2, 2]),
      initialConf: { voters: [a, b, c], learners: [], context: {} },
    },
  );
}

function append(prevIndex: number, prevTerm: number, entries: Entry[], commit: number): Message {
  return { type: 'app', from: c, to: b, term: 3, prevIndex, prevTerm, entries, commit };
}

describe('a follower’s commit index', () => {
  it('from an append: the leader’s commit bounded by the last entry the append matched, not by the stale tail after it', () => {
    const core = staleFollower();
    // One entry per message (maxMsgBytes): 3@2 matches, so nothing is truncated.
    const e3 = logOfTerms([1, 1, 2])[2]!;
    core.step(append(2, 1, [e3], 5));
    expect(core.status().commit).toBe(3);
    // What it hands out as committed, during a write (takeUnblocked) or with a Ready, stops
    // at 3: 4@2 is not the leader's 4@3.
    const unblocked = core.takeUnblocked();
    expect(unblocked.committedEntries.map((e) => `${e.index}@${e.term}`)).toEqual([
      '1@1',
      '2@1',
      '3@2',
    ]);
    const rd = core.ready();
    expect(rd.committedEntries).toEqual([]);
    // The next append replaces the stale 4@2; only then does the commit index pass it.
    core.advance(rd);
    core.step(append(3, 2, [{ index: 4, term: 3, type: 'normal', data: new Uint8Array(0) }], 5));
    expect(core.status().commit).toBe(4);
    expect(core.takeUnblocked().committedEntries.map((e) => `${e.index}@${e.term}`)).toEqual([
      '4@3',
    ]);
  });

  it('from a heartbeat: the leader sends no more than the follower’s match', () => {
    const cl = new Cluster([a, b, c]);
    cl.elect(a);
    // Every append to c is lost: the leader commits with b, c matches nothing new.
    cl.dropIf = (m) => m.type === 'app' && m.to === c;
    for (let i = 0; i < 3; i++) cl.propose(a, `x${i}`);
    cl.deliverAll();
    const st = cl.status(a);
    const matchC = st.progress?.[c]?.match ?? 0;
    expect(st.commit).toBeGreaterThan(matchC);
    cl.sent.length = 0;
    cl.tickAll(3);
    const beats = cl.sent.filter((m) => m.type === 'heartbeat' && m.to === c);
    expect(beats.length).toBeGreaterThan(0);
    for (const m of beats) if (m.type === 'heartbeat') expect(m.commit).toBeLessThanOrEqual(matchC);
    cl.assertSafe();
  });

  it('a snapshot received while committed entries were handed out during a write: none is handed out twice or before it, the next are applied after it', () => {
    const core = staleFollower();
    // A round is under way: its Ready is taken, not advanced.
    const rd1 = core.ready();
    const e3 = logOfTerms([1, 1, 2])[2]!;
    core.step(append(2, 1, [e3], 5));
    // Handed out after the round's own (1, 2: its disk's commit), never those again.
    expect(rd1.committedEntries.map((e) => e.index)).toEqual([1, 2]);
    expect(core.takeUnblocked().committedEntries.map((e) => e.index)).toEqual([3]);
    // The leader compacted past b's log: its snapshot at 8@3 arrives, then the entry after it.
    const conf = { voters: [a, b, c], learners: [], context: {} };
    core.step({
      type: 'snap',
      from: c,
      to: b,
      term: 3,
      meta: { index: 8, term: 3, conf },
      offset: 0,
      chunk: new Uint8Array([1, 2, 3]),
      done: true,
    });
    core.step(append(8, 3, [{ index: 9, term: 3, type: 'normal', data: new Uint8Array(0) }], 9));
    expect(core.status().commit).toBe(9);
    // Nothing more is handed out while the snapshot waits to be written and restored.
    expect(core.takeUnblocked().committedEntries).toEqual([]);
    core.advance(rd1);
    const rd2 = core.ready();
    expect(rd2.snapshot?.meta.index).toBe(8);
    // Applied after the snapshot is restored: only what follows it, never 1..3 again.
    expect(rd2.committedEntries.map((e) => e.index)).toEqual([9]);
    core.advance(rd2);
    expect(core.status().applied).toBe(9);
    expect(core.hasReady()).toBe(false);
  });
});
