/**
 * AT on PostgreSQL (`pg`). Images are read with every type parser replaced by the identity,
 * so each value arrives as PostgreSQL's own text output (numeric with all its digits,
 * timestamps to the microsecond, jsonb normalised, bytea as `\x…` hex) and goes back
 * through the column type's input function. INSERT keys come from RETURNING.
 *
 *   const ds = createPgAtDataSource(pool, concord, { resourceId: 'orders-db' });
 *   await ds.ensureSchema();
 *   await concord.transaction(() =>
 *     ds.query('UPDATE stock SET n = n - $1 WHERE sku = $2', [1, 'a']),
 *   );
 */
import pg from 'pg';
import { AtStatementRefusedError } from './errors.ts';
import type { AtConnection, AtDialect, TableMeta } from './dialect.ts';
import { createAtDataSource, type AtDataSource, type AtDataSourceOptions } from './datasource.ts';
import type { Lease } from './phase-two.ts';
import type { ConcordClient } from '../sdk/client.ts';
import { pgInsertWithReturning, type Plan, type TableRef } from './sql.ts';
import type { Image, ImageValue } from './undo.ts';

export type PgAtDataSource = AtDataSource<pg.QueryResult>;

const RAW = { getTypeParser: () => (value: string) => value };
const PK_ALIAS = '__concord_pk_';

function withoutTrailingSemicolon(sql: string): string {
  let end = sql.length;
  while (end > 0 && (sql[end - 1] === ';' || sql[end - 1]?.trim() === '')) end -= 1;
  return sql.slice(0, end);
}

const q = (id: string) => `"${id.split('"').join('""')}"`;

function connection(client: pg.PoolClient): AtConnection {
  return {
    async image(sql, params): Promise<Image> {
      const r = await client.query({
        text: sql,
        values: [...params],
        types: RAW,
        rowMode: 'array',
      });
      return { cols: r.fields.map((f) => f.name), rows: r.rows as ImageValue[][] };
    },
    run: (sql, params) => client.query(sql, [...params]),
    async exec(sql, params = []) {
      const r = await client.query(sql, [...params]);
      return { rows: r.rows as Record<string, unknown>[], affected: r.rowCount ?? 0 };
    },
  };
}

async function resolveTable(
  conn: AtConnection,
  ref: TableRef,
): Promise<{ oid: string; schema: string; table: string } | null> {
  const names =
    ref.schema === null
      ? [q(ref.table), q(ref.table.toLowerCase())]
      : [
          `${q(ref.schema)}.${q(ref.table)}`,
          `${q(ref.schema.toLowerCase())}.${q(ref.table.toLowerCase())}`,
        ];
  for (const name of names) {
    const r = await conn.exec(
      'SELECT c.oid::text AS oid, n.nspname AS schema, c.relname AS table FROM pg_class c ' +
        'JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)',
      [name],
    );
    const row = r.rows[0];
    if (row !== undefined)
      return { oid: String(row.oid), schema: String(row.schema), table: String(row.table) };
  }
  return null;
}

async function tableMeta(conn: AtConnection, ref: TableRef): Promise<TableMeta> {
  const t = await resolveTable(conn, ref);
  if (t === null)
    throw new AtStatementRefusedError('unsupported', ref.table, `no table ${ref.table}`);
  const cols = await conn.exec(
    'SELECT attname, attgenerated::text AS gen, attidentity::text AS ident FROM pg_attribute ' +
      'WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum',
    [t.oid],
  );
  const pk = await conn.exec(
    'SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY ' +
      'AS k(attnum, ord) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ' +
      'WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord',
    [t.oid],
  );
  const triggers = await conn.exec(
    'SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::oid AND NOT tgisinternal',
    [t.oid],
  );
  const pkCols = pk.rows.map((r) => String(r.attname));
  const identity = cols.rows.filter((r) => r.ident !== '').map((r) => String(r.attname));
  return {
    schema: t.schema,
    table: t.table,
    columns: cols.rows.map((r) => String(r.attname)),
    pk: pkCols,
    generated: cols.rows.filter((r) => r.gen !== '').map((r) => String(r.attname)),
    autoIncrement: identity.length === 1 && pkCols.length === 1 ? (identity[0] as string) : null,
    triggers: Number(triggers.rows[0]?.n ?? 0),
  };
}

async function insert(
  conn: AtConnection,
  sql: string,
  params: readonly unknown[],
  plan: Extract<Plan, { kind: 'insert' }>,
  meta: TableMeta,
): Promise<{ result: unknown; pks: ImageValue[][] }> {
  const extra = meta.pk.map((column, i) => ({ column, alias: `${PK_ALIAS}${i}` }));
  const text = plan.hasReturning
    ? pgInsertWithReturning(sql, extra)
    : `${withoutTrailingSemicolon(sql)}\nRETURNING ${extra.map((e) => `${q(e.column)} AS ${q(e.alias)}`).join(', ')}`;
  const raw = await (conn as AtConnection & { client: pg.PoolClient }).client.query({
    text,
    values: [...params],
    types: RAW,
  });
  const pks = raw.rows.map((row: Record<string, string | null>) =>
    extra.map((e) => row[e.alias] ?? null),
  );
  const fields = raw.fields.filter((f) => !f.name.startsWith(PK_ALIAS));
  const rows = plan.hasReturning
    ? raw.rows.map((row: Record<string, string | null>) =>
        Object.fromEntries(
          fields.map((f) => {
            const v = row[f.name] ?? null;
            return [f.name, v === null ? null : pg.types.getTypeParser(f.dataTypeID, 'text')(v)];
          }),
        ),
      )
    : [];
  return { result: { ...raw, rows, fields: plan.hasReturning ? fields : [] }, pks };
}

export const pgDialect: AtDialect = {
  kind: 'postgresql',
  q,
  ph: (n) => `$${n}`,
  param: (v) => (v === null || typeof v === 'string' ? v : Buffer.from(v.b64, 'base64')),
  tableMeta,
  insert,
  lockingSelect: (sql) => `${withoutTrailingSemicolon(sql)} FOR UPDATE`,
  isUniqueViolation: (err) => (err as { code?: unknown } | null)?.code === '23505',
  restoreInsert: (table, cols, vals) =>
    `INSERT INTO ${table} (${cols}) OVERRIDING SYSTEM VALUE VALUES (${vals})`,
  schemaSql: (name) => [
    `CREATE TABLE IF NOT EXISTS ${q(name)} (
      branch_id BIGINT NOT NULL,
      xid VARCHAR(128) NOT NULL,
      context VARCHAR(128) NOT NULL,
      rollback_info BYTEA NOT NULL,
      log_status INT NOT NULL,
      log_created TIMESTAMPTZ(6) NOT NULL,
      log_modified TIMESTAMPTZ(6) NOT NULL,
      CONSTRAINT ${q(`ux_${name}`)} UNIQUE (xid, branch_id))`,
    `CREATE INDEX IF NOT EXISTS ${q(`ix_${name}_log_created`)} ON ${q(name)} (log_created)`,
  ],
};

/** An AT data source on a `pg` Pool. */
export function createPgAtDataSource(
  pool: pg.Pool,
  concord: ConcordClient,
  options: AtDataSourceOptions,
): PgAtDataSource {
  const connect = async (): Promise<Lease> => {
    const client = await pool.connect();
    return {
      conn: Object.assign(connection(client), { client }),
      release: (destroy) => client.release(destroy === true ? true : undefined),
    };
  };
  return createAtDataSource<pg.QueryResult>(
    concord,
    {
      dialect: pgDialect,
      connect,
      olderThan: (n) =>
        `log_created < CURRENT_TIMESTAMP - make_interval(secs => $${n}::float8 / 1000)`,
    },
    options,
  );
}
