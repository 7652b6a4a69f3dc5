/**
 * The paper's Figure 7 (log repair) and Figure 8 (why a leader does not commit an older
 * term's entry by counting replicas), scripted on bare cores.
 */
import { describe, expect, it } from 'vitest';
import { Cluster, logOfTerms, type HarnessOptions } from './harness.ts';
import { OldTermCommitMutant } from '../sim/mutants.ts';
import type { NodeId } from '../../src/shared/ids.ts';
import { nid, nids } from '../support/node-id.ts';

describe("Figure 7: followers a–f converge to the leader's log", () => {
  const leaderLog = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const followers: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
  };

  it("the leader of term 8 repairs every follower, overwriting c's and d's extra entries", () => {
    const disks: Record<
      NodeId,
      {
        hardState: { term: number; vote: NodeId | null; commit: number };
        entries: ReturnType<typeof logOfTerms>;
      }
    > = {
      [nid('l')]: { hardState: { term: 7, vote: null, commit: 0 }, entries: logOfTerms(leaderLog) },
    };
    for (const [id, terms] of Object.entries(followers)) {
      disks[nid(id)] = {
        hardState: { term: Math.max(...terms), vote: null, commit: 0 },
        entries: logOfTerms(terms),
      };
    }
    // f's entries of terms 2 and 3 differ from the others' at the same index: give them their own
    // content.
    const c = new Cluster([nid('l'), nid('a'), nid('b'), nid('c'), nid('d'), nid('e'), nid('f')], {
      disks,
      config: { maxMsgBytes: 64 },
    });
    c.elect(nid('l'));
    expect(c.status(nid('l')).role).toBe('leader');
    expect(c.status(nid('l')).term).toBe(8);
    c.tickAll(3);
    const expected = [...leaderLog, 8]; // the leader's no-op opens term 8
    for (const id of nids('l', 'a', 'b', 'c', 'd', 'e', 'f')) {
      expect(c.terms(id), `log of ${id}`).toEqual(expected);
      expect(c.status(id).commit).toBe(11);
    }
    // Same content, not just the same terms.
    const content = (id: NodeId) =>
      c.log(id).map((e) => (e.type === 'normal' ? new TextDecoder().decode(e.data) : 'conf'));
    for (const id of nids(...Object.keys(followers)))
      expect(content(id)).toEqual(content(nid('l')));
    c.assertSafe();
  });

  it("c and d, whose logs are longer or newer, cannot win against the leader's log", () => {
    const disks: Record<
      NodeId,
      {
        hardState: { term: number; vote: NodeId | null; commit: number };
        entries: ReturnType<typeof logOfTerms>;
      }
    > = {
      [nid('l')]: { hardState: { term: 7, vote: null, commit: 0 }, entries: logOfTerms(leaderLog) },
    };
    for (const [id, terms] of Object.entries(followers))
      disks[nid(id)] = {
        hardState: { term: Math.max(...terms), vote: null, commit: 0 },
        entries: logOfTerms(terms),
      };
    const c = new Cluster([nid('l'), nid('a'), nid('b'), nid('c'), nid('d'), nid('e'), nid('f')], {
      disks,
    });
    // f has the longest log but the oldest last term: nobody but itself and b, e would vote for it
    c.elect(nid('f'));
    expect(c.status(nid('f')).role).not.toBe('leader');
    c.assertSafe();
  });
});

/**
 * Figure 8. S1 led term 2 and replicated index 2 only to S2; S5 led term 3 and wrote its own
 * index 2; now S1 leads term 4 and brings index 2 (term 2) to a majority (S1, S2, S3).
 * Counting replicas must NOT commit it: S5 could still be elected (votes of S2, S3, S4)
 * and overwrite index 2. Only once an entry of term 4 is on a majority does index 2 commit.
 */
function figure8(wrap?: HarnessOptions['wrap']): Cluster {
  const hs = (term: number, vote: string | null = null) => ({ term, vote, commit: 1 });
  const e = (index: number, term: number, tag: string) => ({
    index,
    term,
    type: 'normal' as const,
    data: new TextEncoder().encode(tag),
  });
  const disks = {
    s1: { hardState: hs(3), entries: [e(1, 1, 'one'), e(2, 2, 'two-by-s1')] },
    s2: { hardState: hs(2), entries: [e(1, 1, 'one'), e(2, 2, 'two-by-s1')] },
    s3: { hardState: hs(3, 's5'), entries: [e(1, 1, 'one')] },
    s4: { hardState: hs(3, 's5'), entries: [e(1, 1, 'one')] },
    s5: { hardState: hs(3, 's5'), entries: [e(1, 1, 'one'), e(2, 3, 'two-by-s5')] },
  };
  // One entry per append message, so index 2 and the no-op at 3 travel separately. As in
  // the paper, no check-quorum (whose leader lease would make S2–S4 ignore S5 for a while).
  return new Cluster([nid('s1'), nid('s2'), nid('s3'), nid('s4'), nid('s5')], {
    disks,
    config: { maxMsgBytes: 40, checkQuorum: false },
    ...(wrap ? { wrap } : {}),
  });
}

/** Drops every append carrying index 3 to a follower that holds index 2 (and would accept it). */
function noOpLost(c: Cluster): (m: import('../../src/raft/core/types.ts').Message) => boolean {
  return (m) =>
    !(m.type === 'app' && m.entries.some((x) => x.index === 3) && c.terms(m.to).length >= 2);
}

/**
 * S5 campaigns (its first pre-vote, in term 4, only teaches it the current term) and wins term 5.
 */
function electS5(c: Cluster): void {
  for (let i = 0; i < 3 && c.status(nid('s5')).role !== 'leader'; i++) {
    c.campaign(nid('s5'));
    c.deliverAll();
  }
  c.tickAll(3);
}

describe('Figure 8: the commit rule', () => {
  it('a leader does not commit an entry of an older term by counting replicas', () => {
    const c = figure8();
    // S1 is elected in term 4 (S2, S3, S4 vote for it; S5's log is newer and refuses).
    c.isolate(nid('s5'));
    c.campaign(nid('s1'));
    // Index 2 (term 2) may travel, the no-op of term 4 (index 3) is lost on the way to
    // anyone who would accept it.
    c.deliverWhere(noOpLost(c));
    expect(c.status(nid('s1')).role).toBe('leader');
    expect(c.status(nid('s1')).term).toBe(4);
    expect(c.terms(nid('s3'))).toEqual([1, 2]); // index 2 now on S1, S2, S3: a majority
    expect(c.status(nid('s1')).commit).toBe(1); // ... and still not committed
    // S1 crashes; S5 is elected with the votes of S2, S3, S4 and overwrites index 2.
    c.crash(nid('s1'));
    c.heal();
    electS5(c);
    expect(c.status(nid('s5')).role).toBe('leader');
    expect(c.status(nid('s5')).term).toBe(5);
    for (const id of nids('s2', 's3', 's4', 's5'))
      expect(c.terms(id).slice(0, 2), id).toEqual([1, 3]);
    c.assertSafe(); // nothing committed was lost
  });

  it('once an entry of its own term is on a majority, the older entries before it commit too', () => {
    const c = figure8();
    c.isolate(nid('s5'));
    c.elect(nid('s1'));
    expect(c.status(nid('s1')).role).toBe('leader');
    expect(c.status(nid('s1')).commit).toBe(3);
    expect(c.terms(nid('s3'))).toEqual([1, 2, 4]);
    c.assertSafe();
  });

  it('the checker catches a leader that breaks the rule (mutant core)', () => {
    const c = figure8((core) => new OldTermCommitMutant(core));
    c.isolate(nid('s5'));
    c.campaign(nid('s1'));
    c.deliverWhere(noOpLost(c));
    expect(c.status(nid('s1')).commit).toBe(2); // the mutant counted replicas of a term-2 entry
    expect(c.checker.violation).toBeNull(); // nothing wrong is visible yet
    c.crash(nid('s1'));
    c.heal();
    electS5(c);
    // S5 overwrote the "committed" entry: the checkers must say so.
    expect(c.checker.violation).not.toBeNull();
    expect(['leader-completeness', 'state-machine-safety']).toContain(
      c.checker.violation?.invariant,
    );
  });
});
