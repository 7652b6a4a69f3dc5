/**
 * Fence keys and ops: validation and the TCC/Saga pairing.
 */
import { BadRequestError } from '../../shared/errors.ts';
import { assertValidXid } from '../context.ts';
import { MAX_BRANCH_ID, MAX_BRANCH_ID_DIGITS, MAX_FENCE_TABLE_NAME_CHARS } from './limits.ts';

/** TCC: try, confirm, cancel. Saga: action, compensate. */
export type FenceOp = 'try' | 'confirm' | 'cancel' | 'action' | 'compensate';
export const FENCE_OPS: readonly FenceOp[] = ['try', 'confirm', 'cancel', 'action', 'compensate'];

/**
 * - executed: the fence let the callback run, and it committed together with the fence row.
 * - duplicate: this op already ran (or its try/action already ran, for try/action): nothing done.
 * - emptyRollback: a cancel/compensate whose try/action never ran: recorded, callback skipped.
 * - hangingRefused: a try/action that arrived after its cancel/compensate: refused, callback
 *   skipped.
 */
export type FenceOutcome = 'executed' | 'duplicate' | 'emptyRollback' | 'hangingRefused';

export interface FenceKey {
  /** `<host>:<port>:<transactionId>`. */
  xid: string;
  /** Unsigned 64-bit branch id, as a decimal string or a bigint. */
  branchId: string | bigint;
  op: FenceOp;
}

export interface NormalizedFenceKey {
  readonly xid: string;
  /** Canonical decimal (no sign, no leading zeros): the form stored, so one id has one key. */
  readonly branchId: string;
  readonly op: FenceOp;
}

/** The op whose row a compensating op claims first: cancel → try, compensate → action. */
export const ORIGIN_OP: Readonly<Partial<Record<FenceOp, FenceOp>>> = {
  cancel: 'try',
  compensate: 'action',
};
/**
 * The op whose row must exist, written by that op itself, before this one may run: confirm → try.
 */
export const REQUIRED_OP: Readonly<Partial<Record<FenceOp, FenceOp>>> = {
  confirm: 'try',
};
/** The op that, having claimed an origin row, makes a later try/action a hanging one. */
export const COMPENSATING_OP: Readonly<Partial<Record<FenceOp, FenceOp>>> = {
  try: 'cancel',
  action: 'compensate',
};

const BRANCH_ID = new RegExp(`^(?:0|[1-9][0-9]{0,${MAX_BRANCH_ID_DIGITS - 1}})$`);

export function normalizeBranchId(branchId: unknown): string {
  let text: string;
  if (typeof branchId === 'bigint') text = branchId.toString();
  else if (typeof branchId === 'string') text = branchId;
  else
    throw new BadRequestError(
      `branchId must be a decimal string or a bigint, got ${typeof branchId}`,
    );
  if (!BRANCH_ID.test(text) || BigInt(text) > MAX_BRANCH_ID) {
    throw new BadRequestError(
      `branchId must be an unsigned 64-bit integer in canonical decimal, got ${JSON.stringify(text.slice(0, 40))}`,
    );
  }
  return text;
}

export function isFenceOp(op: unknown): op is FenceOp {
  return typeof op === 'string' && (FENCE_OPS as readonly string[]).includes(op);
}

export function normalizeFenceKey(key: unknown): NormalizedFenceKey {
  if (typeof key !== 'object' || key === null)
    throw new BadRequestError('fence key must be an object { xid, branchId, op }');
  const { xid, branchId, op } = key as Record<string, unknown>;
  assertValidXid(xid, 'fence key xid');
  if (!isFenceOp(op))
    throw new BadRequestError(
      `fence key op must be one of ${FENCE_OPS.join(', ')}, got ${JSON.stringify(op)}`,
    );
  return { xid, branchId: normalizeBranchId(branchId), op };
}

const TABLE_PART = /^[a-z_][a-z0-9_]*$/;

/**
 * A fence table name: `table`, or `schema.table` (PostgreSQL) / `database.table` (MySQL).
 * Lower-case identifiers only, so the quoted name we create is the same name an unquoted
 * query finds (PostgreSQL folds unquoted names to lower case).
 */
export function parseTableName(name: unknown): { schema: string | null; table: string } {
  if (typeof name !== 'string') throw new BadRequestError('fence table must be a string');
  const parts = name.split('.');
  const valid =
    parts.length <= 2 &&
    parts.every(
      (p) => p.length > 0 && p.length <= MAX_FENCE_TABLE_NAME_CHARS && TABLE_PART.test(p),
    );
  if (!valid) {
    throw new BadRequestError(
      `fence table must be "table" or "schema.table" of lower-case identifiers ([a-z_][a-z0-9_]*, at most ${MAX_FENCE_TABLE_NAME_CHARS} characters each), got ${JSON.stringify(name.slice(0, 120))}`,
    );
  }
  return parts.length === 2
    ? { schema: parts[0] ?? null, table: parts[1] ?? '' }
    : { schema: null, table: parts[0] ?? '' };
}

export function checkIntegerOption(
  name: string,
  value: unknown,
  min: number,
  max: number,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new BadRequestError(
      `${name} must be an integer in [${min}, ${max}], got ${String(value)}`,
    );
  }
  return value;
}
