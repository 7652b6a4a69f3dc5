/**
 * Log replication under message loss (§5.3), on bare cores.
 */
import { describe, expect, it } from 'vitest';
import { Cluster } from './harness.ts';
import { nid } from '../support/node-id.ts';

describe('log replication', () => {
  it('replicates and commits entries on every node; each node applies them in order', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')]);
    c.elect(nid('a'));
    for (let i = 0; i < 10; i++) c.propose(nid('a'), `x${i}`);
    c.deliverAll();
    c.tickAll(2);
    for (const id of c.ids) {
      expect(c.node(id).applied).toEqual(Array.from({ length: 10 }, (_, i) => `x${i}`));
      expect(c.status(id).commit).toBe(11);
    }
    c.assertSafe();
  });

  it('a follower that missed appends in probe state is repaired after the next heartbeat', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')], { config: { maxInflightMsgs: 1 } });
    // Every append to c is lost from the start: the leader never leaves probe state for c.
    c.dropIf = (m) => m.type === 'app' && m.to === 'c';
    c.elect(nid('a'));
    c.propose(nid('a'), 'x');
    c.deliverAll();
    c.dropIf = null;
    c.tickAll(5);
    expect(c.node(nid('c')).applied).toEqual(['x']);
    c.assertSafe();
  });

  /**
   * Regression (found by the simulator, `npm run sim -- --seed 2 --steps 2000`): a leader
   * whose follower is in `replicate` state with an in-flight window full of lost appends
   * (dropped, partitioned, or the follower restarted) never sent to it again. A heartbeat
   * response now frees a slot, as in etcd.
   */
  it('a leader retransmits pipelined appends that were all lost (replicate state, full window)', () => {
    const c = new Cluster([nid('a'), nid('b'), nid('c')], { config: { maxInflightMsgs: 1 } });
    c.elect(nid('a'));
    c.propose(nid('a'), 'warm-up');
    c.deliverAll();
    c.tickAll(2); // b and c are in replicate state now
    expect(c.status(nid('a')).progress?.[nid('b')]?.state).toBe('replicate');
    // The next append to b and to c is lost in the network.
    c.dropIf = (m) => m.type === 'app' && m.entries.length > 0;
    c.propose(nid('a'), 'lost-once');
    c.deliverAll();
    c.dropIf = null;
    // The network is fine again; heartbeats flow for many election timeouts.
    c.tickAll(100);
    expect(c.status(nid('a')).role).toBe('leader');
    expect(c.status(nid('a')).commit).toBe(c.status(nid('a')).lastIndex);
    expect(c.node(nid('b')).applied).toContain('lost-once');
  });
});
