/**
 * A follower that already holds a received snapshot's last entry keeps its log, but may
 * answer only for what it knows matches the leader's: up to its commit index, not its
 * last index, whose tail may be an old term's (issue 13, item 2; etcd answers the same).
 */
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../../src/raft/core/raft.ts';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import type { ConfState, Message } from '../../src/raft/core/types.ts';
import { logOfTerms } from './harness.ts';
import { nid } from '../support/node-id.ts';

const conf: ConfState = { voters: [nid('a'), nid('b'), nid('c')], learners: [], context: {} };

describe('a snapshot whose last entry the follower already holds', () => {
  it('is answered with the commit index, not the last index of a stale tail', () => {
    // c holds 1..5 of term 1 (matching the leader's) and a stale tail 6..10 of term 2.
    const c = new RaftCore(
      defaultRaftConfig(nid('c'), () => 0.5),
      {
        hardState: { term: 2, vote: null, commit: 3 },
        snapshot: null,
        entries: logOfTerms([1, 1, 1, 1, 1, 2, 2, 2, 2, 2]),
        initialConf: conf,
      },
    );
    // The leader of term 3 streams its snapshot at 5@1 (one chunk).
    c.step({
      type: 'snap',
      from: nid('a'),
      to: nid('c'),
      term: 3,
      meta: { index: 5, term: 1, conf },
      offset: 0,
      chunk: new Uint8Array([1, 2, 3]),
      done: true,
    });
    const rd = c.ready();
    const answers = [...rd.messages, ...rd.messagesAfterPersist].filter(
      (m): m is Extract<Message, { type: 'appResp' }> => m.type === 'appResp',
    );
    expect(answers).toHaveLength(1);
    expect(answers[0]).toMatchObject({ reject: false, index: 5 });
    // The log is kept (no restore) and the commit index fast-forwards to the snapshot's.
    expect(rd.snapshot).toBeNull();
    const st = c.status();
    expect(st.commit).toBe(5);
    expect(st.lastIndex).toBe(10);
  });
});
