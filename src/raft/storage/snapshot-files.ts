/**
 * Snapshot data lives in files beside the LevelDB log (`<path>-snapshots/snap-<index>-<term>.bin`),
 * as etcd keeps its snap files beside its WAL: a multi-megabyte snapshot is written and
 * fsynced on its own file descriptor, in parallel with the log's rounds, instead of inside
 * the log's write chain (where every round behind it would wait, and the next round's
 * fsync would carry its megabytes). LevelDB then records, in one small synced batch, the
 * snapshot's meta naming the file, its size and checksum, and deletes the entries it covers.
 *
 * A file is written to `<name>.tmp`, fsynced, renamed, and the directory fsynced: a crash
 * leaves either no file or a whole one. Files no meta names (a crash between the file and
 * its meta, an older snapshot) are removed once a newer meta is durable, never one being
 * written.
 */
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { StorageCorruptError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Snapshot } from '../core/types.ts';
import { crc32 } from './crc32.ts';

const FILE_PATTERN = /^snap-(\d{16})-(\d{1,16})\.bin$/;

export interface SnapshotFile {
  file: string;
  bytes: number;
  crc: number;
}

export class SnapshotFiles {
  /** Files being written now: never removed under the writer. */
  private readonly writing = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {}

  static fileName(index: number, term: number): string {
    return `snap-${String(index).padStart(16, '0')}-${term}.bin`;
  }

  static isFileName(name: string): boolean {
    return FILE_PATTERN.test(name);
  }

  /** Writes and fsyncs the snapshot's data; resolves once the file is durable under its name. */
  async write(snapshot: Snapshot): Promise<SnapshotFile> {
    const file = SnapshotFiles.fileName(snapshot.meta.index, snapshot.meta.term);
    const data = snapshot.data;
    this.writing.add(file);
    try {
      // A new directory's name is made durable in its parent before a file in it is named by
      // a meta (which lets the log it covers go).
      if ((await mkdir(this.dir, { recursive: true })) !== undefined)
        await SnapshotFiles.syncDirAt(dirname(this.dir));
      const tmp = join(this.dir, `${file}.tmp`);
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(this.dir, file));
      await this.syncDir();
    } finally {
      this.writing.delete(file);
    }
    return { file, bytes: data.length, crc: crc32(data) };
  }

  /** Reads a snapshot file back and checks it against what its meta says. */
  async read(file: string, bytes: number, crc: number): Promise<Uint8Array> {
    if (!SnapshotFiles.isFileName(file))
      throw new StorageCorruptError(`snapshot meta names a malformed file ${JSON.stringify(file)}`);
    let data: Buffer;
    try {
      data = await readFile(join(this.dir, file));
    } catch (cause) {
      throw new StorageCorruptError(`snapshot file ${file} cannot be read`, { cause });
    }
    if (data.length !== bytes || crc32(data) !== crc) {
      throw new StorageCorruptError(
        `snapshot file ${file} does not match its meta (${data.length} bytes, meta says ${bytes})`,
      );
    }
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  }

  /**
   * Reads `length` bytes at `offset` of a snapshot file (a chunk to send to a follower):
   * StorageCorruptError if the file is missing or shorter than that. The whole file's
   * checksum is the receiver's to check (it gets the CRC recorded at write time).
   */
  async readAt(file: string, offset: number, length: number): Promise<Uint8Array> {
    if (!SnapshotFiles.isFileName(file))
      throw new StorageCorruptError(`snapshot meta names a malformed file ${JSON.stringify(file)}`);
    const out = new Uint8Array(length);
    let fh: FileHandle;
    try {
      fh = await open(join(this.dir, file), 'r');
    } catch (cause) {
      throw new StorageCorruptError(`snapshot file ${file} cannot be opened`, { cause });
    }
    try {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(out, done, length - done, offset + done);
        if (bytesRead === 0)
          throw new StorageCorruptError(
            `snapshot file ${file} ends before byte ${offset + length} (read ${offset + done})`,
          );
        done += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return out;
  }

  /** Removes every snapshot file but `keep` (and those being written). Best effort. */
  async removeAllBut(keep: string | null): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return; // no directory yet
    }
    for (const name of names) {
      const base = name.endsWith('.tmp') ? name.slice(0, -4) : name;
      if (name === keep || !SnapshotFiles.isFileName(base) || this.writing.has(base)) continue;
      await unlink(join(this.dir, name)).catch((err: unknown) =>
        this.logger.warn({ err, file: name }, 'could not remove an old snapshot file'),
      );
    }
  }

  private syncDir(): Promise<void> {
    return SnapshotFiles.syncDirAt(this.dir);
  }

  private static async syncDirAt(dir: string): Promise<void> {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}
