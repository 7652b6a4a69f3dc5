/**
 * The SQL side of AT: a statement is parsed with node-sql-parser (PostgreSQL or MySQL
 * dialect; no regular expressions) into a plan that says what to image and how. What AT
 * cannot undo is refused here, before anything runs: DDL, multi-table UPDATE/DELETE,
 * upserts, CTEs, several statements at once, and whatever the parser cannot read.
 */
import { createRequire } from 'node:module';
import type { Parser } from 'node-sql-parser';
import { AtParserMissingError, AtStatementRefusedError } from './errors.ts';

// Loaded on first use: node-sql-parser is an optional peer dependency of the SDK, needed by
// AT users only, so `@concord/client/pg` (the fence) imports without it.
let loaded: Parser | null = null;
const parser = {
  get(): Parser {
    if (loaded !== null) return loaded;
    let mod: typeof import('node-sql-parser');
    try {
      mod = createRequire(import.meta.url)('node-sql-parser') as typeof import('node-sql-parser');
    } catch (err) {
      throw new AtParserMissingError(
        'AT mode parses SQL with node-sql-parser: npm install node-sql-parser',
        { cause: err },
      );
    }
    loaded = new mod.Parser();
    return loaded;
  },
};

export type SqlDialect = 'postgresql' | 'mysql';

export interface TableRef {
  schema: string | null;
  table: string;
  alias: string | null;
}

/** A value of an INSERT row as written: a bound parameter, a literal, or something else. */
export type InsertValue =
  { kind: 'param'; index: number } | { kind: 'literal'; value: string | null } | { kind: 'expr' };

/** A statement whose rows are found by its WHERE. */
export interface ImagedPlan {
  kind: 'update' | 'delete' | 'select-for-update';
  table: TableRef;
  /** The FROM/WHERE/ORDER BY/LIMIT of the statement as a `SELECT * …` (no lock clause). */
  selectSql: string;
  selectParams: unknown[];
}

export type Plan =
  | { kind: 'passthrough' }
  | ImagedPlan
  | {
      kind: 'insert';
      table: TableRef;
      /** Column names as written, or null for "every column in table order". */
      columns: string[] | null;
      /** MySQL: the rows' values (to find explicit keys). */
      rows: InsertValue[][] | null;
      /** PostgreSQL: the statement's own RETURNING list is present. */
      hasReturning: boolean;
    };

type Node = Record<string, unknown>;

const DDL = new Set(['create', 'alter', 'drop', 'truncate', 'rename']);

function refuse(
  reason: ConstructorParameters<typeof AtStatementRefusedError>[0],
  sql: string,
  d: string,
): never {
  throw new AtStatementRefusedError(reason, sql, d);
}

export function parseStatement(sql: string, dialect: SqlDialect): Node {
  let ast: unknown;
  try {
    ast = parser.get().astify(sql, { database: dialect });
  } catch (err) {
    throw new AtStatementRefusedError('unparseable', sql, 'the SQL parser cannot read it', {
      cause: err,
    });
  }
  const list = Array.isArray(ast) ? ast : [ast];
  if (list.length !== 1 || typeof list[0] !== 'object' || list[0] === null)
    refuse('unsupported', sql, 'exactly one statement per call');
  return list[0] as Node;
}

/** A column name from either dialect's AST shape. */
export function columnName(column: unknown): string {
  if (typeof column === 'string') return column;
  const c = column as { expr?: { value?: unknown }; value?: unknown } | null;
  const v = c?.expr?.value ?? c?.value;
  if (typeof v !== 'string') throw new Error(`unexpected column node ${JSON.stringify(column)}`);
  return v;
}

function tableOf(node: unknown, sql: string): TableRef {
  const t = node as { db?: unknown; table?: unknown; as?: unknown; expr?: unknown } | undefined;
  if (t === undefined || typeof t.table !== 'string')
    refuse('unsupported', sql, 'not a plain table');
  return {
    schema: typeof t.db === 'string' ? t.db : null,
    table: t.table,
    alias: typeof t.as === 'string' ? t.as : null,
  };
}

/** Visits every object of the AST in key (= text) order. */
function walk(node: unknown, visit: (n: Node) => void): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(x, visit);
  } else if (typeof node === 'object' && node !== null) {
    visit(node as Node);
    for (const v of Object.values(node)) walk(v, visit);
  }
}

const isMysqlParam = (n: Node) => n.type === 'origin' && n.value === '?';
const isPgParam = (n: Node) => n.type === 'var' && n.prefix === '$' && typeof n.name === 'number';

function countMysqlParams(node: unknown): number {
  let n = 0;
  walk(node, (x) => {
    if (isMysqlParam(x)) n += 1;
  });
  return n;
}

/** PostgreSQL: renumbers the $n of `parts` from $1, returning the values they need. */
function renumberPg(parts: unknown[], params: readonly unknown[], sql: string): unknown[] {
  const map = new Map<number, number>();
  const out: unknown[] = [];
  walk(parts, (x) => {
    if (!isPgParam(x)) return;
    const old = x.name as number;
    if (old < 1 || old > params.length) refuse('unsupported', sql, `parameter $${old} not given`);
    let next = map.get(old);
    if (next === undefined) {
      out.push(params[old - 1]);
      next = out.length;
      map.set(old, next);
    }
    x.name = next;
  });
  return out;
}

function selectOf(
  ast: Node,
  table: TableRef,
  dialect: SqlDialect,
  params: readonly unknown[],
  paramsBefore: number,
  sql: string,
): { selectSql: string; selectParams: unknown[] } {
  const from = [{ db: table.schema, table: table.table, as: table.alias }];
  const where = structuredClone(ast.where ?? null);
  const orderby = dialect === 'mysql' ? structuredClone(ast.orderby ?? null) : null;
  const limit = dialect === 'mysql' ? structuredClone(ast.limit ?? null) : null;
  let selectParams: unknown[];
  if (dialect === 'postgresql') {
    selectParams = renumberPg([where], params, sql);
  } else {
    const n = countMysqlParams([where, orderby, limit]);
    if (paramsBefore + n > params.length) refuse('unsupported', sql, 'fewer values than ?');
    selectParams = params.slice(paramsBefore, paramsBefore + n);
  }
  const star = [{ expr: { type: 'column_ref', table: null, column: '*' }, as: null }];
  const selectAst = { type: 'select', columns: star, from, where, orderby, limit };
  const selectSql = parser.get().sqlify(selectAst as never, { database: dialect });
  return { selectSql, selectParams };
}

function planUpdate(ast: Node, dialect: SqlDialect, params: readonly unknown[], sql: string): Plan {
  const tables = ast.table as unknown[];
  if (tables.length !== 1 || (Array.isArray(ast.from) && ast.from.length > 0))
    refuse('multi-table', sql, 'an UPDATE of one table only');
  const table = tableOf(tables[0], sql);
  const before = dialect === 'mysql' ? countMysqlParams(ast.set) : 0;
  return { kind: 'update', table, ...selectOf(ast, table, dialect, params, before, sql) };
}

function planDelete(ast: Node, dialect: SqlDialect, params: readonly unknown[], sql: string): Plan {
  const tables = ast.table as unknown[];
  const from = (ast.from as unknown[] | null) ?? [];
  if (tables.length !== 1 || from.length > 1) refuse('multi-table', sql, 'a DELETE of one table');
  const t = tableOf(tables[0], sql);
  const f = from.length === 1 ? tableOf(from[0], sql) : t;
  if (f.table !== t.table || f.schema !== t.schema)
    refuse('multi-table', sql, 'a DELETE of one table');
  const table = { ...f, alias: f.alias ?? (t.alias !== t.table ? t.alias : null) };
  return { kind: 'delete', table, ...selectOf(ast, table, dialect, params, 0, sql) };
}

function insertValue(node: unknown, dialect: SqlDialect, next: () => number): InsertValue {
  const n = node as Node;
  if (dialect === 'mysql' && isMysqlParam(n)) return { kind: 'param', index: next() };
  if (n.type === 'null') return { kind: 'literal', value: null };
  if (n.type === 'number' && (typeof n.value === 'number' || typeof n.value === 'string')) {
    const v = n.value;
    if (typeof v === 'number' && !Number.isSafeInteger(v)) return { kind: 'expr' };
    return { kind: 'literal', value: String(v) };
  }
  if ((n.type === 'single_quote_string' || n.type === 'string') && typeof n.value === 'string')
    return { kind: 'literal', value: n.value };
  walk(n, (x) => {
    if (isMysqlParam(x)) next();
  });
  return { kind: 'expr' };
}

function planInsert(ast: Node, dialect: SqlDialect, sql: string): Plan {
  const tables = ast.table as unknown[];
  if (tables.length !== 1) refuse('multi-table', sql, 'an INSERT into one table');
  if (ast.conflict || ast.on_duplicate_update)
    refuse('unsupported', sql, 'upserts (ON CONFLICT / ON DUPLICATE KEY UPDATE) are not supported');
  const table = tableOf(tables[0], sql);
  let columns = Array.isArray(ast.columns) ? ast.columns.map(columnName) : null;
  let rows: InsertValue[][] | null = null;
  let p = 0;
  const next = () => p++;
  if (Array.isArray(ast.set)) {
    columns = (ast.set as Node[]).map((s) => columnName(s.column));
    rows = [(ast.set as Node[]).map((s) => insertValue(s.value, dialect, next))];
  } else {
    const values = ast.values as { type?: string; values?: { value: unknown[] }[] } | null;
    if (values?.type === 'values' && Array.isArray(values.values))
      rows = values.values.map((r) => r.value.map((v) => insertValue(v, dialect, next)));
    else if (dialect === 'mysql')
      refuse('unsupported', sql, 'INSERT … SELECT has no keys to image on MySQL');
  }
  return { kind: 'insert', table, columns, rows, hasReturning: ast.returning != null };
}

function planSelect(ast: Node, dialect: SqlDialect, params: readonly unknown[], sql: string): Plan {
  if (ast.locking_read == null) return { kind: 'passthrough' };
  const from = (ast.from as unknown[] | null) ?? [];
  if (from.length !== 1) refuse('multi-table', sql, 'SELECT … FOR UPDATE of one table');
  const table = tableOf(from[0], sql);
  const before = dialect === 'mysql' ? countMysqlParams(ast.columns) : 0;
  return {
    kind: 'select-for-update',
    table,
    ...selectOf(ast, table, dialect, params, before, sql),
  };
}

/** Plans one statement; throws AtStatementRefusedError for what AT cannot undo. */
export function planStatement(sql: string, params: readonly unknown[], dialect: SqlDialect): Plan {
  if (typeof sql !== 'string' || sql.trim() === '') refuse('unparseable', String(sql), 'empty');
  const ast = parseStatement(sql, dialect);
  const type = String(ast.type);
  if (DDL.has(type)) refuse('ddl', sql, 'DDL cannot be undone');
  if (Array.isArray(ast.with) && ast.with.length > 0)
    refuse('unsupported', sql, 'WITH (a CTE) around a write is not supported');
  switch (type) {
    case 'select':
      return planSelect(ast, dialect, params, sql);
    case 'update':
      return planUpdate(ast, dialect, params, sql);
    case 'delete':
      return planDelete(ast, dialect, params, sql);
    case 'insert':
      return planInsert(ast, dialect, sql);
    default:
      return refuse('unsupported', sql, `a ${type} statement cannot be imaged`);
  }
}

/**
 * A SELECT the caller wants locked (`tx.selectForUpdate`): its table and WHERE as a plan.
 * node-sql-parser's PostgreSQL grammar has no FOR UPDATE, so the SDK adds the clause itself.
 */
export function planSelectForUpdate(
  sql: string,
  params: readonly unknown[],
  dialect: SqlDialect,
): ImagedPlan {
  const ast = parseStatement(sql, dialect);
  if (ast.type !== 'select' || ast.locking_read != null)
    refuse('unsupported', sql, 'selectForUpdate takes a SELECT without a locking clause');
  return planSelect({ ...ast, locking_read: 'FOR UPDATE' }, dialect, params, sql) as ImagedPlan;
}

/** PostgreSQL: the statement with RETURNING extended by `extra` (select items, as SQL). */
export function pgInsertWithReturning(
  sql: string,
  extra: { column: string; alias: string }[],
): string {
  const ast = parseStatement(sql, 'postgresql');
  const items = extra.map((e) => ({
    type: 'expr',
    expr: {
      type: 'column_ref',
      table: null,
      column: { expr: { type: 'double_quote_string', value: e.column } },
    },
    as: e.alias,
  }));
  const returning = ast.returning as { columns: unknown[] } | null;
  if (returning == null) return sql;
  returning.columns = [...returning.columns, ...items];
  return parser.get().sqlify(ast as never, { database: 'postgresql' });
}
