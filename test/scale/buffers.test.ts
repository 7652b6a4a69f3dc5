/**
 * Buffers kept for long own their memory, and large transient ones stay bounded (issue 19:
 * the nodes' external memory). msgpackr writes every pack() of the process into one shared
 * buffer that grows to 4× the largest pack and stays that size; a small encoding kept for
 * long (a lone command's log entry, a leader's cached entry encoding) is a view of it and
 * keeps all of it alive. A sliced snapshot whose size hint fell short doubled and copied its
 * buffer (3× the snapshot's size of garbage per capture during a fill). A decoded entry or
 * snapshot chunk must not be a view of the received frame. Figures against bounds, never
 * timings.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Packr } from 'msgpackr';
import {
  MAX_SHARED_PACK_BUFFER_BYTES,
  ownedCopy,
  releaseLargePackBuffer,
} from '../../src/shared/msgpack-buffer.ts';
import {
  MAX_CACHED_ENCODING_BYTES,
  decodeMessage,
  encodeMessage,
  encodingCacheStats,
} from '../../src/raft/transport/codec.ts';
import type { Entry, Message, NodeId } from '../../src/raft/core/types.ts';
import { encodeEntry } from '../../src/store/raft/command-batch.ts';
import { decodeCommand, encodeCommand, type Command } from '../../src/coordinator/commands.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { decodeSnapshot, encodeSnapshotInSlices } from '../../src/coordinator/snapshot-codec.ts';

import { nids } from '../support/node-id.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const packr = new Packr({ useRecords: false });
const MB = 1024 * 1024;

/** A value whose encoding is about `bytes` long (grows msgpackr's shared buffer to 4× it). */
function large(bytes: number): unknown {
  return Array.from({ length: Math.ceil(bytes / 40) }, (_, i) => `row ${i} `.padEnd(38, 'x'));
}

function begin(i: number): Command {
  return {
    kind: 'Begin',
    xid: `10.0.0.1:8091:${1_000_000 + i}`,
    transactionId: String(1_000_000 + i),
    applicationId: 'shop',
    transactionServiceGroup: 'default',
    name: 'scale',
    timeoutMs: 3_600_000,
    beginTime: 1_000 + i,
    requestId: null,
    term: 1,
  } as Command;
}

const [N1, N2, N3] = nids('node1', 'node2', 'node3') as [NodeId, NodeId, NodeId];
const conf = { voters: [N1, N2, N3], learners: [], context: {} };

function entry(index: number, bytes: number): Entry {
  return { index, term: 1, type: 'normal', data: Buffer.alloc(bytes, index & 0xff) };
}

function app(entries: Entry[]): Message {
  return {
    type: 'app',
    from: N1,
    to: N2,
    term: 1,
    prevIndex: entries[0]!.index - 1,
    prevTerm: 1,
    commit: 0,
    entries,
  } as Message;
}

/** Buffers above this are the encode's own, not the turnover of msgpackr's shared one. */
const LARGE_BYTES = 128 * 1024;

/** Sums the large buffers Buffer.allocUnsafeSlow hands out while `f` runs. */
function allocatedDuring<T>(f: () => T): { value: T; bytes: number } {
  let bytes = 0;
  const original = Buffer.allocUnsafeSlow.bind(Buffer);
  const spy = vi.spyOn(Buffer, 'allocUnsafeSlow').mockImplementation((n: number) => {
    if (n > LARGE_BYTES) bytes += n;
    return original(n);
  });
  try {
    return { value: f(), bytes };
  } finally {
    spy.mockRestore();
  }
}

function runSlices(steps: { step(): Uint8Array | null }): Uint8Array {
  for (;;) {
    const r = steps.step();
    if (r !== null) return r;
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('msgpackr shared buffer', () => {
  it('after a large pack, the next small one is written into a small buffer', () => {
    const big = packr.pack(large(2 * MB));
    expect(big.buffer.byteLength).toBeGreaterThan(2 * MB);
    expect(releaseLargePackBuffer(big)).toBe(true);
    const small = packr.pack({ kind: 'Begin' });
    expect(small.buffer.byteLength).toBeLessThanOrEqual(MAX_SHARED_PACK_BUFFER_BYTES);
    expect(releaseLargePackBuffer(small)).toBe(false);
  });

  it('an owned copy is a buffer of its own size with the same bytes', () => {
    const view = packr.pack({ kind: 'Begin', xid: 'x' });
    expect(view.buffer.byteLength).toBeGreaterThan(view.length);
    const own = ownedCopy(view);
    expect(own.buffer.byteLength).toBe(view.length);
    expect(Buffer.from(own).equals(view)).toBe(true);
    expect(ownedCopy(own)).toBe(own);
  });
});

describe('the Raft transport codec', () => {
  it('a snapshot chunk leaves msgpackr with a small buffer for the messages after it', () => {
    const chunk = Buffer.alloc(512 * 1024, 7);
    const snap = {
      type: 'snap',
      from: N1,
      to: N2,
      term: 1,
      meta: { index: 10, term: 1, conf },
      offset: 0,
      chunk,
      done: false,
    } as Message;
    encodeMessage(snap);
    const hb = encodeMessage({
      type: 'heartbeat',
      from: N1,
      to: N2,
      term: 1,
      commit: 3,
      readCtx: null,
    });
    expect(hb.buffer.byteLength).toBeLessThanOrEqual(MAX_SHARED_PACK_BUFFER_BYTES);
  });

  it('keeps at most MAX_CACHED_ENCODING_BYTES of entry encodings, and re-encodes the same bytes', () => {
    const entries = Array.from({ length: 40 }, (_, i) => entry(i + 1, 256 * 1024));
    const first = encodeMessage(app(entries.slice(0, 1)));
    for (let i = 0; i < entries.length; i += 4) encodeMessage(app(entries.slice(i, i + 4)));
    const stats = encodingCacheStats();
    expect(stats.bytes).toBeLessThanOrEqual(MAX_CACHED_ENCODING_BYTES);
    expect(stats.bytes).toBeGreaterThan(MAX_CACHED_ENCODING_BYTES / 2);
    // The first entry's encoding was dropped from the cache: encoded again, identically.
    expect(encodeMessage(app(entries.slice(0, 1))).equals(first)).toBe(true);
  });

  it('a decoded entry and a decoded snapshot chunk do not keep the received frame', () => {
    const frame = Buffer.concat([
      Buffer.alloc(MB),
      encodeMessage(app([entry(5, 100), entry(6, 200)])),
      Buffer.alloc(MB),
    ]);
    const bytes = frame.subarray(MB, frame.length - MB);
    const decoded = decodeMessage(bytes);
    expect(decoded.ok).toBe(true);
    const m = (decoded as { message: Message }).message;
    if (m.type !== 'app') throw new Error('not an append');
    for (const e of m.entries) {
      if (e.type !== 'normal') throw new Error('not a normal entry');
      expect(e.data.buffer.byteLength).toBe(e.data.length);
    }
    const snapFrame = Buffer.concat([
      Buffer.alloc(MB),
      encodeMessage({
        type: 'snap',
        from: N1,
        to: N2,
        term: 1,
        meta: { index: 10, term: 1, conf },
        offset: 0,
        chunk: Buffer.alloc(1000, 1),
        done: true,
      } as Message),
    ]);
    const snap = decodeMessage(snapFrame.subarray(MB));
    if (!snap.ok || snap.message.type !== 'snap') throw new Error('not a snapshot chunk');
    expect(snap.message.chunk.buffer.byteLength).toBe(1000);
  });
});

describe('a lone command entry', () => {
  it('is a buffer of its own size, not a view of the shared pack buffer', () => {
    const command = encodeCommand(begin(1));
    expect(command.buffer.byteLength).toBeGreaterThan(command.length);
    const e = encodeEntry([command]);
    expect(e.buffer.byteLength).toBe(e.length);
    expect(Buffer.from(e).equals(command)).toBe(true);
  });
});

describe('the sliced snapshot encode', () => {
  /** Transactions from..to-1 of bench scale's shape, through the log's codec. */
  function grow(machine: CoordinatorStateMachine, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const register = {
        kind: 'RegisterBranch',
        xid: `10.0.0.1:8091:${1_000_000 + i}`,
        branchId: String(2_000_000 + i),
        type: 'AT',
        resourceId: 'scale-db',
        lockKey: `t:${i}`,
        applicationData: JSON.stringify({ pad: 'x'.repeat(90) }),
        clientId: 'shop:host:1234:abcd',
        applicationId: 'shop',
        at: 1_000 + i,
        requestId: `r-${i}`,
      } as Command;
      for (const c of [begin(i), register])
        expect(machine.apply(decodeCommand(encodeCommand(c))).ok).toBe(true);
    }
  }

  it('a decoded snapshot is not kept alive by msgpackr once decoded', async () => {
    const machine = new CoordinatorStateMachine();
    grow(machine, 0, 500);
    let bytes: Uint8Array | null = Uint8Array.prototype.slice.call(machine.snapshot());
    const ref = new WeakRef(bytes.buffer);
    expect(decodeSnapshot(bytes).sessions.length).toBe(500);
    bytes = null;
    await new Promise((r) => setImmediate(r)); // a WeakRef holds its target to the job's end
    gc();
    expect(ref.deref()).toBeUndefined();
  });

  it('leaves msgpackr with a small buffer (rows packed 64 at a time)', () => {
    const machine = new CoordinatorStateMachine();
    grow(machine, 0, 3_000);
    runSlices(machine.snapshotInSlices());
    const after = encodeCommand(begin(2));
    expect(after.buffer.byteLength).toBeLessThanOrEqual(MAX_SHARED_PACK_BUFFER_BYTES);
  });

  it('allocates at most ~2× the snapshot when its hint falls short, not 3×', () => {
    const machine = new CoordinatorStateMachine();
    grow(machine, 0, 4_000);
    const expected = machine.snapshot();
    const data = decodeSnapshot(expected);
    const source = {
      version: data.version,
      dedupCount: data.dedup.length,
      dedupRows: (from: number, to: number) => data.dedup.slice(from, to),
      finishedCount: data.finished.length,
      finishedRows: (from: number, to: number) => data.finished.slice(from, to),
      sessionCount: data.sessions.length,
      sessionRows: (from: number, to: number) => data.sessions.slice(from, to),
      commandTime: data.commandTime,
    };
    // The state grew 40 % since the last snapshot, whose size is the hint.
    const hint = Math.round(expected.length / 1.4);
    const { value, bytes } = allocatedDuring(() => {
      const steps = encodeSnapshotInSlices(source, 500, hint);
      for (;;) {
        const r = steps.next();
        if (r.done) return r.value;
      }
    });
    expect(Buffer.from(value).equals(expected)).toBe(true);
    expect(value.buffer.byteLength).toBe(value.length);
    expect(bytes / expected.length).toBeLessThan(2.5);
  });

  it("sizes a capture from the last one's bytes per row: one buffer as the state grows, and after a restore", () => {
    const machine = new CoordinatorStateMachine();
    grow(machine, 0, 2_000);
    runSlices(machine.snapshotInSlices());
    grow(machine, 2_000, 3_500); // +75 %
    const second = allocatedDuring(() => runSlices(machine.snapshotInSlices()));
    expect(second.bytes / second.value.length).toBeLessThan(1.3);

    const restored = new CoordinatorStateMachine();
    restored.restore(second.value);
    grow(restored, 3_500, 4_000);
    const third = allocatedDuring(() => runSlices(restored.snapshotInSlices()));
    expect(third.bytes / third.value.length).toBeLessThan(1.3);
    expect(Buffer.from(third.value).equals(restored.snapshot())).toBe(true);
  });
});
