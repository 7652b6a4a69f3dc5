/**
 * The undo log's content: row images and their versioned, compact encoding.
 *
 * A value is read from the database as its canonical text (PostgreSQL's output functions,
 * MySQL's text protocol), never through a JavaScript type: numeric keeps every digit, a
 * timestamp every microsecond, jsonb its normal form; binary values are kept as bytes
 * (base64). Text goes back into the same column type through the database's own input
 * functions, so a before image restores exactly and images compare by equality of text.
 *
 * Format v1: JSON `{ v: 1, items: UndoItem[] }`, deflated when larger than
 * UNDO_DEFLATE_BYTES; the `context` column names it ('v1;json' or 'v1;json;deflate').
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { AtUndoFormatError } from './errors.ts';

/** A column value as text, null, or bytes (base64). */
export type ImageValue = string | null | { b64: string };

export interface Image {
  cols: string[];
  rows: ImageValue[][];
}

export type UndoOp = 'insert' | 'update' | 'delete';

/** One statement's images. */
export interface UndoItem {
  op: UndoOp;
  /** Schema (PostgreSQL) or database (MySQL) and table, as resolved from the catalog. */
  schema: string;
  table: string;
  /** The primary key's columns, in key order. */
  pk: string[];
  cols: string[];
  /** Rows before the statement (update, delete); [] for insert. */
  before: ImageValue[][];
  /** Rows after it, by primary key (insert, update); [] for delete. */
  after: ImageValue[][];
}

export interface UndoLog {
  v: 1;
  items: UndoItem[];
}

export const UNDO_FORMAT_VERSION = 1;
/** Undo logs larger than this are deflated, bytes. */
export const UNDO_DEFLATE_BYTES = 4096;

export function encodeUndo(log: UndoLog): { context: string; info: Buffer } {
  const json = Buffer.from(JSON.stringify(log), 'utf8');
  if (json.length <= UNDO_DEFLATE_BYTES) return { context: 'v1;json', info: json };
  return { context: 'v1;json;deflate', info: deflateRawSync(json) };
}

export function decodeUndo(context: string, info: Buffer): UndoLog {
  let json: Buffer;
  if (context === 'v1;json') json = info;
  else if (context === 'v1;json;deflate') json = inflateRawSync(info);
  else throw new AtUndoFormatError(`unknown undo log format ${JSON.stringify(context)}`);
  let log: unknown;
  try {
    log = JSON.parse(json.toString('utf8'));
  } catch (err) {
    throw new AtUndoFormatError('undo log is not valid JSON', { cause: err });
  }
  const l = log as Partial<UndoLog> | null;
  if (l === null || l.v !== UNDO_FORMAT_VERSION || !Array.isArray(l.items))
    throw new AtUndoFormatError('undo log of an unknown version or shape');
  return l as UndoLog;
}

export function sameValue(a: ImageValue, b: ImageValue): boolean {
  if (a === null || b === null) return a === b;
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.b64 === b.b64;
}

export function sameRow(a: readonly ImageValue[], b: readonly ImageValue[]): boolean {
  return a.length === b.length && a.every((v, i) => sameValue(v, b[i] as ImageValue));
}

/** The indexes of the key columns in `cols`. */
export function pkIndexes(cols: readonly string[], pk: readonly string[]): number[] {
  return pk.map((k) => {
    const i = cols.indexOf(k);
    if (i < 0) throw new AtUndoFormatError(`key column ${k} is missing from the image`);
    return i;
  });
}

export function pkOf(row: readonly ImageValue[], idx: readonly number[]): ImageValue[] {
  return idx.map((i) => row[i] as ImageValue);
}

/** A map key for a primary key value. */
export function pkId(pk: readonly ImageValue[]): string {
  return JSON.stringify(pk);
}

export function rowObject(cols: readonly string[], row: readonly ImageValue[] | undefined) {
  if (row === undefined) return null;
  return Object.fromEntries(cols.map((c, i) => [c, row[i] ?? null]));
}

// Lock keys: `table:pk1,pk2;table2:pk3`, a composite key's values joined with '_'. A value
// is percent-encoded where it holds a character of that grammar (or '^', '%', controls),
// so two different keys never make the same lock key.
function escapeLockText(s: string): string {
  let out = '';
  for (const ch of s) {
    const code = ch.codePointAt(0) as number;
    if (code < 0x20 || code === 0x7f || ',;:_^%'.includes(ch))
      out += `%${code.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out;
}

// An escaped text never holds a bare '%' followed by a letter, so '%N' (NULL) and '%B'
// (bytes, base64) cannot collide with a text value.
function encodeLockPart(v: ImageValue): string {
  if (v === null) return '%N';
  if (typeof v === 'string') return escapeLockText(v);
  return `%B${escapeLockText(v.b64)}`;
}

/** `schema.table:pk,pk` groups of the rows of `items`, merged by table. */
export function lockKeyOf(items: readonly { table: string; pks: ImageValue[][] }[]): string {
  const byTable = new Map<string, Set<string>>();
  for (const item of items) {
    const set = byTable.get(item.table) ?? new Set<string>();
    byTable.set(item.table, set);
    for (const pk of item.pks) set.add(pk.map(encodeLockPart).join('_'));
  }
  return [...byTable]
    .filter(([, pks]) => pks.size > 0)
    .map(([t, pks]) => `${encodeLockPart(t)}:${[...pks].join(',')}`)
    .join(';');
}
