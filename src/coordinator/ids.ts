/**
 * Snowflake transaction and branch ids. The xid format and its parsing are the shared
 * vocabulary's (src/shared/ids.ts).
 */
import type { Clock, IdSource } from './ports.ts';

/** Bits of a snowflake id: 41 of ms since SNOWFLAKE_EPOCH_MS, 10 of worker, 12 of sequence. */
const WORKER_BITS = 10n;
const SEQUENCE_BITS = 12n;
export const MAX_WORKER_ID = Number((1n << WORKER_BITS) - 1n);
const MAX_SEQUENCE = (1n << SEQUENCE_BITS) - 1n;
/** 2024-01-01T00:00:00Z: 41 bits of ms from here last until 2093. */
export const SNOWFLAKE_EPOCH_MS = 1_704_067_200_000;

/**
 * Snowflake ids (as Seata's IdWorker): unique across nodes through the worker id (give each
 * node its own, 0..1023) and across time through the timestamp. A burst of more than 4096
 * ids in one ms, or a clock that steps back, borrows from the future instead of waiting or
 * repeating: the timestamp part only ever grows.
 */
export function createSnowflakeIds(options: {
  workerId: number;
  clock: Pick<Clock, 'now'>;
}): IdSource {
  const { workerId, clock } = options;
  if (!Number.isInteger(workerId) || workerId < 0 || workerId > MAX_WORKER_ID) {
    throw new RangeError(`snowflake worker id ${workerId} is outside 0..${MAX_WORKER_ID}`);
  }
  let lastMs = 0n;
  let sequence = 0n;
  const next = (): string => {
    const nowMs = BigInt(Math.max(0, Math.floor(clock.now()) - SNOWFLAKE_EPOCH_MS));
    if (nowMs > lastMs) {
      lastMs = nowMs;
      sequence = 0n;
    } else if (sequence < MAX_SEQUENCE) {
      sequence += 1n;
    } else {
      lastMs += 1n;
      sequence = 0n;
    }
    return (
      (lastMs << (WORKER_BITS + SEQUENCE_BITS)) |
      (BigInt(workerId) << SEQUENCE_BITS) |
      sequence
    ).toString();
  };
  // One sequence for both kinds keeps every id of a node distinct, which logs appreciate.
  return { nextTransactionId: next, nextBranchId: next };
}
