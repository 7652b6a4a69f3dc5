/**
 * AT on MySQL / MariaDB (`mysql2/promise`). Images are read over the text protocol as raw
 * bytes: a string or binary column's bytes are kept as they are (base64 for binary
 * charsets), every other column's text (DECIMAL digits, DATETIME(6), JSON) as UTF-8 text,
 * and they go back as the same text or bytes. INSERT keys are the statement's explicit
 * key values, or LAST_INSERT_ID() and the affected-row count for an auto-increment key.
 *
 *   const ds = createMysqlAtDataSource(pool, concord, { resourceId: 'stock-db' });
 */
import type mysql from 'mysql2/promise';
import { AtStatementRefusedError } from './errors.ts';
import type { AtConnection, AtDialect, TableMeta } from './dialect.ts';
import { createAtDataSource, type AtDataSource, type AtDataSourceOptions } from './datasource.ts';
import type { Lease } from './phase-two.ts';
import type { ConcordClient } from '../sdk/client.ts';
import type { InsertValue, Plan, TableRef } from './sql.ts';
import type { Image, ImageValue } from './undo.ts';

export type MysqlQueryResult = [
  mysql.RowDataPacket[] | mysql.RowDataPacket[][] | mysql.ResultSetHeader,
  mysql.FieldPacket[],
];
export type MysqlAtDataSource = AtDataSource<MysqlQueryResult>;

/** MySQL column types whose binary-charset values are bytes (strings, blobs, BIT). */
const BYTE_TYPES = new Set([15, 16, 249, 250, 251, 252, 253, 254, 255]);
const BINARY_CHARSET = 63;

const q = (id: string) => `\`${id.split('`').join('``')}\``;

function withoutTrailingSemicolon(sql: string): string {
  let end = sql.length;
  while (end > 0 && (sql[end - 1] === ';' || sql[end - 1]?.trim() === '')) end -= 1;
  return sql.slice(0, end);
}

function connection(c: mysql.PoolConnection): AtConnection {
  return {
    async image(sql, params): Promise<Image> {
      const [rows, fields] = await c.query({
        sql,
        values: [...params],
        rowsAsArray: true,
        typeCast: (field: { buffer(): Buffer | null }) => field.buffer(),
      });
      const binary = fields.map(
        (f) => f.characterSet === BINARY_CHARSET && BYTE_TYPES.has(f.columnType ?? 0),
      );
      const out = (rows as unknown as (Buffer | null)[][]).map((row) =>
        row.map((v, i): ImageValue => {
          if (v === null) return null;
          return binary[i] ? { b64: v.toString('base64') } : v.toString('utf8');
        }),
      );
      return { cols: fields.map((f) => f.name), rows: out };
    },
    run: (sql, params) => c.query(sql, [...params]),
    async exec(sql, params = []) {
      const [r] = await c.query(sql, [...params]);
      if (Array.isArray(r)) return { rows: r as Record<string, unknown>[], affected: r.length };
      return { rows: [], affected: (r as mysql.ResultSetHeader).affectedRows };
    },
  };
}

async function tableMeta(conn: AtConnection, ref: TableRef): Promise<TableMeta> {
  const schema =
    ref.schema ?? String((await conn.exec('SELECT DATABASE() AS db')).rows[0]?.db ?? '');
  const cols = await conn.exec(
    'SELECT COLUMN_NAME AS name, COLUMN_KEY AS ckey, EXTRA AS extra FROM information_schema.COLUMNS ' +
      'WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
    [schema, ref.table],
  );
  if (cols.rows.length === 0)
    throw new AtStatementRefusedError('unsupported', ref.table, `no table ${schema}.${ref.table}`);
  const pk = await conn.exec(
    'SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? ' +
      "AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
    [schema, ref.table],
  );
  const triggers = await conn.exec(
    'SELECT COUNT(*) AS n FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? ' +
      'AND EVENT_OBJECT_TABLE = ?',
    [schema, ref.table],
  );
  const extra = (r: Record<string, unknown>) => String(r.extra ?? '').toUpperCase();
  const pkCols = pk.rows.map((r) => String(r.name));
  const auto = cols.rows.filter((r) => extra(r).includes('AUTO_INCREMENT'));
  return {
    schema,
    table: ref.table,
    columns: cols.rows.map((r) => String(r.name)),
    pk: pkCols,
    generated: cols.rows
      .filter((r) =>
        ['VIRTUAL GENERATED', 'STORED GENERATED', 'PERSISTENT'].some((g) => extra(r).includes(g)),
      )
      .map((r) => String(r.name)),
    autoIncrement:
      auto.length === 1 && pkCols.length === 1 && auto[0]?.name === pkCols[0]
        ? String(auto[0]?.name)
        : null,
    triggers: Number(triggers.rows[0]?.n ?? 0),
  };
}

function paramText(v: unknown, sql: string): ImageValue {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (Buffer.isBuffer(v)) return { b64: v.toString('base64') };
  throw new AtStatementRefusedError(
    'unsupported',
    sql,
    'a key value must be a string, number, bigint or Buffer',
  );
}

/** The keys an INSERT will write, decided before it runs: explicit values or auto-increment. */
function keyPlan(
  plan: Extract<Plan, { kind: 'insert' }>,
  meta: TableMeta,
  params: readonly unknown[],
  sql: string,
) {
  const columns = plan.columns ?? meta.columns;
  const rows = plan.rows ?? [];
  const at = meta.pk.map((k) => columns.indexOf(k));
  const valueOf = (v: InsertValue | undefined): ImageValue | undefined => {
    if (v === undefined || v.kind === 'expr') return undefined;
    if (v.kind === 'literal') return v.value;
    return paramText(params[v.index], sql);
  };
  const explicit = rows.map((row) => at.map((i) => (i < 0 ? undefined : valueOf(row[i]))));
  if (explicit.every((pk) => pk.every((v) => v !== undefined && v !== null)))
    return { kind: 'explicit' as const, pks: explicit as ImageValue[][] };
  const i = at[0] ?? -1;
  const generated = (row: InsertValue[]) => {
    const v = row[i];
    if (v?.kind === 'literal') return v.value === null;
    return v?.kind === 'param' && (params[v.index] === null || params[v.index] === undefined);
  };
  if (meta.autoIncrement !== null && (i < 0 || rows.every(generated)))
    return { kind: 'auto' as const, rows: rows.length };
  throw new AtStatementRefusedError(
    'no-primary-key',
    sql,
    "the inserted rows' keys are neither given as values nor auto-increment",
  );
}

async function insert(
  conn: AtConnection,
  sql: string,
  params: readonly unknown[],
  plan: Extract<Plan, { kind: 'insert' }>,
  meta: TableMeta,
) {
  const keys = keyPlan(plan, meta, params, sql);
  const result = (await conn.run(sql, params)) as MysqlQueryResult;
  const header = result[0] as mysql.ResultSetHeader;
  if (keys.kind === 'explicit') return { result, pks: keys.pks };
  const step = await conn.exec('SELECT @@SESSION.auto_increment_increment AS step');
  const inc = BigInt(String(step.rows[0]?.step ?? 1));
  const first = BigInt(header.insertId);
  const pks = Array.from({ length: header.affectedRows }, (_, i) => [
    String(first + inc * BigInt(i)),
  ]);
  return { result, pks };
}

export const mysqlDialect: AtDialect = {
  kind: 'mysql',
  q,
  ph: () => '?',
  param: (v) => (v === null || typeof v === 'string' ? v : Buffer.from(v.b64, 'base64')),
  tableMeta,
  insert,
  lockingSelect: (sql) => `${withoutTrailingSemicolon(sql)} FOR UPDATE`,
  isUniqueViolation: (err) => (err as { errno?: unknown } | null)?.errno === 1062,
  restoreInsert: (table, cols, vals) => `INSERT INTO ${table} (${cols}) VALUES (${vals})`,
  schemaSql: (name) => [
    `CREATE TABLE IF NOT EXISTS ${q(name)} (
      branch_id BIGINT NOT NULL,
      xid VARCHAR(128) NOT NULL,
      context VARCHAR(128) NOT NULL,
      rollback_info LONGBLOB NOT NULL,
      log_status INT NOT NULL,
      log_created DATETIME(6) NOT NULL,
      log_modified DATETIME(6) NOT NULL,
      UNIQUE KEY ${q(`ux_${name}`)} (xid, branch_id),
      KEY ${q(`ix_${name}_log_created`)} (log_created)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`,
  ],
};

/** An AT data source on a `mysql2/promise` Pool. */
export function createMysqlAtDataSource(
  pool: mysql.Pool,
  concord: ConcordClient,
  options: AtDataSourceOptions,
): MysqlAtDataSource {
  const connect = async (): Promise<Lease> => {
    const c = await pool.getConnection();
    return {
      conn: connection(c),
      release: (destroy) => (destroy === true ? c.destroy() : c.release()),
    };
  };
  return createAtDataSource<MysqlQueryResult>(
    concord,
    {
      dialect: mysqlDialect,
      connect,
      olderThan: () => 'log_created < NOW(6) - INTERVAL (? * 1000) MICROSECOND',
    },
    options,
  );
}
