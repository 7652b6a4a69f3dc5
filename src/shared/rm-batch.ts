/**
 * Batches on the RM channel (proto/tc.proto PhaseTwoBatch, BranchResultBatch): the bounds
 * both sides keep, the size estimate a sender packs by and a receiver checks by, and the
 * receiver's check of a peer's batch. A batch is checked whole before anything in it is used:
 * a malformed one is refused as a whole (MalformedBatchError) and changes nothing.
 */
import { BadRequestError, assert } from './errors.ts';
import { MAX_APPLICATION_DATA_BYTES, MAX_REQUEST_ID_CHARS } from './protocol-limits.ts';
import type {
  BranchResultBatchWire,
  BranchResultWire,
  PhaseTwoBatchWire,
  PhaseTwoRequestWire,
} from './tc-wire.ts';

/** Requests in one PhaseTwoBatch, and results in one BranchResultBatch, at most. */
export const MAX_RM_BATCH_ENTRIES = 256;
/**
 * Estimated bytes of one batch (rmRequestBytes / rmResultBytes summed), at most: a sender
 * starts a new message before it would pass this, a receiver refuses a batch past it. Well
 * under the 8 MiB message limit, so one batch never blocks a stream for long.
 */
export const MAX_RM_BATCH_BYTES = 1024 * 1024;
/** Field tags, lengths and a branch type or status, per entry, bytes (generous). */
const ENTRY_OVERHEAD_BYTES = 64;
/** UTF-8 bytes per UTF-16 code unit, at most. */
const MAX_BYTES_PER_CHAR = 3;

/** A peer's batch is empty, over its bounds, or malformed: refused whole, nothing taken. */
export class MalformedBatchError extends BadRequestError {}

/** An upper bound of one phase-two request's encoded size, bytes. */
export function rmRequestBytes(r: PhaseTwoRequestWire): number {
  const chars =
    (r.requestId?.length ?? 0) +
    (r.xid?.length ?? 0) +
    (r.branchId?.length ?? 0) +
    (r.resourceId?.length ?? 0) +
    (r.applicationId?.length ?? 0);
  // Application data is bounded in bytes where the branch registered.
  const data = Math.min(
    (r.applicationData?.length ?? 0) * MAX_BYTES_PER_CHAR,
    MAX_APPLICATION_DATA_BYTES,
  );
  return ENTRY_OVERHEAD_BYTES + chars * MAX_BYTES_PER_CHAR + data;
}

/** An upper bound of one result's encoded size, bytes. */
export function rmResultBytes(r: BranchResultWire): number {
  const chars =
    (r.requestId?.length ?? 0) + (r.message?.length ?? 0) + (r.error ? errorChars(r.error) : 0);
  return ENTRY_OVERHEAD_BYTES + chars * MAX_BYTES_PER_CHAR;
}

function errorChars(e: NonNullable<BranchResultWire['error']>): number {
  return (
    (e.message?.length ?? 0) +
    (e.holdingXid?.length ?? 0) +
    (e.rows?.reduce((n, row) => n + row.length + 2, 0) ?? 0) +
    (e.leader ? (e.leader.nodeId?.length ?? 0) + (e.leader.host?.length ?? 0) + 8 : 0) +
    16
  );
}

/** A request id as a batch entry must carry it: a non-empty string within its bound. */
function requireRequestId(id: unknown, seen: Set<string>, what: string): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_REQUEST_ID_CHARS)
    throw new MalformedBatchError(
      `every ${what} needs a request id of 1..${MAX_REQUEST_ID_CHARS} characters`,
    );
  if (seen.has(id)) throw new MalformedBatchError(`request id ${id} is twice in one ${what} batch`);
  seen.add(id);
  return id;
}

function requireCount(n: number, what: string): void {
  if (n === 0) throw new MalformedBatchError(`a ${what} batch is empty`);
  if (n > MAX_RM_BATCH_ENTRIES)
    throw new MalformedBatchError(
      `a ${what} batch holds at most ${MAX_RM_BATCH_ENTRIES} entries, not ${n}`,
    );
}

function requireBytes(bytes: number, what: string): void {
  if (bytes > MAX_RM_BATCH_BYTES)
    throw new MalformedBatchError(
      `a ${what} batch is at most ${MAX_RM_BATCH_BYTES} bytes, not about ${bytes}`,
    );
}

/** A phase-two request of a checked batch, with its kind. */
export interface BatchedRequest {
  kind: 'commit' | 'rollback';
  request: PhaseTwoRequestWire;
}

/**
 * The requests of a peer's PhaseTwoBatch, checked whole (count, bytes, request ids present
 * and distinct). Throws MalformedBatchError; the values of each request are for its handler
 * to check, as for a single request.
 */
export function checkPhaseTwoBatch(batch: PhaseTwoBatchWire | null | undefined): BatchedRequest[] {
  const commits = Array.isArray(batch?.commits) ? batch.commits : [];
  const rollbacks = Array.isArray(batch?.rollbacks) ? batch.rollbacks : [];
  requireCount(commits.length + rollbacks.length, 'phase-two');
  const seen = new Set<string>();
  const out: BatchedRequest[] = [];
  let bytes = 0;
  for (const [kind, list] of [
    ['commit', commits],
    ['rollback', rollbacks],
  ] as const) {
    for (const request of list) {
      requireRequestId(request?.requestId, seen, 'phase-two');
      bytes += rmRequestBytes(request);
      out.push({ kind, request });
    }
  }
  requireBytes(bytes, 'phase-two');
  return out;
}

/** The results of a peer's BranchResultBatch, checked whole. Throws MalformedBatchError. */
export function checkResultBatch(
  batch: BranchResultBatchWire | null | undefined,
): BranchResultWire[] {
  const results = Array.isArray(batch?.results) ? batch.results : [];
  requireCount(results.length, 'result');
  const seen = new Set<string>();
  let bytes = 0;
  for (const r of results) {
    requireRequestId(r?.requestId, seen, 'result');
    bytes += rmResultBytes(r);
  }
  requireBytes(bytes, 'result');
  return results;
}

/**
 * Splits `entries` into runs that each fit one batch (count and estimated bytes), in order.
 * An entry is never larger than a batch (its fields are bounded).
 */
export function* batchRuns<T>(entries: readonly T[], bytesOf: (e: T) => number): Generator<T[]> {
  let run: T[] = [];
  let bytes = 0;
  for (const e of entries) {
    const b = bytesOf(e);
    assert(b <= MAX_RM_BATCH_BYTES, () => `one batch entry of about ${b} bytes exceeds a batch`);
    if (run.length > 0 && (run.length >= MAX_RM_BATCH_ENTRIES || bytes + b > MAX_RM_BATCH_BYTES)) {
      yield run;
      run = [];
      bytes = 0;
    }
    run.push(e);
    bytes += b;
  }
  if (run.length > 0) yield run;
}
