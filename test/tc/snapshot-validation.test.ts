/**
 * The server's state machine adapter decodes a received snapshot with the coordinator's
 * own snapshot codec and checks, into a scratch state machine, before the Raft keeps it
 * (issue 13, item 4). A bad one is a StorageCorruptError; the live state is untouched.
 */
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { encodeSnapshot, SNAPSHOT_FORMAT_VERSION } from '../../src/coordinator/snapshot-codec.ts';
import { CoordinatorLogStateMachine } from '../../src/store/raft/index.ts';
import { StorageCorruptError } from '../../src/shared/errors.ts';

describe('CoordinatorLogStateMachine.validateSnapshot', () => {
  it('accepts a snapshot the coordinator wrote', () => {
    const sm = new CoordinatorLogStateMachine();
    expect(() => sm.validateSnapshot(new CoordinatorLogStateMachine().snapshot())).not.toThrow();
  });

  it('refuses bytes that do not decode, a foreign format and a snapshot with duplicate sessions, leaving the live state as it was', () => {
    const sm = new CoordinatorLogStateMachine();
    const before = sm.snapshot();
    const good = new CoordinatorLogStateMachine().snapshot();
    const bad: Uint8Array[] = [
      new Uint8Array([0xc1, 0xff, 0x00]),
      good.subarray(0, Math.max(1, good.length - 3)),
      encodeSnapshot({
        version: SNAPSHOT_FORMAT_VERSION + 98,
        sessions: [],
        finished: [],
        dedup: [],
      }),
      new Packr({ useRecords: false, mapsAsObjects: true }).pack({
        version: SNAPSHOT_FORMAT_VERSION,
        sessions: 'not a list',
        finished: [],
        dedup: [],
      }),
    ];
    for (const bytes of bad) expect(() => sm.validateSnapshot(bytes)).toThrow(StorageCorruptError);
    expect(sm.snapshot()).toEqual(before);
  });
});
