/**
 * The snapshot encoding of coordinator state. Replicas that applied the same commands must
 * produce byte-identical snapshots, so the encoding is canonical: every object's keys are
 * written in sorted order, live sessions are sorted by xid, and the two bounded maps whose
 * eviction depends on insertion order (dedup, recently finished) are written as arrays in
 * that order. msgpack maps without msgpackr records (records would make the bytes depend on
 * the encoder's history).
 */
import { Packr } from 'msgpackr';
import { AssertionFailure, StorageCorruptError } from '../shared/errors.ts';
import type { FinishedRecord, GlobalSession } from './types.ts';
import { compareStrings } from './lock-key.ts';

/**
 * 3: the latest command time (`commandTime`) and the time of each dedup entry.
 * 2: every branch records its application (`applicationId`).
 * Formats 1 and 2 are read: format 1's branches are given '' as their application; both
 * read as commandTime 0, their dedup entries as remembered at that time.
 */
export const SNAPSHOT_FORMAT_VERSION = 3;
/** Format 1 (before branches kept their application). */
const LEGACY_FORMAT_VERSION = 1;
const READABLE_VERSIONS: readonly number[] = [1, 2, 3];

export interface SnapshotData {
  version: number;
  /** Sorted by xid. */
  sessions: GlobalSession[];
  /** Oldest first (eviction order). */
  finished: FinishedRecord[];
  /**
   * [dedup key, result, command time remembered at], oldest first (eviction order). The
   * time is absent in format 1 and in the db store's partial states.
   */
  dedup: ([string, unknown] | [string, unknown, number])[];
  /**
   * The latest command time applied (ms): a new leader stamps no command below it.
   * Absent in format 1 and in the partial states the db store restores: 0.
   */
  commandTime?: number;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encodeSnapshot(data: SnapshotData): Uint8Array {
  const sorted = {
    ...data,
    sessions: [...data.sessions].sort((a, b) => compareStrings(a.xid, b.xid)),
  };
  return Uint8Array.from(packr.pack(canonical(sorted)));
}

/** Throws StorageCorruptError when the bytes are not a snapshot of this format. */
export function decodeSnapshot(bytes: Uint8Array): SnapshotData {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (err) {
    throw new StorageCorruptError('coordinator snapshot does not decode', { cause: err });
  }
  const data = value as Partial<SnapshotData> | null;
  if (typeof data !== 'object' || data === null)
    throw new StorageCorruptError('coordinator snapshot is not an object');
  if (!READABLE_VERSIONS.includes(data.version as number)) {
    throw new StorageCorruptError(
      `coordinator snapshot has format version ${String(data.version)}, this node reads ${READABLE_VERSIONS.join(' and ')}`,
    );
  }
  if (
    data.commandTime !== undefined &&
    !(Number.isSafeInteger(data.commandTime) && data.commandTime >= 0)
  )
    throw new StorageCorruptError('coordinator snapshot has a bad commandTime');
  if (
    !Array.isArray(data.sessions) ||
    !Array.isArray(data.finished) ||
    !Array.isArray(data.dedup)
  ) {
    throw new StorageCorruptError('coordinator snapshot lacks sessions, finished or dedup');
  }
  if (data.version === LEGACY_FORMAT_VERSION) return upgradeLegacy(data as SnapshotData);
  return data as SnapshotData;
}

/** A format-1 snapshot as the current format: its branches recorded no application (''). */
function upgradeLegacy(data: SnapshotData): SnapshotData {
  for (const session of data.sessions) {
    if (typeof session !== 'object' || session === null || !Array.isArray(session.branches))
      throw new StorageCorruptError('coordinator snapshot holds a session without branches');
    for (const branch of session.branches) {
      if (typeof branch !== 'object' || branch === null)
        throw new StorageCorruptError('coordinator snapshot holds a malformed branch');
      branch.applicationId ??= '';
    }
  }
  return { ...data, version: SNAPSHOT_FORMAT_VERSION };
}

/**
 * A copy with every plain object's keys in sorted order. `undefined` has no canonical
 * msgpack form (it could be dropped or written as nil), so state must not hold it.
 */
export function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === undefined)
    throw new AssertionFailure(
      'coordinator state holds undefined, which has no canonical encoding',
    );
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort(compareStrings))
    out[key] = canonical((value as Record<string, unknown>)[key]);
  return out;
}
