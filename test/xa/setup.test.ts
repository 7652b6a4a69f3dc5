/**
 * XA's setup and input checks: start() on a REAL private PostgreSQL started with
 * max_prepared_transactions = 0 (the stock setting) refuses with a typed error that says how
 * to fix it; the XA identifiers are derived, parsed back and length-checked; SQL that would
 * end the branch's transaction is refused.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BadRequestError,
  createClient,
  NoGlobalTransactionError,
  PreparedTransactionsDisabledError,
  XaIdentifierTooLongError,
  XaNotStartedError,
} from '../../src/index.ts';
import { createPgXaDataSource } from '../../src/pg.ts';
import { createMysqlXaDataSource } from '../../src/mysql.ts';
import {
  checkMysqlXid,
  checkPgXid,
  mysqlXidClause,
  parseMysqlRecoverRow,
  parsePgGid,
  pgGid,
  xaScope,
} from '../../src/client/xa/ids.ts';
import { startPostgres, type RunningServer } from '../support/services/postgres.ts';
import { PrivateRoot } from '../support/services/private-root.ts';
import { connectMysql, connectPg } from '../client/helpers/db.ts';

// No TC is needed: start() checks the database before it speaks to one.
const concord = () =>
  createClient({ servers: '127.0.0.1:1', applicationId: 'xa-setup', tls: false });

describe('max_prepared_transactions = 0', () => {
  let root: PrivateRoot;
  let server: RunningServer;
  let pool: pg.Pool;
  beforeAll(async () => {
    root = await PrivateRoot.create();
    server = await startPostgres(root, { preparedTransactions: 0 });
    pool = new pg.Pool({ ...server.settings, max: 2 });
    pool.on('error', () => {});
  }, 180_000);
  afterAll(async () => {
    await pool?.end();
    await server?.stop();
    await root?.remove();
  }, 60_000);

  it('start() refuses with PreparedTransactionsDisabledError naming the fix', async () => {
    const xa = createPgXaDataSource(concord(), pool, { name: 'xa.setup' });
    const err = await xa.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreparedTransactionsDisabledError);
    expect((err as Error).message).toMatch(/max_prepared_transactions = 0 on 127\.0\.0\.1:\d+/);
    expect((err as Error).message).toMatch(/ALTER SYSTEM SET max_prepared_transactions/);
    expect((err as Error).message).toMatch(/restart PostgreSQL/);
    // Not started: a branch is refused before anything reaches the TC or the database.
    await expect(xa.run(() => 1)).rejects.toBeInstanceOf(XaNotStartedError);
  }, 30_000);
});

describe('on the machine databases', () => {
  it('start() accepts a server with prepared transactions; run() outside a transaction is refused', async () => {
    const pool = await connectPg(2);
    const my = await connectMysql(2);
    try {
      const c = concord();
      const xa = createPgXaDataSource(c, pool, { name: 'xa.setup.pg', recoveryIntervalMs: 0 });
      const xm = createMysqlXaDataSource(c, my, { name: 'xa.setup.my', recoveryIntervalMs: 0 });
      // The server checks pass; recovery then needs the TC only if a prepared one is found.
      const checked = async (s: { start(): Promise<unknown> }) =>
        s.start().catch((e: unknown) => e);
      for (const r of [await checked(xa), await checked(xm)])
        expect(r).not.toBeInstanceOf(PreparedTransactionsDisabledError);
      await expect(xa.run(() => 1)).rejects.toBeInstanceOf(NoGlobalTransactionError);
      xa.close();
      xm.close();
      await c.close();
    } finally {
      await pool.end();
      await my.end();
    }
  }, 30_000);
});

describe('hostile input gets a typed error', () => {
  it('BadRequestError for a non-client, a bad name, a bad interval, a non-function', async () => {
    const pool = await connectPg(1);
    try {
      const c = concord();
      expect(() => createPgXaDataSource({}, pool, { name: 'x' })).toThrow(BadRequestError);
      expect(() => createPgXaDataSource(c, pool, { name: 'has space' })).toThrow(BadRequestError);
      expect(() => createPgXaDataSource(c, pool, undefined as never)).toThrow(BadRequestError);
      expect(() => createPgXaDataSource(c, pool, { name: 'x', recoveryIntervalMs: -1 })).toThrow(
        BadRequestError,
      );
      const xa = createPgXaDataSource(c, pool, { name: 'x' });
      await expect(xa.run('DELETE FROM t' as never)).rejects.toBeInstanceOf(BadRequestError);
      await expect(xa.transaction({}, 42 as never)).rejects.toBeInstanceOf(BadRequestError);
      await c.close();
    } finally {
      await pool.end();
    }
  });
});

describe('XA identifiers', () => {
  const ref = { xid: '10.0.0.7:8091:123456789012345', branchId: '987654321' };

  it('PostgreSQL gid: prefix, scope, branch id, xid; parsed back only in its scope', () => {
    const scope = xaScope('app', 'res');
    expect(scope).toMatch(/^[0-9a-f]{8}$/);
    expect(xaScope('app', 'other')).not.toBe(scope);
    const gid = pgGid(scope, ref);
    expect(gid).toBe(`concord-xa:${scope}:987654321:10.0.0.7:8091:123456789012345`);
    expect(parsePgGid(scope, gid)).toEqual(ref);
    expect(parsePgGid(xaScope('app', 'other'), gid)).toBeNull();
    expect(parsePgGid(scope, 'someone-else:1:10.0.0.7:8091:1')).toBeNull();
    expect(parsePgGid(scope, `concord-xa:${scope}:x:10.0.0.7:8091:1`)).toBeNull();
    expect(parsePgGid(scope, `concord-xa:${scope}:1:not an xid'`)).toBeNull();
  });

  it('MySQL: hex literals, formatID 1; XA RECOVER rows parsed back only in their scope', () => {
    const scope = xaScope('app', 'res');
    expect(mysqlXidClause(scope, { xid: 'h:1:2', branchId: '3' })).toBe(
      `X'${Buffer.from('concord-xa:h:1:2').toString('hex')}',` +
        `X'${Buffer.from(`${scope}:3`).toString('hex')}',1`,
    );
    const data = Buffer.from(`concord-xa:${ref.xid}${scope}:${ref.branchId}`);
    const row = { formatID: 1, gtrid_length: 11 + ref.xid.length, data };
    expect(parseMysqlRecoverRow(scope, row)).toEqual(ref);
    expect(parseMysqlRecoverRow(xaScope('x', 'y'), row)).toBeNull();
    expect(parseMysqlRecoverRow(scope, { ...row, formatID: 2 })).toBeNull();
    expect(parseMysqlRecoverRow(scope, { ...row, data: Buffer.from('other') })).toBeNull();
  });

  it('length-checked: MySQL gtrid ≤ 64 bytes, PostgreSQL gid < 200 bytes', () => {
    const longHost = `${'a'.repeat(60)}.example`;
    const long = `${longHost}:8091:1`;
    expect(() => checkMysqlXid(long)).toThrow(XaIdentifierTooLongError);
    expect(() => checkMysqlXid(ref.xid)).not.toThrow();
    expect(() => checkPgXid(long)).not.toThrow();
    const veryLong = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}:8091:1`;
    expect(() => checkPgXid(veryLong)).toThrow(XaIdentifierTooLongError);
  });
});
