/**
 * Seata's numeric codes as the TC protocol carries them (proto/tc.proto), and the names the
 * client speaks. The tables live once, in src/shared/tc-vocabulary.ts, shared with the
 * coordinator.
 */
import {
  BRANCH_STATUS_CODES,
  BRANCH_TYPE_CODES,
  GLOBAL_STATUS_CODES,
} from '../../shared/tc-vocabulary.ts';

export { BRANCH_STATUS_CODES, BRANCH_TYPE_CODES, GLOBAL_STATUS_CODES };

export type GlobalStatusName = keyof typeof GLOBAL_STATUS_CODES;

export type BranchStatusName = keyof typeof BRANCH_STATUS_CODES;

export type BranchTypeName = keyof typeof BRANCH_TYPE_CODES;

function invert<K extends string>(table: Readonly<Record<K, number>>): ReadonlyMap<number, K> {
  return new Map(Object.entries(table).map(([name, code]) => [code as number, name as K]));
}

const GLOBAL_BY_CODE = invert<GlobalStatusName>(GLOBAL_STATUS_CODES);
const BRANCH_BY_CODE = invert<BranchStatusName>(BRANCH_STATUS_CODES);
const TYPE_BY_CODE = invert<BranchTypeName>(BRANCH_TYPE_CODES);

/** A code the client does not know reads as Unknown (a newer server may add statuses). */
export function globalStatusName(code: number): GlobalStatusName {
  return GLOBAL_BY_CODE.get(code) ?? 'Unknown';
}

export function branchStatusName(code: number): BranchStatusName {
  return BRANCH_BY_CODE.get(code) ?? 'Unknown';
}

/** Null for a code the client does not know. */
export function branchTypeName(code: number): BranchTypeName | null {
  return TYPE_BY_CODE.get(code) ?? null;
}

export function isGlobalStatusName(value: unknown): value is GlobalStatusName {
  return typeof value === 'string' && Object.hasOwn(GLOBAL_STATUS_CODES, value);
}

export function isBranchStatusName(value: unknown): value is BranchStatusName {
  return typeof value === 'string' && Object.hasOwn(BRANCH_STATUS_CODES, value);
}

export function isBranchTypeName(value: unknown): value is BranchTypeName {
  return typeof value === 'string' && Object.hasOwn(BRANCH_TYPE_CODES, value);
}
