/**
 * Transaction and branch ids, and the xid format `"<tc-host>:<port>:<transactionId>"`.
 */
import { BadRequestError } from '../shared/errors.ts';
import { MAX_XID_CHARS } from './limits.ts';
import type { Clock, IdSource } from './ports.ts';

export interface ParsedXid {
  host: string;
  port: number;
  transactionId: string;
}

export function formatXid(host: string, port: number, transactionId: string): string {
  return `${host}:${port}:${transactionId}`;
}

/**
 * Parses and validates an xid from a client. Splits from the right, so an IPv6 host
 * (which holds ':') still parses. Throws BadRequestError.
 */
export function parseXid(xid: unknown): ParsedXid {
  if (typeof xid !== 'string' || xid.length === 0) throw new BadRequestError('xid is empty');
  if (xid.length > MAX_XID_CHARS)
    throw new BadRequestError(
      `xid is ${xid.length} characters, more than the limit of ${MAX_XID_CHARS}`,
    );
  const last = xid.lastIndexOf(':');
  const middle = last > 0 ? xid.lastIndexOf(':', last - 1) : -1;
  if (middle <= 0)
    throw new BadRequestError(`xid ${JSON.stringify(xid)} is not <host>:<port>:<transactionId>`);
  const host = xid.slice(0, middle);
  const portText = xid.slice(middle + 1, last);
  const transactionId = xid.slice(last + 1);
  const port = Number(portText);
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(host))
    throw new BadRequestError(`xid ${JSON.stringify(xid)} has a bad host`);
  if (!/^[0-9]{1,5}$/.test(portText) || port < 1 || port > 65_535)
    throw new BadRequestError(`xid ${JSON.stringify(xid)} has a bad port`);
  if (!/^[0-9]{1,20}$/.test(transactionId))
    throw new BadRequestError(`xid ${JSON.stringify(xid)} has a bad transaction id`);
  return { host, port, transactionId };
}

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
