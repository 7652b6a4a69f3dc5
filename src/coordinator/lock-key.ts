/**
 * Row lock keys. An RM sends the rows its branch will write as `table:pk1,pk2;table2:pk3`
 * (Seata's format) plus its resourceId; the TC locks each row as
 * `resourceId^^^table^^^pk`. Parsing is strict: anything odd is a typed BadRequestError,
 * never a silently different lock set (a lock that is not taken is a lost update).
 */
import { BadRequestError } from '../shared/errors.ts';
import {
  MAX_LOCK_KEY_CHARS,
  MAX_LOCK_ROWS_PER_BRANCH,
  MAX_PK_CHARS,
  MAX_RESOURCE_ID_CHARS,
  MAX_TABLE_NAME_CHARS,
} from './limits.ts';

export const ROW_KEY_SEPARATOR = '^^^';
const TABLE_SEPARATOR = ';';
const TABLE_PK_SEPARATOR = ':';
const PK_SEPARATOR = ',';

// Control characters never belong in a key; '^' would make row keys ambiguous.
// eslint-disable-next-line no-control-regex
const CONTROL_OR_CARET = /[\u0000-\u001f\u007f^]/;
// The grammar's own splits keep ';' out of every part and ',' out of every pk. A group
// splits at its FIRST ':' (as Seata does), so a pk may hold ':' (timestamps) while a
// table name may not hold ',' (it would read as a pk list of the wrong table).

export interface RowKeyParts {
  resourceId: string;
  table: string;
  pk: string;
}

export function rowKey(resourceId: string, table: string, pk: string): string {
  return `${resourceId}${ROW_KEY_SEPARATOR}${table}${ROW_KEY_SEPARATOR}${pk}`;
}

/** Inverse of rowKey (the parts contain no '^', so the split is unambiguous). */
export function splitRowKey(key: string): RowKeyParts {
  const parts = key.split(ROW_KEY_SEPARATOR);
  if (parts.length !== 3) throw new BadRequestError(`not a row key: ${JSON.stringify(key)}`);
  const [resourceId, table, pk] = parts as [string, string, string];
  return { resourceId, table, pk };
}

export function validateResourceId(resourceId: unknown): asserts resourceId is string {
  if (typeof resourceId !== 'string' || resourceId.length === 0)
    throw new BadRequestError('resourceId is empty');
  if (resourceId.length > MAX_RESOURCE_ID_CHARS) {
    throw new BadRequestError(
      `resourceId is ${resourceId.length} characters, more than the limit of ${MAX_RESOURCE_ID_CHARS}`,
    );
  }
  if (CONTROL_OR_CARET.test(resourceId))
    throw new BadRequestError(
      `resourceId ${JSON.stringify(resourceId)} holds a control character or '^'`,
    );
}

/**
 * Parses a lock key into its row keys: sorted, without duplicates (so the same rows
 * always make the same lock set, whatever order the RM listed them in).
 * Throws BadRequestError on: an empty key, an empty table group / table name / pk, a group
 * without ':', a bad character, a too long key, table or pk, more than
 * MAX_LOCK_ROWS_PER_BRANCH rows.
 */
export function parseLockKey(resourceId: string, lockKey: unknown): string[] {
  validateResourceId(resourceId);
  if (typeof lockKey !== 'string') throw new BadRequestError('lock key is not a string');
  if (lockKey.length === 0) throw new BadRequestError('lock key is empty');
  if (lockKey.length > MAX_LOCK_KEY_CHARS) {
    throw new BadRequestError(
      `lock key is ${lockKey.length} characters, more than the limit of ${MAX_LOCK_KEY_CHARS}`,
    );
  }
  if (CONTROL_OR_CARET.test(lockKey))
    throw new BadRequestError("lock key holds a control character or '^'");

  const rows = new Set<string>();
  const groups = lockKey.split(TABLE_SEPARATOR);
  for (const [g, group] of groups.entries()) {
    if (group.length === 0) throw new BadRequestError(`lock key table group ${g + 1} is empty`);
    const colon = group.indexOf(TABLE_PK_SEPARATOR);
    if (colon < 0)
      throw new BadRequestError(
        `lock key table group ${JSON.stringify(clip(group))} has no ':' between table and primary keys`,
      );
    const table = group.slice(0, colon);
    if (table.length === 0)
      throw new BadRequestError(`lock key table group ${g + 1} has an empty table name`);
    if (table.length > MAX_TABLE_NAME_CHARS) {
      throw new BadRequestError(
        `lock key table name is ${table.length} characters, more than the limit of ${MAX_TABLE_NAME_CHARS}`,
      );
    }
    if (table.includes(PK_SEPARATOR))
      throw new BadRequestError(`lock key table name ${JSON.stringify(clip(table))} holds ','`);
    const pks = group.slice(colon + 1);
    if (pks.length === 0)
      throw new BadRequestError(
        `lock key table ${JSON.stringify(clip(table))} lists no primary keys`,
      );
    for (const pk of pks.split(PK_SEPARATOR)) {
      if (pk.length === 0)
        throw new BadRequestError(
          `lock key table ${JSON.stringify(clip(table))} has an empty primary key`,
        );
      if (pk.length > MAX_PK_CHARS) {
        throw new BadRequestError(
          `lock key primary key is ${pk.length} characters, more than the limit of ${MAX_PK_CHARS}`,
        );
      }
      rows.add(rowKey(resourceId, table, pk));
      if (rows.size > MAX_LOCK_ROWS_PER_BRANCH) {
        throw new BadRequestError(
          `lock key names more than ${MAX_LOCK_ROWS_PER_BRANCH} rows, the limit for one branch`,
        );
      }
    }
  }
  // Code-unit order: deterministic on every replica, independent of locale.
  return [...rows].sort(compareStrings);
}

/** Deterministic string order (UTF-16 code units), never localeCompare. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
