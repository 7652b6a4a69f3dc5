/**
 * Leader election (§5.2), pre-vote (§9.6) and check-quorum, on bare cores.
 */
import { describe, expect, it } from 'vitest';
import { Cluster } from './harness.ts';
import { nid } from '../support/node-id.ts';

describe('leader election', () => {
  it('elects exactly one leader that every node follows', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')]);
    c.tickAll(30);
    expect(c.leaders()).toHaveLength(1);
    const leader = c.leaders()[0]!;
    const term = c.status(leader).term;
    for (const id of c.ids) {
      expect(c.status(id).term).toBe(term);
      expect(c.status(id).leader).toBe(leader);
    }
    c.assertSafe();
  });

  it('a candidate needs a majority: a minority partition elects nobody', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c'), nid('d'), nid('e')]);
    c.isolate(nid('a'), nid('b'));
    for (let r = 0; r < 60; r++) {
      c.tick(nid('a'));
      c.tick(nid('b'));
      c.deliverAll();
    }
    expect(c.status(nid('a')).role).not.toBe('leader');
    expect(c.status(nid('b')).role).not.toBe('leader');
    // Pre-vote: the minority never even raised its term.
    expect(c.status(nid('a')).term).toBe(0);
    expect(c.status(nid('b')).term).toBe(0);
    c.assertSafe();
  });

  it('a node grants at most one vote per term, and only to an up-to-date log', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')], { config: { preVote: false } });
    c.elect(nid('a'));
    c.propose(nid('a'), 'x');
    c.deliverAll();
    // c misses the next entry
    c.isolate(nid('c'));
    c.propose(nid('a'), 'y');
    c.deliverAll();
    c.heal();
    // c campaigns with a shorter log: b refuses
    c.crash(nid('a'));
    c.campaign(nid('c'));
    c.deliverAll();
    expect(c.status(nid('c')).role).not.toBe('leader');
    expect(c.status(nid('b')).vote).not.toBe('c');
    // only b can win (c's log lacks a committed entry); it does once timeouts run
    for (let i = 0; i < 100 && c.leaders().length === 0; i++) c.tickAll(1);
    expect(c.leaders()).toEqual(['b']);
    c.assertSafe();
  });
});

describe('pre-vote', () => {
  it('keeps a partitioned node from raising its term and disrupting the leader when it comes back', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')]);
    c.elect(nid('a'));
    const term = c.status(nid('a')).term;
    c.isolate(nid('c'));
    for (let i = 0; i < 100; i++) {
      c.tickAll(1);
    }
    expect(c.status(nid('c')).term).toBe(term); // pre-candidate rounds leave no trace
    expect(c.status(nid('c')).role).toBe('pre-candidate');
    c.heal();
    c.tickAll(5);
    expect(c.status(nid('a')).role).toBe('leader');
    expect(c.status(nid('a')).term).toBe(term);
    expect(c.status(nid('c')).leader).toBe('a');
    c.assertSafe();
  });

  it('a removed node that keeps campaigning does not disrupt the cluster', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c'), nid('d')]);
    c.elect(nid('a'));
    c.propose(nid('a'), 'x');
    c.deliverAll();
    // d is removed; it never hears of it (cut off as the change is made)
    c.isolate(nid('d'));
    c.proposeConfChange(nid('a'), { type: 'removeNode', nodeId: nid('d') });
    c.deliverAll();
    expect(c.status(nid('a')).conf.voters).toEqual(['a', 'b', 'c']);
    const term = c.status(nid('a')).term;
    c.heal();
    // d still thinks it is a voter and times out over and over
    for (let i = 0; i < 100; i++) c.tickAll(1);
    expect(c.status(nid('a')).role).toBe('leader');
    expect(c.status(nid('a')).term).toBe(term);
    // d forced to campaign (as if it skipped pre-vote rounds) still cannot win or depose a
    c.campaign(nid('d'));
    c.deliverAll();
    expect(c.status(nid('a')).role).toBe('leader');
    expect(c.leaders()).toEqual(['a']);
    c.assertSafe();
  });
});

describe('check-quorum', () => {
  it('a leader that cannot reach a quorum steps down within an election timeout', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')], { config: { electionTicks: 10 } });
    c.elect(nid('a'));
    c.isolate(nid('a'));
    let steppedDownAfter = -1;
    for (let i = 1; i <= 25; i++) {
      c.tick(nid('a'));
      c.deliverAll();
      if (c.status(nid('a')).role !== 'leader') {
        steppedDownAfter = i;
        break;
      }
    }
    expect(steppedDownAfter).toBeGreaterThan(0);
    expect(steppedDownAfter).toBeLessThanOrEqual(2 * 10);
    c.assertSafe();
  });

  it('followers that hear a live leader ignore a disruptive candidate (leader lease)', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')], { config: { preVote: false } });
    c.elect(nid('a'));
    c.tickAll(2);
    const term = c.status(nid('a')).term;
    // c campaigns without pre-vote: b and a heard from the leader recently and ignore it
    c.campaign(nid('c'));
    c.deliverAll();
    expect(c.status(nid('a')).role).toBe('leader');
    expect(c.status(nid('b')).term).toBe(term);
    c.assertSafe();
  });
});
