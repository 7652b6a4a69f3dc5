/**
 * A tiny replicated key-value store: the state machine the test node and the benchmark run
 * on the Raft. Deterministic: apply depends only on the current map and the command.
 */
import { Packr } from 'msgpackr';
import { StorageCorruptError } from '../../src/shared/errors.ts';
import type { StateMachine } from '../../src/raft/ports.ts';

/** Bounds on one command, checked at the HTTP edge before proposing. */
export const MAX_KV_KEY_BYTES = 1024;
export const MAX_KV_VALUE_BYTES = 256 * 1024;

export type KvCommand = { op: 'put'; key: string; value: string } | { op: 'del'; key: string };

export interface KvApplyResult {
  index: number;
  /** For del: whether the key existed. */
  existed?: boolean;
}

const packr = new Packr({ useRecords: false });

export function encodeKvCommand(cmd: KvCommand): Uint8Array {
  return packr.pack(cmd);
}

export class KvStateMachine implements StateMachine {
  private map = new Map<string, string>();
  private appliedIndex = 0;

  get applied(): number {
    return this.appliedIndex;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): string | undefined {
    return this.map.get(key);
  }

  entries(prefix = ''): Array<[string, string]> {
    return [...this.map]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  apply(index: number, data: Uint8Array): KvApplyResult {
    this.appliedIndex = index;
    let cmd: unknown;
    try {
      cmd = packr.unpack(data);
    } catch {
      // The edge validates commands; a committed garbage entry is skipped identically everywhere.
      return { index };
    }
    const c = cmd as Partial<KvCommand>;
    if (c.op === 'put' && typeof c.key === 'string' && typeof c.value === 'string') {
      this.map.set(c.key, c.value);
      return { index };
    }
    if (c.op === 'del' && typeof c.key === 'string') {
      return { index, existed: this.map.delete(c.key) };
    }
    return { index };
  }

  snapshot(): Uint8Array {
    // Insertion order, not sorted: a snapshot is taken every few thousand entries of a
    // growing map, and its order carries no meaning (restore rebuilds the map).
    return packr.pack({ applied: this.appliedIndex, entries: [...this.map] });
  }

  restore(data: Uint8Array, index: number): void {
    this.map = decodeKvSnapshot(data);
    this.appliedIndex = index;
  }

  validateSnapshot(data: Uint8Array): void {
    decodeKvSnapshot(data);
  }
}

/** Decodes a snapshot into a fresh map; StorageCorruptError if it is not one. */
export function decodeKvSnapshot(data: Uint8Array): Map<string, string> {
  let s: unknown;
  try {
    s = packr.unpack(data);
  } catch (cause) {
    throw new StorageCorruptError('kv snapshot does not decode', { cause });
  }
  const entries = (s as { entries?: unknown } | null)?.entries;
  if (!Array.isArray(entries)) throw new StorageCorruptError('kv snapshot has no entries list');
  const map = new Map<string, string>();
  for (const e of entries) {
    if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'string')
      throw new StorageCorruptError('kv snapshot holds an entry that is not [key, value]');
    map.set(e[0], e[1]);
  }
  return map;
}
