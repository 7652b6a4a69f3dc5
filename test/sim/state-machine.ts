/**
 * A small deterministic state machine for the simulator: a key-value map plus a hash chain
 * over every applied (index, data), so two replicas that applied the same entries in the
 * same order hold the same hash, and any skip, reorder or divergence shows.
 */
import type { SnapshotCapture, StateMachine } from '../../src/raft/ports.ts';

/** Keys per step of a sliced snapshot (small: the simulator's states are small). */
const KEYS_PER_SLICE = 4;
import { StorageCorruptError } from '../../src/shared/errors.ts';
import { bytesKey } from './invariants.ts';

export interface SimStateObserver {
  onApply(index: number, payload: string, hash: number): void;
  onRestore(index: number, stateIndex: number, hash: number): void;
}

export interface SimApplyResult {
  index: number;
  hash: number;
  previous: string | null;
}

interface Encoded {
  lastIndex: number;
  hash: number;
  count: number;
  kv: Array<[string, string]>;
}

/** FNV-1a style mixing of one (index, bytes) into a 32-bit hash. */
export function mixHash(hash: number, index: number, data: Uint8Array): number {
  let h = (hash ^ 0x811c9dc5) >>> 0;
  h = Math.imul(h ^ (index & 0xffff), 16777619) >>> 0;
  h = Math.imul(h ^ (index >>> 16), 16777619) >>> 0;
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ (data[i] as number), 16777619) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d) >>> 0;
  return (h ^ (h >>> 12)) >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Payloads look like `<client seq>|<key>=<value>`; anything else is stored under its own text. */
export function encodePayload(seq: number, key: string, value: string): Uint8Array {
  return encoder.encode(`${seq}|${key}=${value}`);
}

export class SimStateMachine implements StateMachine {
  lastIndex = 0;
  hash = 0;
  count = 0;
  private kv = new Map<string, string>();
  /** Set by the world; a broken variant for negative tests may be swapped in. */
  observer: SimStateObserver | null = null;

  apply(index: number, data: Uint8Array): SimApplyResult {
    if (index <= this.lastIndex)
      throw new Error(`state machine: apply ${index} after ${this.lastIndex}`);
    const payload = bytesKey(data);
    const bar = payload.indexOf('|');
    const eq = payload.indexOf('=', bar + 1);
    const key = eq > 0 ? payload.slice(bar + 1, eq) : payload;
    const value = eq > 0 ? payload.slice(eq + 1) : '';
    const previous = this.kv.get(key) ?? null;
    this.kv.set(key, value);
    this.lastIndex = index;
    this.count++;
    this.hash = mixHash(this.hash, index, data);
    this.observer?.onApply(index, payload, this.hash);
    return { index, hash: this.hash, previous };
  }

  get(key: string): string | undefined {
    return this.kv.get(key);
  }

  snapshot(): Uint8Array {
    const enc: Encoded = {
      lastIndex: this.lastIndex,
      hash: this.hash,
      count: this.count,
      kv: [...this.kv.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    };
    return encoder.encode(JSON.stringify(enc));
  }

  /**
   * snapshot()'s bytes in slices (one step per KEYS_PER_SLICE keys), as a large state machine
   * makes them: every step checks nothing was applied or restored since the capture began
   * (the driver holds its applies until the last slice).
   */
  snapshotInSlices(): SnapshotCapture {
    const at = { lastIndex: this.lastIndex, count: this.count, hash: this.hash };
    let steps = Math.ceil(this.kv.size / KEYS_PER_SLICE);
    return {
      step: () => {
        if (this.lastIndex !== at.lastIndex || this.count !== at.count || this.hash !== at.hash)
          throw new Error(
            `state machine: applied or restored during a sliced snapshot (at ${at.lastIndex}, now ${this.lastIndex})`,
          );
        return steps-- > 0 ? null : this.snapshot();
      },
    };
  }

  /**
   * Throws if the bytes are not a snapshot of this state machine (decoded apart from the live
   * state).
   */
  validateSnapshot(data: Uint8Array): void {
    decodeSimSnapshot(data);
  }

  restore(data: Uint8Array, index: number): void {
    const enc = decodeSimSnapshot(data);
    this.lastIndex = enc.lastIndex;
    this.hash = enc.hash;
    this.count = enc.count;
    this.kv = new Map(enc.kv);
    this.observer?.onRestore(index, enc.lastIndex, enc.hash);
  }
}

function decodeSimSnapshot(data: Uint8Array): Encoded {
  let enc: Partial<Encoded>;
  try {
    enc = JSON.parse(decoder.decode(data)) as Partial<Encoded>;
  } catch (cause) {
    throw new StorageCorruptError('sim snapshot does not decode', { cause });
  }
  if (
    typeof enc !== 'object' ||
    enc === null ||
    !Number.isInteger(enc.lastIndex) ||
    !Number.isInteger(enc.hash) ||
    !Number.isInteger(enc.count) ||
    !Array.isArray(enc.kv)
  )
    throw new StorageCorruptError('sim snapshot lacks lastIndex, hash, count or kv');
  return enc as Encoded;
}
