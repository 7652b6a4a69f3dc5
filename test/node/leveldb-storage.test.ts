import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConfState, Entry, Snapshot } from '../../src/raft/core/types.ts';
import { crc32 } from '../../src/raft/storage/crc32.ts';
import { entryKey, LevelDbStorage } from '../../src/raft/storage/leveldb-storage.ts';
import { AssertionFailure, ConfigError, StorageCorruptError } from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';

const conf: ConfState = { voters: ['n1', 'n2', 'n3'], learners: [], context: { n1: '{"raft":"a"}' } };

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
});

describe('LevelDbStorage', () => {
  let dir: string;
  const open: LevelDbStorage[] = [];

  async function fresh(nodeId?: string): Promise<LevelDbStorage> {
    const s = new LevelDbStorage({ path: join(dir, 'raft'), logger: silentLogger(), ...(nodeId ? { nodeId } : {}) });
    open.push(s);
    return s;
  }

  async function reopen(s: LevelDbStorage) {
    await s.close();
    const t = await fresh();
    return { storage: t, state: await t.load() };
  }

  /** Edits the raw database behind a closed storage. */
  async function withRaw(fn: (db: Level<Buffer, Buffer>) => Promise<void>) {
    const db = new Level<Buffer, Buffer>(join(dir, 'raft'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    try {
      await fn(db);
    } finally {
      await db.close();
    }
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
    expect(await s.load()).toEqual({ hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] });
  });

  it('round-trips entries, conf entries and hard state across a reopen', async () => {
    const s = await fresh();
    await s.load();
    const conf1: Entry = { index: 4, term: 2, type: 'conf', change: { type: 'addLearner', nodeId: 'n4', context: 'ctx' } };
    await s.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: range(1, 3, 1), snapshot: null });
    await s.save({ hardState: { term: 2, vote: 'n2', commit: 3 }, entries: [conf1, normal(5, 2)], snapshot: null });
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

  it('overwrites a conflicting tail in the same batch and deletes what lies beyond it', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 2 }, entries: range(1, 6, 1), snapshot: null });
    // A new leader of term 3 replaces entries from 4 on with a shorter tail.
    await s.save({ hardState: { term: 3, vote: null, commit: 2 }, entries: [normal(4, 3, 'new4')], snapshot: null });
    const { storage, state } = await reopen(s);
    expect(state.entries.map((e) => `${e.index}/${e.term}`)).toEqual(['1/1', '2/1', '3/1', '4/3']);
    // And it keeps going from there.
    await storage.save({ hardState: null, entries: [normal(5, 3)], snapshot: null });
    const again = await reopen(storage);
    expect(again.state.entries.map((e) => `${e.index}/${e.term}`)).toEqual(['1/1', '2/1', '3/1', '4/3', '5/3']);
  });

  it('compacts: a local snapshot replaces the entries it covers', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 2, vote: null, commit: 8 }, entries: range(1, 10, 2), snapshot: null });
    await s.saveSnapshot(snapshot(8, 2));
    // A stale compaction is a no-op.
    await s.saveSnapshot(snapshot(5, 2));
    const { storage, state } = await reopen(s);
    expect(state.snapshot?.meta).toEqual({ index: 8, term: 2, conf });
    expect(new TextDecoder().decode(state.snapshot!.data)).toBe('state@8');
    expect(state.entries.map((e) => e.index)).toEqual([9, 10]);
    await storage.save({ hardState: { term: 2, vote: null, commit: 10 }, entries: [normal(11, 2)], snapshot: null });
    await storage.saveSnapshot(snapshot(10, 2));
    const again = await reopen(storage);
    expect(again.state.snapshot?.meta.index).toBe(10);
    expect(again.state.entries.map((e) => e.index)).toEqual([11]);
  });

  it('a received snapshot that does not match the log discards the whole log', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 2 }, entries: range(1, 5, 1), snapshot: null });
    await s.save({ hardState: { term: 3, vote: null, commit: 20 }, entries: [], snapshot: snapshot(20, 3) });
    const { state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(20);
    expect(state.entries).toEqual([]);
    expect(state.hardState.commit).toBe(20);
  });

  it('a received snapshot matching the log keeps the entries after it (Raft §7)', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 2 }, entries: range(1, 6, 1), snapshot: null });
    await s.save({ hardState: { term: 1, vote: null, commit: 4 }, entries: [], snapshot: snapshot(4, 1) });
    const { state } = await reopen(s);
    expect(state.snapshot?.meta.index).toBe(4);
    expect(state.entries.map((e) => e.index)).toEqual([5, 6]);
  });

  it('detects a flipped byte in an entry value', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 3 }, entries: range(1, 5, 1), snapshot: null });
    await s.close();
    await withRaw(async (db) => {
      const v = (await db.get(entryKey(5)))!;
      v[v.length - 1]! ^= 0x40;
      await db.put(entryKey(5), v);
    });
    const t = await fresh();
    await expect(t.load()).rejects.toThrow(StorageCorruptError);
    await expect((await fresh()).load()).rejects.toThrow(/log entry 5: checksum mismatch/);
  });

  it('detects a torn (truncated) value', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 1 }, entries: range(1, 3, 1), snapshot: null });
    await s.close();
    await withRaw(async (db) => {
      const v = (await db.get(entryKey(3)))!;
      await db.put(entryKey(3), v.subarray(0, v.length - 3));
    });
    await expect((await fresh()).load()).rejects.toThrow(StorageCorruptError);
  });

  it('detects a gap in the log and a commit index beyond the log', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 5 }, entries: range(1, 6, 1), snapshot: null });
    await s.close();
    await withRaw((db) => db.del(entryKey(3)));
    await expect((await fresh()).load()).rejects.toThrow(/gap in the log, expected index 3/);
    await withRaw(async (db) => {
      await db.del(entryKey(4));
      await db.del(entryKey(5));
      await db.del(entryKey(6));
    });
    await expect((await fresh()).load()).rejects.toThrow(/commit index 5 is beyond the last durable entry 2/);
  });

  it('detects a value moved under another key', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: null, commit: 1 }, entries: range(1, 3, 1), snapshot: null });
    await s.close();
    await withRaw(async (db) => {
      await db.put(entryKey(2), (await db.get(entryKey(3)))!);
    });
    await expect((await fresh()).load()).rejects.toThrow(/log entry 2: checksum mismatch/);
  });

  it('detects corrupt hard state and snapshot data', async () => {
    const s = await fresh();
    await s.load();
    await s.save({ hardState: { term: 1, vote: 'n1', commit: 3 }, entries: range(1, 4, 1), snapshot: null });
    await s.saveSnapshot(snapshot(3, 1));
    await s.close();
    await withRaw(async (db) => {
      const v = (await db.get(Buffer.from([0x04])))!;
      v[6]! ^= 1;
      await db.put(Buffer.from([0x04]), v);
    });
    await expect((await fresh()).load()).rejects.toThrow(/snapshot data: checksum mismatch/);
    await withRaw(async (db) => {
      await db.del(Buffer.from([0x04]));
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
      await s.save({ hardState: { term: 2, vote: 'n1', commit: 2 }, entries: range(1, 4, 2), snapshot: null });
      return s;
    };
    await expect((await make()).save({ hardState: null, entries: [normal(6, 2)], snapshot: null })).rejects.toThrow(AssertionFailure);
    await s2close();
    await expect((await make()).save({ hardState: null, entries: [normal(3, 1)], snapshot: null })).rejects.toThrow(/term 1 below/);
    await s2close();
    await expect((await make()).save({ hardState: { term: 1, vote: null, commit: 2 }, entries: [], snapshot: null })).rejects.toThrow(/moves back/);
    await s2close();
    await expect((await make()).save({ hardState: { term: 2, vote: 'n3', commit: 2 }, entries: [], snapshot: null })).rejects.toThrow(/vote changes/);
    await s2close();
    await expect(
      (await make()).save({ hardState: null, entries: [normal(5, 2), normal(7, 2)], snapshot: null }),
    ).rejects.toThrow(/not contiguous/);
    await s2close();
    // A failed write poisons the storage.
    const s = await make();
    await expect(s.save({ hardState: null, entries: [normal(9, 2)], snapshot: null })).rejects.toThrow(AssertionFailure);
    await expect(s.save({ hardState: null, entries: [normal(5, 2)], snapshot: null })).rejects.toThrow(/failed an earlier write/);

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

  it('writes each round as one synced batch', async () => {
    const s = await fresh();
    await s.load();
    const db = (s as unknown as { db: Level<Buffer, Buffer> }).db;
    const calls: Array<{ ops: number; sync: unknown }> = [];
    const original = db.batch.bind(db) as (ops: unknown, opts: unknown) => Promise<void>;
    (db as unknown as { batch: unknown }).batch = (ops: unknown[], opts: { sync?: boolean }) => {
      calls.push({ ops: ops.length, sync: opts?.sync });
      return original(ops, opts);
    };
    await s.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: range(1, 50, 1), snapshot: null });
    await s.save({ hardState: { term: 2, vote: null, commit: 10 }, entries: range(20, 25, 2), snapshot: null });
    await s.saveSnapshot(snapshot(10, 1));
    // 50 entries + hard state; 6 entries + 25 tail deletions + hard state; 10 deletions + meta + data.
    expect(calls).toEqual([
      { ops: 51, sync: true },
      { ops: 32, sync: true },
      { ops: 12, sync: true },
    ]);
  });
});
