import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Level } from 'level';
import { Packr } from 'msgpackr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConfState, Entry, HardState, Snapshot } from '../../src/raft/core/types.ts';
import type { LoadedState, LogStorage } from '../../src/raft/ports.ts';
import { CRC32_IS_NATIVE, crc32, crc32Table } from '../../src/raft/storage/crc32.ts';
import { SnapshotFiles } from '../../src/raft/storage/snapshot-files.ts';
import {
  frameValue,
  LevelDbStorage,
  MAX_RUN_ENTRIES,
  runKey,
  STORAGE_FORMAT_VERSION,
  type StorageStats,
} from '../../src/raft/storage/leveldb-storage.ts';
import { WalStorage } from '../../src/raft/storage/wal-storage.ts';
import { AssertionFailure, ConfigError, StorageCorruptError } from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { nid } from '../support/node-id.ts';

const conf: ConfState = {
  voters: [nid('n1'), nid('n2'), nid('n3')],
  learners: [],
  context: { [nid('n1')]: '{"raft":"a"}' },
};

function normal(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: 'normal', data: new TextEncoder().encode(text) };
}

function range(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(normal(i, term));
  return out;
}

function snapshot(index: number, term: number, text = `state@${index}`): Snapshot {
  return { meta: { index, term, conf }, data: new TextEncoder().encode(text) };
}

/** Same options as the storage's encoder, to craft raw values. */
const packr = new Packr({ useRecords: false, copyBuffers: true });

/** A correctly framed run value (valid checksum) holding whatever entries it is given. */
function craftedRun(first: number, entries: unknown): Buffer {
  return frameValue(runKey(first), packr.pack(entries));
}

/** Entries as "index/term", the usual way to compare logs here. */
function log(entries: Entry[]): string[] {
  return entries.map((e) => `${e.index}/${e.term}`);
}

/** The run keys (first indexes) in the raw database. */
async function runFirsts(db: Level<Buffer, Buffer>): Promise<number[]> {
  const out: number[] = [];
  for await (const key of db.keys({ gte: runKey(0), lte: runKey(Number.MAX_SAFE_INTEGER) }))
    out.push(Number(key.readBigUInt64BE(1)));
  return out;
}

describe('crc32', () => {
  it('matches the standard check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array())).toBe(0);
  });
  it('can be computed in parts', () => {
    const a = new TextEncoder().encode('1234');
    const b = new TextEncoder().encode('56789');
    expect(crc32(b, crc32(a))).toBe(0xcbf43926);
  });
  it("is zlib's on this runtime, and agrees with the table-driven one", () => {
    const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
    // zlib.crc32 came with Node 20.15 and 22.2 (the machines run 20.20).
    const hasNative = major >= 23 || (major === 22 && minor >= 2) || (major === 20 && minor >= 15);
    expect(CRC32_IS_NATIVE).toBe(hasNative);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (data, seed) => {
        const start = seed >>> 0;
        expect(crc32(data, start)).toBe(crc32Table(data, start));
      }),
    );
  });
});

describe('LevelDbStorage', () => {
  let dir: string;
  const open: LevelDbStorage[] = [];

  async function fresh(nodeId?: string): Promise<LevelDbStorage> {
    const s = new LevelDbStorage({
      path: join(dir, 'raft'),
      logger: silentLogger(),
      ...(nodeId ? { nodeId } : {}),
    });
    open.push(s);
    return s;
  }

  async function reopen(s: LevelDbStorage) {
    await s.close();
    const t = await fresh();
    return { storage: t, state: await t.load() };
  }

  /** Edits the raw database behind a closed storage. */
  async function withRaw<T = void>(fn: (db: Level<Buffer, Buffer>) => Promise<T>): Promise<T> {
    const db = new Level<Buffer, Buffer>(join(dir, 'raft'), {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    await db.open();
    try {
      return await fn(db);
    } finally {
      await db.close();
    }
  }

  /** Records the LevelDB batches a storage writes: op counts (puts and deletes) and sync. */
  function spyBatches(s: LevelDbStorage) {
    const db = (s as unknown as { db: Level<Buffer, Buffer> }).db;
    const calls: Array<{ puts: number; dels: number; sync: unknown }> = [];
    const original = db.batch.bind(db) as (ops: unknown, opts: unknown) => Promise<void>;
    (db as unknown as { batch: unknown }).batch = (
      ops: Array<{ type: string }>,
      opts: { sync?: boolean },
    ) => {
      calls.push({
        puts: ops.filter((o) => o.type === 'put').length,
        dels: ops.filter((o) => o.type === 'del').length,
        sync: opts?.sync,
      });
      return original(ops, opts);
    };
    return calls;
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-storage-'));
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('starts empty', async () => {
    const s = await fresh();
    expect(await s.load()).toEqual({
      hardState: { term: 0, vote: null, commit: 0 },
      snapshot: null,
      entries: [],
    });
  });

  it('round-trips entries, conf entries and hard state across a reopen', async () => {
    const s = await fresh();
    await s.load();
    const conf1: Entry = {
      index: 4,
      term: 2,
      type: 'conf',
      change: { type: 'addLearner', nodeId: nid('n4'), context: 'ctx' },
    };
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 0 },
      entries: range(1, 3, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 2, vote: nid('n2'), commit: 3 },
      entries: [conf1, normal(5, 2)],
      snapshot: null,
    });
    const { state } = await reopen(s);
    expect(state.hardState).toEqual({ term: 2, vote: 'n2', commit: 3 });
    expect(state.snapshot).toBeNull();
    expect(state.entries.map((e) => [e.index, e.term, e.type])).toEqual([
      [1, 1, 'normal'],
      [2, 1, 'normal'],
      [3, 1, 'normal'],
      [4, 2, 'conf'],
      [5, 2, 'normal'],
    ]);
    expect(state.entries[3]).toEqual(conf1);
    const e1 = state.entries[0]!;
    expect(e1.type === 'normal' && new TextDecoder().decode(e1.data)).toBe('e1t1');
  });

  it('stores each round as one run', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: range(1, 3, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(4, 4, 1), snapshot: null });
    await s.save({ hardState: null, entries: range(5, 9, 1), snapshot: null });
    await s.close();
    expect(await withRaw(runFirsts)).toEqual([1, 4, 5]);
    expect(s.stats()).toMatchObject({
      entriesWritten: 9,
      syncedWrites: 3,
      firstIndex: 1,
      lastIndex: 9,
    });
  });

  it('overwrites a conflicting tail in the same batch and deletes what lies beyond it', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 6, 1),
      snapshot: null,
    });
    // A new leader of term 3 replaces entries from 4 on with a shorter tail.
    await s.save({
      hardState: { term: 3, vote: null, commit: 2 },
      entries: [normal(4, 3, 'new4')],
      snapshot: null,
    });
    const { storage, state } = await reopen(s);
    expect(log(state.entries)).toEqual(['1/1', '2/1', '3/1', '4/3']);
    const e4 = state.entries[3]!;
    expect(e4.type === 'normal' && new TextDecoder().decode(e4.data)).toBe('new4');
    // And it keeps going from there.
    await storage.save({ hardState: null, entries: [normal(5, 3)], snapshot: null });
    const again = await reopen(storage);
    expect(log(again.state.entries)).toEqual(['1/1', '2/1', '3/1', '4/3', '5/3']);
  });

  it('a partially overwritten run is cut where the next run begins', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 3 },
      entries: range(1, 10, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 2, vote: null, commit: 3 },
      entries: range(6, 8, 2),
      snapshot: null,
    });
    const { storage, state } = await reopen(s);
    expect(log(state.entries)).toEqual([...log(range(1, 5, 1)), ...log(range(6, 8, 2))]);
    await storage.save({
      hardState: { term: 2, vote: null, commit: 9 },
      entries: range(9, 12, 2),
      snapshot: null,
    });
    const again = await reopen(storage);
    expect(log(again.state.entries)).toEqual([...log(range(1, 5, 1)), ...log(range(6, 12, 2))]);
    await again.storage.close();
    // The first run is not rewritten: it still holds 1..10, cut to 1..5 on load.
    expect(await withRaw(runFirsts)).toEqual([1, 6, 9]);
  });

  it('an overwrite on a run boundary replaces that run and deletes the later ones', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 5, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(6, 10, 1), snapshot: null });
    await s.save({ hardState: null, entries: range(11, 12, 1), snapshot: null });
    const calls = spyBatches(s);
    await s.save({
      hardState: { term: 2, vote: null, commit: 2 },
      entries: range(6, 7, 2),
      snapshot: null,
    });
    // Runs 6 and 11 deleted (6 rewritten under the same key), one run put and the hard state.
    expect(calls).toEqual([{ puts: 2, dels: 2, sync: true }]);
    const { storage, state } = await reopen(s);
    expect(log(state.entries)).toEqual([...log(range(1, 5, 1)), ...log(range(6, 7, 2))]);
    await storage.close();
    expect(await withRaw(runFirsts)).toEqual([1, 6]);
  });

  it('an overwrite in the middle of a run that was already cut once', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 1 },
      entries: range(1, 10, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 2, vote: null, commit: 1 },
      entries: range(6, 8, 2),
      snapshot: null,
    }); // 1..10 cut to 1..5
    await s.save({
      hardState: { term: 3, vote: null, commit: 1 },
      entries: range(3, 4, 3),
      snapshot: null,
    }); // cut again to 1..2
    const { storage, state } = await reopen(s);
    expect(log(state.entries)).toEqual([...log(range(1, 2, 1)), ...log(range(3, 4, 3))]);
    // Appending after the overwrite, and one more overwrite inside the new run.
    await storage.save({ hardState: null, entries: range(5, 7, 3), snapshot: null });
    await storage.save({
      hardState: { term: 4, vote: null, commit: 1 },
      entries: range(4, 4, 4),
      snapshot: null,
    });
    const again = await reopen(storage);
    expect(log(again.state.entries)).toEqual([...log(range(1, 2, 1)), '3/3', '4/4']);
    await again.storage.close();
    expect(await withRaw(runFirsts)).toEqual([1, 3, 4]);
  });

  it('compacts: a local snapshot replaces the entries it covers', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 2, vote: null, commit: 8 },
      entries: range(1, 10, 2),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(8, 2));
    // A stale compaction is a no-op.
    await s.saveSnapshot(snapshot(5, 2));
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta).toEqual({ index: 8, term: 2, conf });
    expect(new TextDecoder().decode(state.snapshot!.data)).toBe('state@8');
    expect(state.entries.map((e) => e.index)).toEqual([9, 10]);
    await storage.save({
      hardState: { term: 2, vote: null, commit: 10 },
      entries: [normal(11, 2)],
      snapshot: null,
    });
    await storage.saveSnapshot(snapshot(10, 2));
    const again = await reopen(storage);
    expect(again.state.snapshot?.meta.index).toBe(10);
    expect(again.state.entries.map((e) => e.index)).toEqual([11]);
    expect(again.storage.stats()).toMatchObject({
      snapshotIndex: 10,
      firstIndex: 11,
      lastIndex: 11,
    });
  });

  it('compaction keeps a run that straddles the snapshot and deletes one that ends at it', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: range(1, 4, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 1, vote: null, commit: 10 },
      entries: range(5, 10, 1),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(7, 1));
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(7);
    expect(state.entries.map((e) => e.index)).toEqual([8, 9, 10]);
    await storage.close();
    expect(await withRaw(runFirsts)).toEqual([5]);

    const t = await fresh();
    await t.load();
    await t.save({ hardState: null, entries: range(11, 12, 1), snapshot: null });
    const calls = spyBatches(t);
    await t.saveSnapshot(snapshot(10, 1));
    // The meta (its data is in a file), the run it covers and any inline data deleted.
    expect(calls).toEqual([{ puts: 1, dels: 2, sync: true }]);
    const again = await reopen(t);
    expect(again.state.snapshot?.meta.index).toBe(10);
    expect(again.state.entries.map((e) => e.index)).toEqual([11, 12]);
    await again.storage.close();
    expect(await withRaw(runFirsts)).toEqual([11]);
  });

  it('an overwrite right after the snapshot deletes the straddling run it leaves wholly covered', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 7 },
      entries: range(1, 10, 1),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(7, 1));
    await s.save({
      hardState: { term: 2, vote: null, commit: 7 },
      entries: range(8, 9, 2),
      snapshot: null,
    });
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(7);
    expect(log(state.entries)).toEqual(log(range(8, 9, 2)));
    await storage.close();
    expect(await withRaw(runFirsts)).toEqual([8]);
  });

  it('a received snapshot that does not match the log discards the whole log', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 5, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(6, 9, 1), snapshot: null });
    await s.save({
      hardState: { term: 3, vote: null, commit: 20 },
      entries: [],
      snapshot: snapshot(20, 3),
    });
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(20);
    expect(state.entries).toEqual([]);
    expect(state.hardState.commit).toBe(20);
    await storage.close();
    expect(await withRaw(runFirsts)).toEqual([]);
  });

  it('a received snapshot inside the log with another term discards it all, even with new entries in the batch', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 4, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(5, 10, 1), snapshot: null });
    // The snapshot at 7 has term 2; the log's entry 7 has term 1.
    await s.save({
      hardState: { term: 2, vote: null, commit: 7 },
      entries: range(8, 9, 2),
      snapshot: snapshot(7, 2),
    });
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta).toEqual({ index: 7, term: 2, conf });
    expect(log(state.entries)).toEqual(log(range(8, 9, 2)));
    await storage.close();
    expect(await withRaw(runFirsts)).toEqual([8]);
  });

  it('a received snapshot matching the log keeps the entries after it (Raft §7)', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 6, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 1, vote: null, commit: 4 },
      entries: [],
      snapshot: snapshot(4, 1),
    });
    const { state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(4);
    expect(state.entries.map((e) => e.index)).toEqual([5, 6]);
  });

  it('a received snapshot keeps its suffix through a straddling run and deletes the runs it covers', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 4, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(5, 10, 1), snapshot: null });
    await s.save({ hardState: null, entries: range(11, 12, 1), snapshot: null });
    const calls = spyBatches(s);
    await s.save({
      hardState: { term: 1, vote: null, commit: 7 },
      entries: [],
      snapshot: snapshot(7, 1),
    });
    expect(calls).toEqual([{ puts: 2, dels: 2, sync: true }]);
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(7);
    expect(state.entries.map((e) => e.index)).toEqual([8, 9, 10, 11, 12]);
    // Then an overwrite in the straddling run, past the snapshot.
    await storage.save({
      hardState: { term: 2, vote: null, commit: 7 },
      entries: range(9, 9, 2),
      snapshot: null,
    });
    const again = await reopen(storage);
    expect(log(again.state.entries)).toEqual(['8/1', '9/2']);
    await again.storage.close();
    expect(await withRaw(runFirsts)).toEqual([5, 9]);
  });

  it(`splits a batch of more than ${MAX_RUN_ENTRIES} entries into several runs in one synced write`, async () => {
    const s = await fresh();
    await s.load();
    const n = 2 * MAX_RUN_ENTRIES + 5;
    const calls = spyBatches(s);
    await s.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: range(1, n, 1),
      snapshot: null,
    });
    expect(calls).toEqual([{ puts: 4, dels: 0, sync: true }]);
    expect(s.stats().entriesWritten).toBe(n);
    const { storage, state } = await reopen(s);
    expect(log(state.entries)).toEqual(log(range(1, n, 1)));
    // An overwrite inside the second run deletes the third.
    const at = MAX_RUN_ENTRIES + 100;
    await storage.save({
      hardState: { term: 2, vote: null, commit: 0 },
      entries: range(at, at, 2),
      snapshot: null,
    });
    const again = await reopen(storage);
    expect(log(again.state.entries)).toEqual([...log(range(1, at - 1, 1)), `${at}/2`]);
    await again.storage.close();
    expect(await withRaw(runFirsts)).toEqual([1, MAX_RUN_ENTRIES + 1, at]);
  });

  it('detects a flipped byte in a run value', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 2 },
      entries: range(1, 2, 1),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 1, vote: null, commit: 3 },
      entries: range(3, 5, 1),
      snapshot: null,
    });
    await s.close();
    await withRaw(async (db) => {
      const v = (await db.get(runKey(3)))!;
      v[v.length - 1]! ^= 0x40;
      await db.put(runKey(3), v);
    });
    const t = await fresh();
    await expect(t.load()).rejects.toThrow(StorageCorruptError);
    await expect((await fresh()).load()).rejects.toThrow(/log run 3: checksum mismatch/);
  });

  it('detects a torn (truncated) value', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 1 },
      entries: range(1, 3, 1),
      snapshot: null,
    });
    await s.close();
    await withRaw(async (db) => {
      const v = (await db.get(runKey(1)))!;
      await db.put(runKey(1), v.subarray(0, v.length - 3));
    });
    await expect((await fresh()).load()).rejects.toThrow(/log run 1: checksum mismatch/);
    await withRaw((db) => db.put(runKey(1), Buffer.from([STORAGE_FORMAT_VERSION, 0])));
    await expect((await fresh()).load()).rejects.toThrow(/shorter than its header/);
  });

  it('detects a gap in the log and a commit index beyond the log', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 1 },
      entries: range(1, 2, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(3, 4, 1), snapshot: null });
    await s.save({
      hardState: { term: 1, vote: null, commit: 5 },
      entries: range(5, 6, 1),
      snapshot: null,
    });
    await s.close();
    await withRaw((db) => db.del(runKey(3)));
    await expect((await fresh()).load()).rejects.toThrow(/gap in the log, expected index 3/);
    await withRaw((db) => db.del(runKey(5)));
    await expect((await fresh()).load()).rejects.toThrow(
      /commit index 5 is beyond the last durable entry 2/,
    );
    // A log that starts past its (absent) snapshot.
    await withRaw((db) => db.del(runKey(1)));
    await withRaw((db) => db.put(runKey(3), craftedRun(3, range(3, 4, 1))));
    await expect((await fresh()).load()).rejects.toThrow(
      /log run 3: gap in the log, expected index 1/,
    );
  });

  it('detects a value moved under another key', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 1 },
      entries: range(1, 2, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(3, 4, 1), snapshot: null });
    await s.close();
    await withRaw(async (db) => {
      await db.put(runKey(2), (await db.get(runKey(3)))!);
    });
    await expect((await fresh()).load()).rejects.toThrow(/log run 2: checksum mismatch/);
  });

  it('detects well-framed runs with bad contents', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 2, vote: null, commit: 1 },
      entries: range(1, 2, 2),
      snapshot: null,
    });
    await s.close();
    const expectCorrupt = async (value: Buffer, pattern: RegExp) => {
      await withRaw((db) => db.put(runKey(3), value));
      await expect((await fresh()).load()).rejects.toThrow(StorageCorruptError);
      await expect((await fresh()).load()).rejects.toThrow(pattern);
    };
    await expectCorrupt(craftedRun(3, normal(3, 2)), /log run 3: not a non-empty list of entries/);
    await expectCorrupt(craftedRun(3, []), /log run 3: not a non-empty list of entries/);
    await expectCorrupt(
      craftedRun(3, [normal(3, 2), { index: 4, term: 2, type: 'bogus' }]),
      /log entry 4 \(run 3\)\.type/,
    );
    // An entry in the wrong place: under the wrong key, or not contiguous within its run.
    await expectCorrupt(craftedRun(3, [normal(4, 2)]), /log entry 3 \(run 3\): value says index 4/);
    await expectCorrupt(
      craftedRun(3, [normal(3, 2), normal(5, 2)]),
      /log entry 4 \(run 3\): value says index 5/,
    );
    // Terms: moving back across runs, and beyond the hard state's term.
    await expectCorrupt(
      craftedRun(3, [normal(3, 1)]),
      /log entry 3: term 1 below the previous term 2/,
    );
    await expectCorrupt(
      craftedRun(3, [normal(3, 9)]),
      /last entry term 9 is above the hard state term 2/,
    );
    // Terms moving back inside one run.
    await expectCorrupt(
      craftedRun(3, [normal(3, 2), normal(4, 1)]),
      /log entry 4: term 1 below the previous term 2/,
    );
    // The same run, well-formed, loads.
    await withRaw((db) => db.put(runKey(3), craftedRun(3, range(3, 4, 2))));
    expect(log((await (await fresh()).load()).entries)).toEqual(log(range(1, 4, 2)));
  });

  it('detects runs that break the snapshot rules', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 2, vote: null, commit: 8 },
      entries: range(1, 10, 2),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 2, vote: null, commit: 8 },
      entries: range(11, 12, 2),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(8, 2)); // run 1..10 straddles it
    await s.close();
    const run1 = await withRaw(async (db) => (await db.get(runKey(1)))!);
    // A later run at or below the snapshot index.
    await withRaw((db) => db.put(runKey(5), craftedRun(5, range(5, 10, 2))));
    await expect((await fresh()).load()).rejects.toThrow(
      /log run 5: at or below the snapshot index 8/,
    );
    await withRaw((db) => db.del(runKey(5)));
    // The straddling run's entry at the snapshot index has another term than the snapshot.
    await withRaw((db) =>
      db.put(runKey(1), craftedRun(1, [...range(1, 8, 1), ...range(9, 10, 2)])),
    );
    await expect((await fresh()).load()).rejects.toThrow(
      /log entry 8: term 1, the snapshot at that index says 2/,
    );
    // Restore the run, then compact up to its end, which deletes it.
    await withRaw((db) => db.put(runKey(1), run1));
    const t = await fresh();
    await t.load();
    await t.save({ hardState: { term: 2, vote: null, commit: 10 }, entries: [], snapshot: null });
    await t.saveSnapshot(snapshot(10, 2)); // deletes run 1..10
    await t.close();
    // A run that a compaction should have deleted (wholly at or below the snapshot).
    await withRaw((db) => db.put(runKey(1), run1));
    await expect((await fresh()).load()).rejects.toThrow(
      /log run 1: its entries through 10 are all at or below the snapshot index 10/,
    );
    // And a first run that starts beyond the snapshot's next index.
    await withRaw(async (db) => {
      await db.del(runKey(1));
      await db.del(runKey(11));
      await db.put(runKey(12), craftedRun(12, range(12, 12, 2)));
    });
    await expect((await fresh()).load()).rejects.toThrow(
      /log run 12: gap in the log, expected index 11/,
    );
  });

  it('keeps snapshot data in files: the old one and orphans go, a snapshot written inline before files still loads', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 6 },
      entries: range(1, 8, 1),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(3, 1));
    await s.saveSnapshot(snapshot(6, 1));
    await s.close();
    const snapDir = join(dir, 'raft-snapshots');
    // An orphan: a file written whose meta never was (a crash in between).
    await writeFile(join(snapDir, SnapshotFiles.fileName(7, 1)), 'orphan');
    const t = await fresh();
    const state = await t.load();
    expect(state.snapshot?.meta.index).toBe(6);
    expect(new TextDecoder().decode(state.snapshot!.data)).toBe('state@6');
    await t.close();
    expect(await readdir(snapDir)).toEqual([SnapshotFiles.fileName(6, 1)]);

    // Data written before snapshot files: the meta names no file, the data is under 0x04.
    await withRaw(async (db) => {
      const data = new TextEncoder().encode('inline@6');
      const meta = {
        index: 6,
        term: 1,
        conf: snapshot(6, 1).meta.conf,
        dataBytes: data.length,
        dataCrc: crc32(data),
      };
      await db.put(Buffer.from([0x03]), frameValue(Buffer.from([0x03]), packr.pack(meta)));
      await db.put(Buffer.from([0x04]), frameValue(Buffer.from([0x04]), data));
    });
    const u = await fresh();
    const old = await u.load();
    expect(new TextDecoder().decode(old.snapshot!.data)).toBe('inline@6');
    // The next snapshot moves it to a file and deletes the inline data.
    await u.save({
      hardState: { term: 1, vote: nid('n1'), commit: 8 },
      entries: [],
      snapshot: null,
    });
    await u.saveSnapshot(snapshot(8, 1));
    await u.close();
    expect(await withRaw(async (db) => db.get(Buffer.from([0x04])))).toBeUndefined();
    expect(await reopen(await fresh()).then((r) => r.state.snapshot?.meta.index)).toBe(8);
  });

  it('reads the durable snapshot back in chunks, for a follower: local, received, after a reopen, inline; another is null', async () => {
    const text = (d: Uint8Array | undefined) => new TextDecoder().decode(d);
    const s = await fresh();
    await s.load();
    expect(await s.readSnapshotChunk(3, 1, 0, 1)).toBeNull(); // none yet
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 6 },
      entries: range(1, 8, 1),
      snapshot: null,
    });
    const local = snapshot(6, 1, 'local-state@6');
    await s.saveSnapshot(local);
    const head = await s.readSnapshotChunk(6, 1, 0, 5);
    expect(text(head?.data)).toBe('local');
    expect(head).toMatchObject({ bytes: local.data.length, crc: crc32(local.data) });
    expect(text((await s.readSnapshotChunk(6, 1, 6, 7))?.data)).toBe('state@6');
    // Another index or term is not the durable snapshot: nothing to send.
    expect(await s.readSnapshotChunk(6, 2, 0, 1)).toBeNull();
    expect(await s.readSnapshotChunk(3, 1, 0, 1)).toBeNull();
    // Beyond the data: a caller that does not know the size it asks for.
    await expect(s.readSnapshotChunk(6, 1, 10, 10)).rejects.toThrow(StorageCorruptError);

    const received = snapshot(20, 2, 'received@20');
    await s.save({
      hardState: { term: 2, vote: null, commit: 20 },
      entries: [],
      snapshot: received,
    });
    expect(await s.readSnapshotChunk(6, 1, 0, 1)).toBeNull(); // replaced
    expect(text((await s.readSnapshotChunk(20, 2, 0, 8))?.data)).toBe('received');
    await s.close();

    const t = await fresh();
    await t.load();
    const all = await t.readSnapshotChunk(20, 2, 0, received.data.length);
    expect(text(all?.data)).toBe('received@20');
    expect(all?.crc).toBe(crc32(received.data));
    // A file cut short under a running node: the chunk is refused as corrupt, never sent short.
    await writeFile(join(dir, 'raft-snapshots', SnapshotFiles.fileName(20, 2)), 'recei');
    expect(text((await t.readSnapshotChunk(20, 2, 0, 5))?.data)).toBe('recei');
    await expect(t.readSnapshotChunk(20, 2, 0, 8)).rejects.toThrow(StorageCorruptError);
    await t.close();
  });

  it("a round's write does not wait behind a local snapshot's data file", async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 3 },
      entries: range(1, 4, 1),
      snapshot: null,
    });
    const big: Snapshot = { ...snapshot(3, 1), data: new Uint8Array(32 * 1024 * 1024).fill(7) };
    const order: string[] = [];
    const snap = s.saveSnapshot(big).then(() => order.push('snapshot'));
    const round = s
      .save({ hardState: null, entries: range(5, 5, 1), snapshot: null })
      .then(() => order.push('round'));
    await Promise.all([snap, round]);
    expect(order).toEqual(['round', 'snapshot']);
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(3);
    expect(state.snapshot?.data.length).toBe(big.data.length);
    expect(state.entries.map((e) => e.index)).toEqual([4, 5]);
    await storage.close();
  });

  it('detects corrupt hard state and snapshot data', async () => {
    const s = await fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 3 },
      entries: range(1, 4, 1),
      snapshot: null,
    });
    await s.saveSnapshot(snapshot(3, 1));
    await s.close();
    const file = join(dir, 'raft-snapshots', SnapshotFiles.fileName(3, 1));
    const bytes = await readFile(file);
    bytes[2]! ^= 1;
    await writeFile(file, bytes);
    await expect((await fresh()).load()).rejects.toThrow(
      /snapshot file .* does not match its meta/,
    );
    await rm(file);
    await expect((await fresh()).load()).rejects.toThrow(/snapshot file .* cannot be read/);
    await withRaw(async (db) => {
      await db.del(Buffer.from([0x03]));
      const v = (await db.get(Buffer.from([0x02])))!;
      v[5]! ^= 1;
      await db.put(Buffer.from([0x02]), v);
    });
    await expect((await fresh()).load()).rejects.toThrow(/hard state: checksum mismatch/);
  });

  it('asserts around writes: gaps, overwriting the snapshot, terms moving back, double votes', async () => {
    const make = async () => {
      const s = await fresh();
      await s.load();
      await s.save({
        hardState: { term: 2, vote: nid('n1'), commit: 2 },
        entries: range(1, 4, 2),
        snapshot: null,
      });
      return s;
    };
    await expect(
      (await make()).save({ hardState: null, entries: [normal(6, 2)], snapshot: null }),
    ).rejects.toThrow(AssertionFailure);
    await s2close();
    await expect(
      (await make()).save({ hardState: null, entries: [normal(3, 1)], snapshot: null }),
    ).rejects.toThrow(/term 1 below/);
    await s2close();
    await expect(
      (await make()).save({
        hardState: { term: 1, vote: null, commit: 2 },
        entries: [],
        snapshot: null,
      }),
    ).rejects.toThrow(/moves back/);
    await s2close();
    await expect(
      (await make()).save({
        hardState: { term: 2, vote: nid('n3'), commit: 2 },
        entries: [],
        snapshot: null,
      }),
    ).rejects.toThrow(/vote changes/);
    await s2close();
    await expect(
      (await make()).save({
        hardState: null,
        entries: [normal(5, 2), normal(7, 2)],
        snapshot: null,
      }),
    ).rejects.toThrow(/not contiguous/);
    await s2close();
    // An overwrite that would leave the commit index beyond the log.
    await expect(
      (await make()).save({
        hardState: { term: 2, vote: nid('n1'), commit: 3 },
        entries: [normal(2, 2)],
        snapshot: null,
      }),
    ).rejects.toThrow(/commit index 3 beyond the last durable entry 2/);
    await s2close();
    // A failed write poisons the storage.
    const s = await make();
    await expect(
      s.save({ hardState: null, entries: [normal(9, 2)], snapshot: null }),
    ).rejects.toThrow(AssertionFailure);
    await expect(
      s.save({ hardState: null, entries: [normal(5, 2)], snapshot: null }),
    ).rejects.toThrow(/failed an earlier write/);
    await s2close();
    // Overwriting the snapshot (last: the snapshot stays in this directory).
    const t = await make();
    await t.saveSnapshot(snapshot(2, 2));
    await expect(
      t.save({ hardState: null, entries: [normal(2, 2)], snapshot: null }),
    ).rejects.toThrow(/overwrite the snapshot/);

    async function s2close() {
      for (const o of open.splice(0)) await o.close();
    }
  });

  it('refuses a data dir that belongs to another node', async () => {
    const s = await fresh('n1');
    await s.load();
    await s.close();
    const t = await fresh('n2');
    await expect(t.load()).rejects.toThrow(ConfigError);
  });

  it('keeps the node identity, the cluster id and the identities peers were seen with', async () => {
    const s = await fresh('n1');
    const first = await s.readIdentity();
    expect(first).toMatchObject({ clusterId: null, peerUids: {}, empty: true });
    expect(first.nodeUid).toMatch(/^[0-9a-f-]{36}$/);
    await s.saveClusterId('c1');
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 0 }, entries: [], snapshot: null });
    await s.savePeerIdentities({ n2: 'uid-2', n3: 'uid-3' });
    await s.close();
    const t = await fresh('n1');
    expect(await t.readIdentity()).toEqual({
      clusterId: 'c1',
      nodeUid: first.nodeUid,
      peerUids: { n2: 'uid-2', n3: 'uid-3' },
      empty: false,
    });
    // The log loads as before: the identity records are not log.
    expect((await t.load()).hardState.term).toBe(1);
  });

  it('refuses a database in storage format 1 (one key per entry) with a clear error', async () => {
    // What a format-1 build left behind: its identity record, framed with format byte 1.
    const identityKey = Buffer.from([0x05]);
    const format1 = (payload: Uint8Array) => {
      const v = Buffer.alloc(5 + payload.length);
      v[0] = 1;
      v.writeUInt32BE(crc32(payload, crc32(identityKey)), 1);
      v.set(payload, 5);
      return v;
    };
    await withRaw(async (db) => {
      await db.put(identityKey, format1(packr.pack({ format: 1, nodeId: 'n1' })));
      await db.put(runKey(1), format1(packr.pack(normal(1, 1))));
    });
    await expect((await fresh('n1')).load()).rejects.toThrow(ConfigError);
    await expect((await fresh('n1')).load()).rejects.toThrow(
      /unknown storage format 1: this build reads format 2 only/,
    );
    // Also when only the record's own field says so.
    await withRaw((db) =>
      db.put(identityKey, frameValue(identityKey, packr.pack({ format: 1, nodeId: 'n1' }))),
    );
    await expect((await fresh('n1')).load()).rejects.toThrow(/unknown storage format 1/);
    // A damaged identity record is corruption, not a format question.
    await withRaw(async (db) => {
      const v = format1(packr.pack({ format: 1, nodeId: 'n1' }));
      v[v.length - 1]! ^= 1;
      await db.put(identityKey, v);
    });
    await expect((await fresh('n1')).load()).rejects.toThrow(/identity: checksum mismatch/);
  });

  it('writes each round as one synced batch', async () => {
    const s = await fresh();
    await s.load();
    const calls = spyBatches(s);
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 0 },
      entries: range(1, 50, 1),
      snapshot: null,
    });
    await s.save({ hardState: null, entries: range(51, 60, 1), snapshot: null });
    await s.save({
      hardState: { term: 2, vote: null, commit: 10 },
      entries: range(20, 25, 2),
      snapshot: null,
    });
    await s.save({
      hardState: { term: 2, vote: null, commit: 22 },
      entries: [],
      snapshot: null,
      sync: false,
    });
    await s.saveSnapshot(snapshot(10, 1));
    await s.saveSnapshot(snapshot(20, 2));
    expect(calls).toEqual([
      // 50 entries in one run + hard state.
      { puts: 2, dels: 0, sync: true },
      { puts: 1, dels: 0, sync: true },
      // The run 51.. deleted, the run 1.. cut on load by the new run 20.
      { puts: 2, dels: 1, sync: true },
      { puts: 1, dels: 0, sync: false },
      // Snapshot meta (data in a file; any inline data deleted); the run 1..19 straddles 10
      // and stays, then ends below 20 and goes.
      { puts: 1, dels: 1, sync: true },
      { puts: 1, dels: 2, sync: true },
    ]);
    expect(s.stats()).toMatchObject({
      syncedWrites: 5,
      unsyncedWrites: 1,
      entriesWritten: 66,
      snapshotIndex: 20,
      firstIndex: 21,
      lastIndex: 25,
    });
  });
});

/**
 * Property: whatever sequence of rounds the core may hand the storage (appends, conflicting
 * overwrites, commit-only rounds, compactions, received snapshots that match the log or
 * not, term and vote changes), load() after a reopen returns exactly the log a plain
 * in-memory model holds. fast-check prints the shrunk operation list on failure.
 */
describe.each([
  {
    name: 'LevelDbStorage',
    open: (dir: string): LogStorage & { stats(): StorageStats } =>
      new LevelDbStorage({ path: join(dir, 'raft'), logger: silentLogger() }),
  },
  {
    // Segments of 4 KiB: rounds roll over segments and compactions delete them.
    name: 'WalStorage',
    open: (dir: string): LogStorage & { stats(): StorageStats } =>
      new WalStorage({
        walDir: join(dir, 'raft-wal'),
        levelPath: join(dir, 'raft'),
        logger: silentLogger(),
        segmentBytes: 4096,
      }),
  },
])('$name against an in-memory model of the log', ({ open }) => {
  const KINDS = [
    'append',
    'append',
    'overwrite',
    'commit',
    'compact',
    'recvMatch',
    'recvOther',
    'hardState',
    'reopen',
  ] as const;
  const opArb = fc.record({
    kind: fc.constantFrom(...KINDS),
    a: fc.nat(1000),
    n: fc.integer({ min: 1, max: 6 }),
    flag: fc.boolean(),
  });
  type Op = { kind: (typeof KINDS)[number]; a: number; n: number; flag: boolean };

  interface Model {
    hardState: HardState;
    snapshot: Snapshot | null;
    /** Entries after the snapshot index. */
    entries: Entry[];
  }

  const text = (d: Uint8Array) => new TextDecoder().decode(d);
  const view = (s: LoadedState | Model) => ({
    hardState: s.hardState,
    snapshot: s.snapshot && { meta: s.snapshot.meta, data: text(s.snapshot.data) },
    entries: s.entries.map((e) => [e.index, e.term, e.type === 'normal' ? text(e.data) : e.type]),
  });

  async function runOps(ops: Op[]): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'concord-storage-prop-'));
    let storage = open(dir);
    try {
      await storage.load();
      const m: Model = {
        hardState: { term: 0, vote: null, commit: 0 },
        snapshot: null,
        entries: [],
      };
      let version = 0;
      const snapIndex = () => m.snapshot?.meta.index ?? 0;
      const lastIndex = () => snapIndex() + m.entries.length;
      const termAt = (i: number) =>
        i === snapIndex() ? (m.snapshot?.meta.term ?? 0) : m.entries[i - snapIndex() - 1]!.term;
      const make = (from: number, count: number, term: number) => {
        version++;
        return Array.from({ length: count }, (_, k) =>
          normal(from + k, term, `e${from + k}t${term}v${version}`),
        );
      };
      /** Model side of a round's entries: drop from their first index on, then append. */
      const put = (entries: Entry[]) => {
        m.entries.length = entries[0]!.index - snapIndex() - 1;
        m.entries.push(...entries);
      };
      const reopenAndCheck = async () => {
        await storage.close();
        storage = open(dir);
        expect(view(await storage.load())).toEqual(view(m));
      };

      for (const op of ops) {
        const hs = m.hardState;
        switch (op.kind) {
          case 'append': {
            const term = Math.max(hs.term, 1);
            const entries = make(lastIndex() + 1, op.n, term);
            const last = lastIndex() + op.n;
            const commit = op.flag ? hs.commit + ((op.a % (last - hs.commit)) + 1) : hs.commit;
            const hardState = { term, vote: term === hs.term ? hs.vote : null, commit };
            await storage.save({ hardState, entries, snapshot: null });
            put(entries);
            m.hardState = hardState;
            break;
          }
          case 'overwrite': {
            // A new leader's entries from a random index past the snapshot (an append if
            // there is nothing to overwrite); long enough to keep the commit index covered.
            const span = lastIndex() - snapIndex();
            const from = span > 0 ? snapIndex() + 1 + (op.a % span) : lastIndex() + 1;
            const count = Math.max(op.n, hs.commit - from + 1);
            const hardState = { term: hs.term + 1, vote: null, commit: hs.commit };
            const entries = make(from, count, hardState.term);
            await storage.save({ hardState, entries, snapshot: null });
            put(entries);
            m.hardState = hardState;
            break;
          }
          case 'commit': {
            if (hs.commit === lastIndex()) break;
            const hardState = { ...hs, commit: hs.commit + 1 + (op.a % (lastIndex() - hs.commit)) };
            await storage.save({ hardState, entries: [], snapshot: null, sync: !op.flag });
            m.hardState = hardState;
            break;
          }
          case 'compact': {
            if (hs.commit <= snapIndex()) break;
            const at = snapIndex() + 1 + (op.a % (hs.commit - snapIndex()));
            const snap = snapshot(at, termAt(at), `state@${at}v${++version}`);
            await storage.saveSnapshot(snap);
            m.entries = m.entries.slice(at - snapIndex());
            m.snapshot = snap;
            break;
          }
          case 'recvMatch': {
            // A leader's snapshot whose last entry the log holds: the suffix stays (§7), and
            // maybe the same round overwrites right after it.
            if (lastIndex() <= snapIndex()) break;
            const at = snapIndex() + 1 + (op.a % (lastIndex() - snapIndex()));
            const snap = snapshot(at, termAt(at), `state@${at}v${++version}`);
            const term = op.flag ? hs.term + 1 : hs.term;
            const commit = Math.max(hs.commit, at);
            const entries = op.flag ? make(at + 1, Math.max(op.n, commit - at), term) : [];
            const hardState = { term, vote: op.flag ? null : hs.vote, commit };
            await storage.save({ hardState, entries, snapshot: snap });
            m.entries = m.entries.slice(at - snapIndex());
            m.snapshot = snap;
            if (entries.length > 0) put(entries);
            m.hardState = hardState;
            break;
          }
          case 'recvOther': {
            // A snapshot of a newer term past the commit index: the whole log goes.
            const at = Math.max(hs.commit, snapIndex()) + 1 + (op.a % 5);
            const term = hs.term + 1;
            const snap = snapshot(at, term, `state@${at}v${++version}`);
            const entries = op.flag ? make(at + 1, op.n, term) : [];
            const hardState = { term, vote: null, commit: at };
            await storage.save({ hardState, entries, snapshot: snap });
            m.entries = [];
            m.snapshot = snap;
            if (entries.length > 0) put(entries);
            m.hardState = hardState;
            break;
          }
          case 'hardState': {
            const hardState = op.flag
              ? { term: hs.term + 1, vote: null, commit: hs.commit }
              : { ...hs, vote: hs.vote ?? nid('n2') };
            await storage.save({ hardState, entries: [], snapshot: null });
            m.hardState = hardState;
            break;
          }
          case 'reopen':
            await reopenAndCheck();
            break;
        }
        expect(storage.stats()).toMatchObject({
          snapshotIndex: snapIndex(),
          lastIndex: lastIndex(),
        });
      }
      await reopenAndCheck();
    } finally {
      await storage.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  }

  it('load() after any sequence of rounds and reopens equals the model', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => runOps(ops)),
      { numRuns: 50 },
    );
  });
});
