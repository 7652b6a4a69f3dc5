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

/** 2: every branch records its application (`applicationId`). */
export const SNAPSHOT_FORMAT_VERSION = 2;
/** Format 1 (before branches kept their application) is read, its branches given ''. */
const LEGACY_FORMAT_VERSION = 1;

export interface SnapshotData {
  version: number;
  /** Sorted by xid. */
  sessions: GlobalSession[];
  /** Oldest first (eviction order). */
  finished: FinishedRecord[];
  /** [dedup key, result], oldest first (eviction order). */
  dedup: [string, unknown][];
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
  if (data.version !== SNAPSHOT_FORMAT_VERSION && data.version !== LEGACY_FORMAT_VERSION) {
    throw new StorageCorruptError(
      `coordinator snapshot has format version ${String(data.version)}, this node reads ${SNAPSHOT_FORMAT_VERSION}`,
    );
  }
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

/** A format-1 snapshot as format 2: its branches recorded no application (''). */
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
