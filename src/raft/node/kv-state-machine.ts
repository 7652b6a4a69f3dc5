/**
 * A tiny replicated key-value store: the state machine the test node and the benchmark run
 * on the Raft. Deterministic: apply depends only on the current map and the command.
 */
import { Packr } from 'msgpackr';
import type { StateMachine } from '../ports.ts';

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
    const s = packr.unpack(data) as { entries: Array<[string, string]> };
    this.map = new Map(s.entries);
    this.appliedIndex = index;
  }
}
