/**
 * The Ready says which messages may leave before the round's write (etcd's `msgs`) and
 * which must wait for it (etcd's `msgsAfterAppend`); the driver never decides by type.
 */
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../../src/raft/core/raft.ts';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import type { ConfState, Message, NodeId, Ready } from '../../src/raft/core/types.ts';
import { nid } from '../support/node-id.ts';

const conf: ConfState = { voters: [nid('a'), nid('b'), nid('c')], learners: [], context: {} };

function core(id: NodeId): RaftCore {
  return new RaftCore(
    { ...defaultRaftConfig(id, () => 0.5), electionTicks: 10, heartbeatTicks: 1, preVote: false },
    {
      hardState: { term: 0, vote: null, commit: 0 },
      snapshot: null,
      entries: [],
      initialConf: conf,
    },
  );
}

const types = (ms: Message[]) => ms.map((m) => `${m.type}>${m.to}`).sort();

/** Hands every Ready of `c` to `out` and advances, as if each write were durable at once. */
function drain(c: RaftCore, out: Ready[] = []): Ready[] {
  while (c.hasReady()) {
    const rd = c.ready();
    out.push(rd);
    c.advance(rd);
  }
  return out;
}

describe('the Ready splits messages by what they depend on', () => {
  it("a candidate's vote requests and a voter's grant wait for the write that holds the new term and vote", () => {
    const a = core(nid('a'));
    const b = core(nid('b'));
    a.campaign();
    const [rd] = drain(a);
    expect(rd!.hardState).toMatchObject({ term: 1, vote: 'a' });
    expect(rd!.messages).toEqual([]);
    expect(types(rd!.messagesAfterPersist)).toEqual(['vote>b', 'vote>c']);

    b.step(rd!.messagesAfterPersist.find((m) => m.to === 'b')!);
    const [grant] = drain(b);
    expect(grant!.messages).toEqual([]);
    expect(types(grant!.messagesAfterPersist)).toEqual(['voteResp>a']);
  });

  it("a leader's appends of its durable term leave before its write; a follower's answer waits for its own", () => {
    const a = core(nid('a'));
    const b = core(nid('b'));
    a.campaign();
    const votes = drain(a).flatMap((r) => r.messagesAfterPersist);
    b.step(votes.find((m) => m.to === 'b')!);
    const grant = drain(b).flatMap((r) => r.messagesAfterPersist)[0]!;
    a.step(grant);
    // The leader's term is durable (advanced above): its no-op append may leave at once.
    const [lead] = drain(a);
    expect(lead!.entries).toHaveLength(1);
    expect(types(lead!.messages)).toEqual(['app>b', 'app>c']);
    expect(lead!.messagesAfterPersist).toEqual([]);

    b.step(lead!.messages.find((m) => m.to === 'b')!);
    const [follower] = drain(b);
    expect(follower!.entries).toHaveLength(1);
    expect(follower!.messages).toEqual([]);
    expect(types(follower!.messagesAfterPersist)).toEqual(['appResp>a']);
  });

  it('a leader message of a term not yet durable waits for the write that holds the term', () => {
    // Without pre-vote a single-voter node wins at once: the term it campaigned in and its
    // first append are in the same Ready, so nothing of that term may leave before the write.
    const solo = new RaftCore(
      { ...defaultRaftConfig(nid('a'), () => 0.5), preVote: false },
      {
        hardState: { term: 0, vote: null, commit: 0 },
        snapshot: null,
        entries: [],
        initialConf: { voters: [nid('a')], learners: [nid('l')], context: {} },
      },
    );
    solo.campaign();
    const rd = solo.ready();
    expect(rd.hardState?.term).toBe(1);
    expect(rd.messages).toEqual([]);
    expect(types(rd.messagesAfterPersist)).toEqual(['app>l']);
  });
});
