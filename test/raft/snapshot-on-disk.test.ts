/**
 * The core holds no snapshot data (issue 19): its latest snapshot is a meta and a size,
 * and a follower that needs it gets it chunk by chunk, each chunk read from the caller's
 * disk (Ready.snapshotChunks). The only snapshot data a core ever holds is a received one,
 * from its last chunk until the caller's advance().
 */
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../../src/raft/core/raft.ts';
import { defaultRaftConfig } from '../../src/raft/core/config.ts';
import type { ConfState, Message, Ready } from '../../src/raft/core/types.ts';
import { logOfTerms } from './harness.ts';
import { nid } from '../support/node-id.ts';

const a = nid('a');
const b = nid('b');
const c = nid('c');
const conf: ConfState = { voters: [a, b, c], learners: [], context: {} };

function follower(): RaftCore {
  return new RaftCore(
    { ...defaultRaftConfig(c, () => 0.5), snapshotChunkBytes: 4 },
    {
      hardState: { term: 1, vote: null, commit: 0 },
      snapshot: null,
      entries: [],
      initialConf: conf,
    },
  );
}

const snapChunk = (offset: number, chunk: number[], done: boolean): Message => ({
  type: 'snap',
  from: a,
  to: c,
  term: 2,
  meta: { index: 9, term: 1, conf },
  offset,
  chunk: new Uint8Array(chunk),
  done,
});

describe('the core keeps only the meta and size of its snapshot', () => {
  it('a received snapshot: held from its last chunk until advance(), then only its meta and size', () => {
    const core = follower();
    core.step(snapChunk(0, [1, 2, 3, 4], false));
    core.ready();
    core.step(snapChunk(4, [5, 6], true));
    const rd: Ready = core.ready();
    expect(rd.snapshot?.data).toEqual(new Uint8Array([1, 2, 3, 4, 5, 6]));
    core.advance(rd);
    expect(core.log.pendingSnapshot).toBeNull();
    expect(core.log.snapshot).toEqual({ meta: { index: 9, term: 1, conf }, bytes: 6 });
  });

  it('the chunks of a stream that stopped half-way go once the log replicates again', () => {
    const core = follower();
    core.step(snapChunk(0, [1, 2, 3, 4], false));
    core.advance(core.ready());
    const held = () => (core as unknown as { incoming: { bytes: number } | null }).incoming;
    expect(held()?.bytes).toBe(4);
    // A new leader replicates by the log from where this node is.
    core.step({
      type: 'app',
      from: b,
      to: c,
      term: 3,
      prevIndex: 0,
      prevTerm: 0,
      entries: logOfTerms([3]),
      commit: 0,
    });
    core.advance(core.ready());
    expect(held()).toBeNull();
  });

  it('a local compaction keeps the size it is given, never data', () => {
    const core = new RaftCore(
      defaultRaftConfig(a, () => 0.5),
      {
        hardState: { term: 1, vote: null, commit: 4 },
        snapshot: null,
        entries: logOfTerms([1, 1, 1, 1]),
        initialConf: conf,
      },
    );
    core.advance(core.ready()); // applies 1..4
    const meta = core.snapshotMeta(3);
    // Even an object that carries data too leaves only the meta and the size in the core.
    core.compact({ meta, bytes: 10, data: new Uint8Array(10) } as never);
    expect(core.log.snapshot).toEqual({ meta, bytes: 10 });
  });
});
