/**
 * Each checker fails on a minimal synthetic history that breaks its invariant (and stays
 * quiet on the correct one), independently of the simulator.
 */
import { describe, expect, it } from 'vitest';
import type { Entry, HardState, Message, NodeId, Ready } from '../../src/raft/core/types.ts';
import {
  InvariantChecker,
  type DiskView,
  type LogView,
  type NodeObservation,
} from './invariants.ts';
import { nid } from '../support/node-id.ts';

const limits = {
  maxInflightMsgs: 2,
  maxPendingProposals: 2,
  maxPendingReads: 2,
  maxQueueLength: 3,
};
const enc = (s: string) => new TextEncoder().encode(s);
const entry = (index: number, term: number, data = `e${index}t${term}`): Entry => ({
  index,
  term,
  type: 'normal',
  data: enc(data),
});

function log(hs: HardState, terms: number[]): LogView {
  return {
    hardState: () => hs,
    lastIndex: () => terms.length,
    snapshotIndex: () => 0,
    termAt: (i) => (i === 0 ? 0 : terms[i - 1]),
  };
}
function disk(synced: LogView, written: LogView = synced): DiskView {
  return { synced, written };
}
const empty = disk(log({ term: 0, vote: null, commit: 0 }, []));
const ready = (r: Partial<Ready>): Ready => ({
  softState: null,
  hardState: null,
  entries: [],
  snapshot: null,
  messages: [],
  messagesAfterPersist: [],
  snapshotChunks: [],
  committedEntries: [],
  readStates: [],
  ...r,
});
const hb = (from: NodeId, to: NodeId, term: number): Message => ({
  type: 'heartbeat',
  from,
  to,
  term,
  commit: 0,
  readCtx: null,
});

describe('invariant checkers', () => {
  it('election-safety: two leaders in one term', () => {
    const c = new InvariantChecker(limits);
    c.onReady(nid('a'), ready({ softState: { role: 'leader', leader: nid('a'), term: 2 } }));
    c.onSend(
      nid('a'),
      hb(nid('a'), nid('b'), 2),
      disk(log({ term: 2, vote: nid('a'), commit: 0 }, [])),
    );
    expect(c.violation).toBeNull();
    c.onSend(
      nid('b'),
      hb(nid('b'), nid('c'), 2),
      disk(log({ term: 2, vote: nid('b'), commit: 0 }, [])),
    );
    expect(c.violation?.invariant).toBe('election-safety');
  });

  it('log-matching: same index and term, different entry', () => {
    const c = new InvariantChecker(limits);
    c.onWrite(nid('a'), { hardState: null, entries: [entry(1, 1, 'x')], snapshot: null }, empty, 0);
    c.onWrite(nid('b'), { hardState: null, entries: [entry(1, 1, 'x')], snapshot: null }, empty, 0);
    expect(c.violation).toBeNull();
    c.onWrite(nid('c'), { hardState: null, entries: [entry(1, 1, 'y')], snapshot: null }, empty, 0);
    expect(c.violation?.invariant).toBe('log-matching');
  });

  it('log-matching: same index and term, different history before it', () => {
    const c = new InvariantChecker(limits);
    c.onWrite(
      nid('a'),
      { hardState: null, entries: [entry(1, 1), entry(2, 2)], snapshot: null },
      empty,
      0,
    );
    c.onWrite(nid('b'), { hardState: null, entries: [entry(2, 2)], snapshot: null }, empty, 3);
    expect(c.violation?.invariant).toBe('log-matching');
  });

  it('leader-completeness: a later leader without a committed entry', () => {
    const c = new InvariantChecker(limits);
    c.noteTerm(nid('a'), 1);
    c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1)] }));
    // b leads term 2 and writes its no-op at index 1: its log lacks the committed entry.
    c.onReady(nid('b'), ready({ softState: { role: 'leader', leader: nid('b'), term: 2 } }));
    c.onWrite(
      nid('b'),
      {
        hardState: null,
        entries: [{ index: 1, term: 2, type: 'normal', data: new Uint8Array() }],
        snapshot: null,
      },
      disk(log({ term: 2, vote: nid('b'), commit: 0 }, [2])),
      0,
    );
    expect(c.violation?.invariant).toBe('leader-completeness');
  });

  it('state-machine-safety: two nodes apply different entries at one index', () => {
    const c = new InvariantChecker(limits);
    const d = disk(log({ term: 1, vote: null, commit: 1 }, [1]));
    c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1, 'x')] }));
    c.onApply(nid('a'), 1, 1, 'x', 111, d);
    expect(c.violation).toBeNull();
    c.onApply(nid('b'), 1, 1, 'y', 222, d);
    expect(c.violation?.invariant).toBe('state-machine-safety');
  });

  it('state-machine-safety: applying past what the core handed out as committed', () => {
    const c = new InvariantChecker(limits);
    c.onReady(nid('b'), ready({ committedEntries: [entry(1, 1, 'x'), entry(2, 1, 'y')] }));
    c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1, 'x')] }));
    // Beyond its own synced log (empty) is allowed: a quorum holds a committed entry.
    c.onApply(nid('a'), 1, 1, 'x', 1, empty);
    expect(c.violation).toBeNull();
    // Beyond what a's core handed out (2 is committed, but a's core never said so) is not.
    c.onApply(nid('a'), 1, 2, 'y', 2, empty);
    expect(c.violation?.invariant).toBe('state-machine-safety');
    expect(c.violation?.message).toMatch(/beyond what its core handed out as committed/);
  });

  it('commit-durable: an entry reported committed that a majority of voters do not hold synced', () => {
    const voters = [nid('a'), nid('b'), nid('c')];
    const holds = disk(log({ term: 1, vote: null, commit: 0 }, [1]));
    // a and b hold the entry written, only a synced.
    const written = disk(empty.synced, log({ term: 1, vote: null, commit: 0 }, [1]));
    const check = (disks: Record<string, DiskView>) => {
      const c = new InvariantChecker(limits);
      c.quorumView = () => ({ voters, disk: (v) => disks[v] });
      c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1, 'x')] }));
      return c.violation;
    };
    expect(check({ a: holds, b: written, c: empty })?.invariant).toBe('commit-durable');
    expect(check({ a: written, b: holds, c: holds })).toBeNull();
  });

  it('commit-monotonic: the durable commit index goes back', () => {
    const c = new InvariantChecker(limits);
    c.onSync(nid('a'), { term: 1, vote: null, commit: 5 }, { term: 1, vote: null, commit: 4 });
    expect(c.violation?.invariant).toBe('commit-monotonic');
  });

  it("commit-monotonic: a node's commit index goes back between steps", () => {
    const c = new InvariantChecker(limits);
    const obs = (commit: number): NodeObservation => ({
      id: nid('a'),
      incarnation: 1,
      up: true,
      disk: empty,
      status: {
        id: nid('a'),
        role: 'follower',
        term: 1,
        leader: null,
        vote: null,
        commit,
        applied: 0,
        lastIndex: 9,
        firstIndex: 1,
        conf: { voters: [nid('a')], learners: [], context: {} },
        progress: null,
        leadTransferee: null,
        pendingProposals: 0,
        pendingReads: 0,
      },
    });
    c.afterStep([obs(3)], []);
    c.afterStep([obs(2)], []);
    expect(c.violation?.invariant).toBe('commit-monotonic');
  });

  it('acked-not-lost: an acknowledgement for an entry that is not the committed one', () => {
    const c = new InvariantChecker(limits);
    c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1, 'x')] }));
    c.onAck(1, 'y');
    expect(c.violation?.invariant).toBe('acked-not-lost');
  });

  it('vote-once: two grants in one term', () => {
    const c = new InvariantChecker(limits, ['persist-before-send']);
    const grant = (to: NodeId): Message => ({
      type: 'voteResp',
      from: nid('a'),
      to,
      term: 3,
      reject: false,
    });
    c.onSend(nid('a'), grant(nid('b')), empty);
    c.onSend(nid('a'), grant(nid('b')), empty);
    expect(c.violation).toBeNull();
    c.onSend(nid('a'), grant(nid('c')), empty);
    expect(c.violation?.invariant).toBe('vote-once');
  });

  it('persist-before-send: a grant whose vote is not synced', () => {
    const c = new InvariantChecker(limits);
    const synced = log({ term: 3, vote: null, commit: 0 }, []);
    const written = log({ term: 3, vote: nid('b'), commit: 0 }, []);
    c.onSend(
      nid('a'),
      { type: 'voteResp', from: nid('a'), to: nid('b'), term: 3, reject: false },
      disk(synced, written),
    );
    expect(c.violation?.invariant).toBe('persist-before-send');
  });

  it('persist-before-send: an append acknowledgement for entries not synced', () => {
    const c = new InvariantChecker(limits);
    const synced = log({ term: 1, vote: null, commit: 0 }, [1]);
    const written = log({ term: 1, vote: null, commit: 0 }, [1, 1]);
    c.onSend(
      nid('a'),
      {
        type: 'appResp',
        from: nid('a'),
        to: nid('b'),
        term: 1,
        reject: false,
        index: 1,
        hintTerm: 0,
        hintIndex: 0,
      },
      disk(synced, written),
    );
    expect(c.violation).toBeNull();
    c.onSend(
      nid('a'),
      {
        type: 'appResp',
        from: nid('a'),
        to: nid('b'),
        term: 1,
        reject: false,
        index: 2,
        hintTerm: 0,
        hintIndex: 0,
      },
      disk(synced, written),
    );
    expect(c.violation?.invariant).toBe('persist-before-send');
  });

  it('read-linearizable: a read index below an acknowledged write', () => {
    const c = new InvariantChecker(limits);
    c.onReady(nid('a'), ready({ committedEntries: [entry(1, 1, 'x'), entry(2, 1, 'y')] }));
    c.onAck(2, 'y');
    c.onReadIndexRequest('r1');
    c.onReady(nid('a'), ready({ readStates: [{ ctx: 'r1', index: 1 }] }));
    expect(c.violation?.invariant).toBe('read-linearizable');
  });

  it('bounds: a network queue beyond its capacity', () => {
    const c = new InvariantChecker(limits);
    c.afterStep([], [3]);
    expect(c.violation).toBeNull();
    c.afterStep([], [4]);
    expect(c.violation?.invariant).toBe('bounds');
  });
});
