/**
 * What one durable write costs on this box: `npm run bench -- fsync [--writes 400] [--dir DIR]`.
 *
 * Each variant writes `--writes` records one after another (each waits for the previous,
 * like the Raft rounds of one node at 1 TM), for a record of ~300 B (one empty-scenario
 * entry) and of ~20 KB (a busy round), and prints per variant the median and p99 wall time
 * of one write, the main thread's busy time per write (event-loop utilization's active
 * time: the synchronous CPU the write takes from the node's loop) and the process CPU per
 * write (user + system, every thread: LevelDB's and libuv's pool included).
 *
 *  - LevelDbStorage.save of one round (hard state + 1 entry), `sync: true`: the storage before
 *    the WAL (a data directory written before it still runs on it).
 *  - WalStorage.save of the same round: the record's encode and one O_DSYNC overwrite.
 *  - append+fdatasync: write at the end of a growing file, then fdatasync (the size changes,
 *    so the inode's metadata is flushed too).
 *  - prealloc pwrite+fdatasync: overwrite of a zero-filled, fsynced file, then fdatasync
 *    (two pool hops).
 *  - prealloc O_DSYNC pwrite: the same file opened O_DSYNC, one write that returns durable
 *    (one pool hop).
 *  - prealloc O_DSYNC sync call: the same, as one writeSync on the main thread (blocks the
 *    loop for the whole device flush; for reference only).
 *
 * The directory defaults to os.tmpdir(), where the benches' nodes keep their data.
 * `--storages-only --sizes 20000 --writes 3000`: the two storages alone over 60 MB of
 * rounds, so that the WAL rolls over segments (and zero-fills the next ones) meanwhile.
 */
import { closeSync, constants, fsyncSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { LevelDbStorage } from '../src/raft/storage/leveldb-storage.ts';
import { WalStorage } from '../src/raft/storage/wal-storage.ts';
import { silentLogger } from '../src/shared/logger.ts';

interface Row {
  variant: string;
  bytes: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  loopUs: number;
  cpuUs: number;
}

const PREALLOC_BYTES = 64 * 1024 * 1024;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function measure(
  variant: string,
  bytes: number,
  writes: number,
  one: (i: number) => Promise<void> | void,
): Promise<Row> {
  for (let i = 0; i < 20; i++) await one(i); // warm-up
  const times: number[] = [];
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  for (let i = 20; i < writes + 20; i++) {
    const t0 = performance.now();
    await one(i);
    times.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  times.sort((a, b) => a - b);
  return {
    variant,
    bytes,
    p50: quantile(times, 0.5),
    p99: quantile(times, 0.99),
    p999: quantile(times, 0.999),
    max: times[times.length - 1]!,
    loopUs: (elu.active * 1000) / writes,
    cpuUs: (cpu.user + cpu.system) / writes,
  };
}

async function preallocate(path: string): Promise<void> {
  const fd = openSync(path, 'w');
  const zeros = Buffer.alloc(1024 * 1024);
  for (let off = 0; off < PREALLOC_BYTES; off += zeros.length)
    writeSync(fd, zeros, 0, zeros.length, off);
  fsyncSync(fd);
  closeSync(fd);
  // The directory entry too, as a WAL would.
  const dir = await open(join(path, '..'), 'r');
  await dir.sync();
  await dir.close();
}

/** One storage's save of a round: hard state + one entry whose data makes the record's size. */
async function measureStorage(
  label: string,
  storage: LevelDbStorage | WalStorage,
  bytes: number,
  writes: number,
): Promise<Row> {
  await storage.load();
  const data = new Uint8Array(Math.max(1, bytes - 40)).fill(0x5a);
  try {
    return await measure(label, bytes, writes, (i) =>
      storage.save({
        hardState: { term: 1, vote: null, commit: i },
        entries: [{ index: i + 1, term: 1, type: 'normal', data }],
        snapshot: null,
      }),
    );
  } finally {
    await storage.close();
  }
}

/** The five variants for one record size. */
async function measureSize(
  root: string,
  bytes: number,
  writes: number,
  storagesOnly: boolean,
): Promise<Row[]> {
  const rows: Row[] = [];
  const record = Buffer.alloc(bytes, 0x5a);
  const logger = silentLogger();
  const level = new LevelDbStorage({ path: join(root, `level-${bytes}`), logger });
  rows.push(await measureStorage('LevelDbStorage.save (hs + 1 entry)', level, bytes, writes));
  const wal = new WalStorage({
    walDir: join(root, `wal-${bytes}`),
    levelPath: join(root, `wal-level-${bytes}`),
    logger,
  });
  rows.push(await measureStorage('WalStorage.save (hs + 1 entry)', wal, bytes, writes));
  if (storagesOnly) return rows;
  {
    const fh = await open(join(root, `append-${bytes}`), 'w');
    let off = 0;
    rows.push(
      await measure('append + fdatasync', bytes, writes, async () => {
        await fh.write(record, 0, bytes, off);
        off += bytes;
        await fh.datasync();
      }),
    );
    await fh.close();
  }
  const pre = join(root, `prealloc-${bytes}`);
  await preallocate(pre);
  {
    const fh = await open(pre, 'r+');
    let off = 0;
    rows.push(
      await measure('prealloc pwrite + fdatasync', bytes, writes, async () => {
        await fh.write(record, 0, bytes, off);
        off += bytes;
        await fh.datasync();
      }),
    );
    await fh.close();
  }
  {
    const fh = await open(pre, constants.O_RDWR | constants.O_DSYNC);
    let off = 0;
    rows.push(
      await measure('prealloc O_DSYNC pwrite (async)', bytes, writes, async () => {
        await fh.write(record, 0, bytes, off);
        off += bytes;
      }),
    );
    await fh.close();
  }
  {
    const fd = openSync(pre, constants.O_RDWR | constants.O_DSYNC);
    let off = 0;
    rows.push(
      await measure('prealloc O_DSYNC writeSync (loop blocked)', bytes, writes, () => {
        writeSync(fd, record, 0, bytes, off);
        off += bytes;
      }),
    );
    closeSync(fd);
  }
  return rows;
}

export async function main(argv: string[]): Promise<void> {
  const opts = new Command()
    .option('--writes <n>', 'writes per variant and size', '400')
    .option('--dir <dir>', 'directory to write in (default: os.tmpdir())')
    .option('--sizes <list>', 'record sizes in bytes', '300,20000')
    .option('--storages-only', 'only LevelDbStorage and WalStorage (e.g. sustained: --writes 3000)')
    .parse(['node', 'fsync', ...argv])
    .opts<{ writes: string; dir?: string; sizes: string; storagesOnly?: boolean }>();
  const writes = Number(opts.writes);
  const sizes = opts.sizes.split(',').map(Number);
  const root = await mkdtemp(join(opts.dir ?? tmpdir(), 'concord-fsync-'));
  const rows: Row[] = [];
  try {
    for (const bytes of sizes)
      rows.push(...(await measureSize(root, bytes, writes, opts.storagesOnly === true)));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  const f = (n: number): string => n.toFixed(3);
  process.stdout.write(
    `| variant | record B | p50 ms | p99 ms | p99.9 ms | max ms | loop µs/write | CPU µs/write |\n` +
      `| --- | --- | --- | --- | --- | --- | --- | --- |\n`,
  );
  for (const r of rows)
    process.stdout.write(
      `| ${r.variant} | ${r.bytes} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.p999)} | ${f(r.max)} | ${r.loopUs.toFixed(0)} | ${r.cpuUs.toFixed(0)} |\n`,
    );
}
