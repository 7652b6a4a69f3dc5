/**
 * WalStorage on real files: crashes leave sectors of the last write unwritten (zero: a torn
 * tail, cut off, the rounds before it load); a flipped bit in any record (the last one too),
 * or a bad record followed by good ones, is StorageCorruptError; the scan after a bad record
 * is bounded; records
 * have a bounded size; a LevelDB log of the previous format is refused. The LogStorage
 * contract (the in-memory model) runs against WalStorage in leveldb-storage.test.ts.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConfState, Entry, Snapshot } from '../../src/raft/core/types.ts';
import { openLogStorage } from '../../src/raft/node/raft-node.ts';
import { LevelDbStorage } from '../../src/raft/storage/leveldb-storage.ts';
import { WalStorage } from '../../src/raft/storage/wal-storage.ts';
import {
  encodeRecord,
  MAX_RECORD_BYTES,
  RECORD_ROUND,
  segmentName,
  TAIL_SCAN_BYTES_PER_SEGMENT_BYTE,
  walReadWork,
} from '../../src/raft/storage/wal.ts';
import { AssertionFailure, ConfigError, StorageCorruptError } from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { nid } from '../support/node-id.ts';

const conf: ConfState = { voters: [nid('n1')], learners: [], context: {} };
const SEGMENT = 4096;

function normal(index: number, term: number, bytes = 40): Entry {
  return { index, term, type: 'normal', data: new Uint8Array(bytes).fill(index & 0xff) };
}

function snapshot(index: number, term: number): Snapshot {
  return { meta: { index, term, conf }, data: new TextEncoder().encode(`state@${index}`) };
}

describe('WalStorage on real files', () => {
  let dir: string;
  const open: WalStorage[] = [];

  function fresh(segmentBytes = SEGMENT): WalStorage {
    const s = new WalStorage({
      walDir: join(dir, 'raft-wal'),
      levelPath: join(dir, 'raft'),
      logger: silentLogger(),
      segmentBytes,
    });
    open.push(s);
    return s;
  }

  const segPath = (seq: number) => join(dir, 'raft-wal', segmentName(seq));
  const lastIndexes = (entries: Entry[]) => entries.map((e) => e.index);

  /**
   * Three rounds of one entry each in segment 1; returns where the last record begins and
   * ends, and where the second begins.
   */
  async function threeRounds(
    lastBytes = 40,
  ): Promise<{ second: number; start: number; end: number }> {
    const s = fresh();
    await s.load();
    const before: number[] = [];
    for (let i = 1; i <= 3; i++) {
      before.push(s.stats().bytesWritten);
      await s.save({
        hardState: { term: 1, vote: nid('n1'), commit: i - 1 },
        entries: [normal(i, 1, i === 3 ? lastBytes : 40)],
        snapshot: null,
      });
    }
    const written = s.stats().bytesWritten;
    await s.close();
    // The header record comes first; the rounds follow it back to back.
    const buf = await readFile(segPath(1));
    let headerEnd = 0;
    const headerLen = buf.readUInt32LE(0);
    headerEnd = (8 + headerLen + 7) & ~7;
    return {
      second: headerEnd + before[1]!,
      start: headerEnd + before[2]!,
      end: headerEnd + written,
    };
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-wal-'));
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('a write torn by a crash (sectors of the last record never written) is cut; the log goes on', async () => {
    // The last record spans several 512-byte sectors. A crash leaves each sector of the write
    // whole or not at all (the segment is zero-filled, so a sector never reached is zero): its
    // first sectors written and the rest zero, or (pages flushed out of order) one sector zero
    // and those after it written.
    const { start, end } = await threeRounds(2000);
    const whole = await readFile(segPath(1));
    const recordEnd = start + 8 + whole.readUInt32LE(start);
    const boundaries: number[] = [];
    for (let b = Math.ceil((start + 1) / 512) * 512; b < recordEnd; b += 512) boundaries.push(b);
    expect(boundaries.length).toBeGreaterThanOrEqual(3);
    const cases: [string, Buffer][] = [];
    // Nothing of it written (its header's sector zero, from the record's start).
    cases.push(['none', Buffer.from(whole).fill(0, start, end)]);
    for (const b of boundaries) {
      cases.push([`written to ${b}, zero after`, Buffer.from(whole).fill(0, b, end)]);
      cases.push([`sector ${b} zero, the rest written`, Buffer.from(whole).fill(0, b, b + 512)]);
    }
    for (const [label, torn] of cases) {
      await writeFile(segPath(1), torn);
      const s = fresh();
      const state = await s.load();
      expect(lastIndexes(state.entries), label).toEqual([1, 2]);
      expect(state.hardState.commit).toBe(1);
      // The torn bytes are zeroed, so nothing stale lies after the records written next.
      expect((await readFile(segPath(1))).subarray(start).every((b) => b === 0)).toBe(true);
      // The next round goes where the torn one was; a reopen reads it back.
      await s.save({
        hardState: { term: 2, vote: null, commit: 1 },
        entries: [normal(3, 2)],
        snapshot: null,
      });
      await s.close();
      const again = await fresh().load();
      expect(again.entries.map((e) => `${e.index}/${e.term}`)).toEqual(['1/1', '2/1', '3/2']);
      await open.pop()!.close();
      await writeFile(segPath(1), whole);
    }
    // Whole: all three.
    expect(lastIndexes((await fresh().load()).entries)).toEqual([1, 2, 3]);
  });

  it('a flipped bit in the last record (every sector of it written) is corruption, not a torn tail', async () => {
    // Cutting it would lose an acknowledged entry, which may have counted toward a quorum.
    for (const lastBytes of [40, 2000]) {
      const { start } = await threeRounds(lastBytes);
      const whole = await readFile(segPath(1));
      const len = whole.readUInt32LE(start);
      for (const at of [start + 8 + 1, start + 8 + (len >> 1), start + 8 + len - 1, start + 5]) {
        const flipped = Buffer.from(whole);
        flipped[at]! ^= 0x04;
        await writeFile(segPath(1), flipped);
        const err = await fresh()
          .load()
          .catch((e: unknown) => e);
        expect(err, `${lastBytes} bytes, bit @${at}`).toBeInstanceOf(StorageCorruptError);
        expect(String(err)).toContain(`segment 1 @${start}`);
        // Refused, nothing changed.
        expect((await readFile(segPath(1))).equals(flipped)).toBe(true);
      }
      await rm(join(dir, 'raft-wal'), { recursive: true });
      await rm(join(dir, 'raft'), { recursive: true, force: true });
    }
  });

  it('a flipped bit in an earlier record, or a bad record followed by good ones, is corruption', async () => {
    const { start } = await threeRounds();
    const whole = await readFile(segPath(1));
    // A bit in the middle of the second round's record (well before the last one).
    const flipped = Buffer.from(whole);
    flipped[start - 20]! ^= 0x10;
    await writeFile(segPath(1), flipped);
    await expect(fresh().load()).rejects.toBeInstanceOf(StorageCorruptError);
    // The second round's record zeroed out, the third intact after it.
    const zeroed = Buffer.from(whole);
    zeroed.fill(0, start - 40, start);
    await writeFile(segPath(1), zeroed);
    await expect(fresh().load()).rejects.toBeInstanceOf(StorageCorruptError);
  });

  it('bounds records: a length beyond the bound is a torn tail at the end, corruption before a good record', async () => {
    const { second, end } = await threeRounds();
    const whole = await readFile(segPath(1));
    const atEnd = Buffer.from(whole);
    atEnd.writeUInt32LE(MAX_RECORD_BYTES + 1, end);
    atEnd.writeUInt32LE(0xdeadbeef, end + 4);
    await writeFile(segPath(1), atEnd);
    expect(lastIndexes((await fresh().load()).entries)).toEqual([1, 2, 3]);
    await open.pop()!.close();
    const before = Buffer.from(whole);
    before.writeUInt32LE(MAX_RECORD_BYTES + 1, second);
    await writeFile(segPath(1), before);
    await expect(fresh().load()).rejects.toBeInstanceOf(StorageCorruptError);
    // The writer refuses a record over the bound.
    expect(() => encodeRecord(RECORD_ROUND, { e: [normal(1, 1, MAX_RECORD_BYTES)] })).toThrow(
      AssertionFailure,
    );
  });

  it('splits a round larger than one record over several, in one write, and reads it back', async () => {
    const s = fresh(1024 * 1024);
    await s.load();
    const big = [normal(1, 1, 6_000_000), normal(2, 1, 6_000_000), normal(3, 1, 6_000_000)];
    await s.save({ hardState: { term: 1, vote: null, commit: 3 }, entries: big, snapshot: null });
    expect(s.stats().syncedWrites).toBe(1);
    await s.close();
    const state = await fresh(1024 * 1024).load();
    expect(state.entries.map((e) => [e.index, e.type === 'normal' ? e.data.length : 0])).toEqual([
      [1, 6_000_000],
      [2, 6_000_000],
      [3, 6_000_000],
    ]);
    expect(state.hardState.commit).toBe(3);
  });

  it('rolls over segments and deletes those a snapshot covers', async () => {
    const s = fresh();
    await s.load();
    for (let i = 1; i <= 200; i++)
      await s.save({
        hardState: { term: 1, vote: null, commit: i },
        entries: [normal(i, 1, 100)],
        snapshot: null,
      });
    const before = (await readdir(join(dir, 'raft-wal'))).filter((f) => f.endsWith('.wal'));
    expect(before.length).toBeGreaterThan(5);
    await s.saveSnapshot(snapshot(190, 1));
    const after = (await readdir(join(dir, 'raft-wal'))).filter((f) => f.endsWith('.wal'));
    expect(after.length).toBeLessThanOrEqual(2);
    await s.close();
    const state = await fresh().load();
    expect(state.snapshot?.meta.index).toBe(190);
    expect(lastIndexes(state.entries)).toEqual([191, 192, 193, 194, 195, 196, 197, 198, 199, 200]);
    expect(state.hardState.commit).toBe(200);
  });

  it('a missing middle segment is corruption', async () => {
    const s = fresh();
    await s.load();
    for (let i = 1; i <= 100; i++)
      await s.save({
        hardState: { term: 1, vote: null, commit: i },
        entries: [normal(i, 1, 100)],
        snapshot: null,
      });
    await s.close();
    await rm(segPath(2));
    await expect(fresh().load()).rejects.toBeInstanceOf(StorageCorruptError);
  });

  it('refuses a data directory whose log is in LevelDB (the format before the WAL)', async () => {
    const old = new LevelDbStorage({ path: join(dir, 'raft'), logger: silentLogger() });
    await old.load();
    await old.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: [normal(1, 1)],
      snapshot: null,
    });
    await old.close();
    const err = await fresh()
      .load()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(String(err)).toMatch(/LevelDB/);
    // Refused, nothing changed: no WAL directory appeared, so the node still opens it on LevelDB.
    expect(await readdir(dir)).not.toContain('raft-wal');
    const auto = openLogStorage(dir, silentLogger(), 'n1');
    expect(auto).toBeInstanceOf(LevelDbStorage);
    expect((await auto.load()).entries.map((e) => e.index)).toEqual([1]);
    await auto.close();
  });

  it('a node opens a new data directory on the WAL, and keeps it there', async () => {
    const first = openLogStorage(dir, silentLogger(), 'n1');
    expect(first).toBeInstanceOf(WalStorage);
    await first.readIdentity();
    await first.load();
    await first.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: [normal(1, 1)],
      snapshot: null,
    });
    await first.close();
    expect((await readdir(dir)).sort()).toEqual(['raft', 'raft-wal']);
    const again = openLogStorage(dir, silentLogger(), 'n1');
    expect(again).toBeInstanceOf(WalStorage);
    expect((await again.load()).entries.map((e) => e.index)).toEqual([1]);
    await again.close();
  });
});

describe('WalStorage: the scan after a bad record is bounded', () => {
  let dir: string;
  const SEG = 16 * 1024 * 1024;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-wal-scan-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // A 16 MiB segment whose tail is crafted: a bad last record with a zero sector (so it reads
  // as torn), then at every 16 bytes a header whose length runs to near the end of the file,
  // with the type and map bytes a record has — before the bound, a checksum of ~16 MiB at each
  // of 1 M positions. Bounded by the work done (bytes checksummed), not by time.
  it('a 16 MiB segment of crafted lengths after the tail is refused after linear work', async () => {
    const s = new WalStorage({
      walDir: join(dir, 'raft-wal'),
      levelPath: join(dir, 'raft'),
      logger: silentLogger(),
      segmentBytes: SEG,
    });
    await s.load();
    await s.save({
      hardState: { term: 1, vote: null, commit: 1 },
      entries: [normal(1, 1)],
      snapshot: null,
    });
    const end = s.stats().bytesWritten;
    await s.close();
    const whole = await readFile(join(dir, 'raft-wal', segmentName(1)));
    const headerEnd = (8 + whole.readUInt32LE(0) + 7) & ~7;
    const tail = headerEnd + end;
    const bad = Buffer.from(whole);
    // The torn record: 2 KiB claimed, its second sector zero.
    const first = (Math.ceil(tail / 512) + 2) * 512;
    bad.writeUInt32LE(first - tail + 512, tail);
    bad.writeUInt32LE(0xdeadbeef, tail + 4);
    bad.fill(0x41, tail + 8, first - 512);
    for (let o = first; o + 16 <= SEG; o += 16) {
      bad.writeUInt32LE(SEG - o - 16, o);
      bad.writeUInt32LE(o, o + 4);
      bad[o + 8] = RECORD_ROUND;
      bad[o + 9] = 0x85;
    }
    await writeFile(join(dir, 'raft-wal', segmentName(1)), bad);
    const before = walReadWork.crcBytes;
    const again = new WalStorage({
      walDir: join(dir, 'raft-wal'),
      levelPath: join(dir, 'raft'),
      logger: silentLogger(),
      segmentBytes: SEG,
    });
    const err = await again.load().catch((e: unknown) => e);
    await again.close().catch(() => undefined);
    expect(err).toBeInstanceOf(StorageCorruptError);
    expect(String(err)).toMatch(/scan bound/);
    const work = walReadWork.crcBytes - before;
    expect(work).toBeGreaterThan(SEG);
    expect(work).toBeLessThanOrEqual(
      (TAIL_SCAN_BYTES_PER_SEGMENT_BYTE + 1) * SEG + MAX_RECORD_BYTES,
    );
  });
});

describe('WalStorage: a round split over several records, torn by a crash', () => {
  let dir: string;
  const opened: WalStorage[] = [];
  const SEG = 4 * 1024 * 1024;
  const segPath = () => join(dir, 'raft-wal', segmentName(1));

  function fresh(): WalStorage {
    const s = new WalStorage({
      walDir: join(dir, 'raft-wal'),
      levelPath: join(dir, 'raft'),
      logger: silentLogger(),
      segmentBytes: SEG,
    });
    opened.push(s);
    return s;
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-wal-split-'));
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * Round 1: entry 1 of term 1. Round 2 (a follower catching up under a new leader): the
   * term-2 hard state and 5000 term-2 entries, more than one record holds, so two records
   * in one write. Returns the file and where round 2's records begin and end.
   */
  async function splitRound(): Promise<{ whole: Buffer; parts: [number, number][] }> {
    const s = fresh();
    await s.load();
    await s.save({
      hardState: { term: 1, vote: nid('n1'), commit: 1 },
      entries: [normal(1, 1)],
      snapshot: null,
    });
    const before = s.stats().bytesWritten;
    const entries: Entry[] = [];
    for (let i = 2; i <= 5001; i++) entries.push(normal(i, 2));
    await s.save({ hardState: { term: 2, vote: null, commit: 1 }, entries, snapshot: null });
    expect(s.stats().syncedWrites).toBe(2);
    await s.close();
    const whole = await readFile(segPath());
    const headerEnd = (8 + whole.readUInt32LE(0) + 7) & ~7;
    const parts: [number, number][] = [];
    let o = headerEnd + before;
    while (whole.readUInt32LE(o) !== 0) {
      const end = (o + 8 + whole.readUInt32LE(o) + 7) & ~7;
      parts.push([o, end]);
      o = end;
    }
    expect(parts.length).toBe(2);
    return { whole, parts };
  }

  it('only its first record durable: the round is cut whole, the log before it loads', async () => {
    const { whole, parts } = await splitRound();
    const torn = Buffer.from(whole);
    torn.fill(0, parts[1]![0], parts[1]![1]);
    await writeFile(segPath(), torn);
    const state = await fresh().load();
    expect(state.entries.map((e) => e.index)).toEqual([1]);
    expect(state.hardState).toEqual({ term: 1, vote: nid('n1'), commit: 1 });
    // The part that was cut is zeroed: nothing of it can come back.
    expect((await readFile(segPath())).subarray(parts[0]![0]).every((b) => b === 0)).toBe(true);
  });

  it('only its last record durable (pages flushed out of order): a torn round, not corruption', async () => {
    const { whole, parts } = await splitRound();
    const torn = Buffer.from(whole);
    torn.fill(0, parts[0]![0], parts[0]![0] + 4096);
    await writeFile(segPath(), torn);
    const s = fresh();
    const state = await s.load();
    expect(state.entries.map((e) => e.index)).toEqual([1]);
    expect(state.hardState.term).toBe(1);
    expect((await readFile(segPath())).subarray(parts[0]![0]).every((b) => b === 0)).toBe(true);
    // It goes on: the round again, read back whole.
    const entries: Entry[] = [];
    for (let i = 2; i <= 5001; i++) entries.push(normal(i, 2));
    await s.save({ hardState: { term: 2, vote: null, commit: 5001 }, entries, snapshot: null });
    await s.close();
    const again = await fresh().load();
    expect(again.entries.length).toBe(5001);
    expect(again.hardState.commit).toBe(5001);
  });

  it('a whole record of a round that never began is corruption, not a torn tail', async () => {
    const { whole, parts } = await splitRound();
    // Round 2's second record moved a round further on (after a zeroed gap): no crash makes that.
    const bad = Buffer.from(whole);
    const [a, b] = parts[1]!;
    const gap = 4096;
    whole.copy(bad, b + gap, a, b);
    bad.fill(0, parts[0]![0], b + gap);
    await writeFile(segPath(), bad);
    await expect(fresh().load()).rejects.toBeInstanceOf(StorageCorruptError);
  });
});

describe('WalStorage: directory entries reach the disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-wal-dir-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // A power cut may keep a file's or directory's data yet lose its name unless the directory
  // holding the name is fsynced. Seen from the system calls of a real node process (strace).
  it('the data directory is fsynced after raft-wal is made, before the log is written', async () => {
    const script = join(dir, 'probe.mts');
    const dataDir = join(dir, 'data');
    await writeFile(
      script,
      `import { WalStorage } from ${JSON.stringify(new URL('../../src/raft/storage/wal-storage.ts', import.meta.url).pathname)};
import { silentLogger } from ${JSON.stringify(new URL('../../src/shared/logger.ts', import.meta.url).pathname)};
const s = process.argv[3] === 'roll'
  ? new WalStorage({ walDir: process.argv[2] + '/raft-wal', levelPath: process.argv[2] + '/raft', logger: silentLogger(), segmentBytes: 4096 })
  : WalStorage.forDataDir(process.argv[2], silentLogger(), 'n1');
await s.readIdentity();
await s.load();
await s.save({ hardState: { term: 1, vote: null, commit: 1 }, entries: [{ index: 1, term: 1, type: 'normal', data: new Uint8Array(4) }], snapshot: null });
const conf = { voters: ['n1'], learners: [], context: {} };
await s.saveSnapshot({ meta: { index: 1, term: 1, conf }, data: new Uint8Array(8) });
if (process.argv[3] === 'roll') {
  // Segments of 4 KiB: rounds roll over several, then a snapshot lets them go.
  for (let i = 2; i <= 200; i++)
    await s.save({ hardState: { term: 1, vote: null, commit: i }, entries: [{ index: i, term: 1, type: 'normal', data: new Uint8Array(100) }], snapshot: null });
  await s.saveSnapshot({ meta: { index: 190, term: 1, conf }, data: new Uint8Array(8) });
}
await s.close();
`,
    );
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dataDir);
    const trace = join(dir, 'trace');
    const { spawnSync } = await import('node:child_process');
    const run = spawnSync(
      'strace',
      [
        '-f',
        '-y',
        '-e',
        'trace=mkdir,rename,fsync',
        '-o',
        trace,
        process.execPath,
        '--import',
        'tsx',
        script,
        dataDir,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(run.status, run.stderr).toBe(0);
    const lines = (await readFile(trace, 'utf8')).split('\n');
    const made = lines.findIndex((l) => l.includes(`mkdir("${join(dataDir, 'raft-wal')}"`));
    const synced = lines.findIndex((l) => /fsync\(\d+</.test(l) && l.includes(`<${dataDir}>`));
    const firstSegment = lines.findIndex(
      (l) => l.includes('rename(') && l.includes(`${segmentName(1)}"`),
    );
    expect(made).toBeGreaterThanOrEqual(0);
    expect(firstSegment).toBeGreaterThan(made);
    expect(synced, 'no fsync of the data directory').toBeGreaterThan(made);
    expect(synced).toBeLessThan(firstSegment);
    // The snapshot directory likewise, before the record that names a file in it (and lets
    // the segments it covers go).
    const snapDir = join(dataDir, 'raft-snapshots');
    const snapMade = lines.findIndex((l) => l.includes(`mkdir("${snapDir}"`));
    const snapFile = lines.findIndex(
      (l) => l.includes('rename(') && l.includes(`${snapDir}/snap-`) && l.includes('.bin"'),
    );
    expect(snapMade).toBeGreaterThan(firstSegment);
    expect(snapFile).toBeGreaterThan(snapMade);
    const snapSynced = lines.findIndex(
      (l, i) => i > snapMade && /fsync\(\d+</.test(l) && l.includes(`<${dataDir}>`),
    );
    expect(snapSynced, 'no fsync of the data directory after raft-snapshots').toBeGreaterThan(
      snapMade,
    );
    expect(snapSynced).toBeLessThan(snapFile);

    // Segments a snapshot covers go oldest first, the directory synced after each one: a
    // power cut cannot keep a later unlink and lose an earlier one (a gap load refuses).
    const rolled = join(dir, 'rolled');
    await mkdir(rolled);
    const again = spawnSync(
      'strace',
      [
        '-f',
        '-y',
        '-e',
        'trace=unlink,fsync',
        '-o',
        trace,
        process.execPath,
        '--import',
        'tsx',
        script,
        rolled,
        'roll',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(again.status, again.stderr).toBe(0);
    const walDir = join(rolled, 'raft-wal');
    const ops = (await readFile(trace, 'utf8'))
      .split('\n')
      .filter((l) => l.includes(`unlink("${walDir}/`) || l.includes(`<${walDir}>`))
      .map((l) => (l.includes('unlink(') ? 'unlink' : 'sync'));
    const unlinks = ops.filter((o) => o === 'unlink').length;
    expect(unlinks).toBeGreaterThan(1);
    ops.forEach((o, i) => {
      if (o === 'unlink') expect(ops[i + 1], `op ${i} of ${ops.join(',')}`).toBe('sync');
    });
  });
});
