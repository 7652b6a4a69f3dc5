/**
 * Building the db store from a node's config: the shipped db-mode cluster configs load,
 * CONCORD_DB_URL overrides the file, bad URLs are config errors that name the key.
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/server/config.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import {
  DB_URL_ENV,
  createDbSessionStore,
  dialectOf,
  redactUrl,
  resolveDbUrl,
} from '../../src/store/db/index.ts';
import { connectAdmin, dbUrl, testLogger, uniquePrefix } from './helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CONFIGS = join(ROOT, 'cluster-configs');

describe('db store configuration', () => {
  const prefixes: string[] = [];

  afterAll(async () => {
    const admin = await connectAdmin('postgres');
    for (const p of prefixes) await admin.dropTables(p);
    await admin.close();
  });

  it('ships three PostgreSQL and three MySQL nodes in db mode, on ports of their own', () => {
    const files = readdirSync(CONFIGS)
      .filter((f) => /^db-(pg|mysql)-node\d\.yaml$/.test(f))
      .sort();
    expect(files).toEqual([
      'db-mysql-node1.yaml',
      'db-mysql-node2.yaml',
      'db-mysql-node3.yaml',
      'db-pg-node1.yaml',
      'db-pg-node2.yaml',
      'db-pg-node3.yaml',
    ]);
    const raftPorts = [1, 2, 3].flatMap((i) => {
      const c = loadConfig(join(CONFIGS, `node${i}.yaml`), {}, ROOT);
      return [c.server.httpPort, c.server.tcPort, c.server.raftPort];
    });
    const seen = new Set(raftPorts);
    for (const f of files) {
      const c = loadConfig(join(CONFIGS, f), {}, ROOT);
      expect(c.store.mode).toBe('db');
      expect(dialectOf(resolveDbUrl(c, {}))).toBe(f.startsWith('db-pg') ? 'postgres' : 'mysql');
      for (const port of [c.server.httpPort, c.server.tcPort, c.server.raftPort]) {
        expect(seen.has(port), `${f} reuses port ${port}`).toBe(false);
        seen.add(port);
      }
    }
  });

  it('CONCORD_DB_URL overrides store.db.url; a missing or foreign URL is a config error naming the key', () => {
    const config = { node: { id: 'n1' }, store: { mode: 'db', db: { url: 'postgres://a@h/db' } } };
    expect(resolveDbUrl(config, {})).toBe('postgres://a@h/db');
    expect(resolveDbUrl(config, { [DB_URL_ENV]: 'mysql://b@h/db' })).toBe('mysql://b@h/db');
    expect(() => resolveDbUrl({ ...config, store: { mode: 'db', db: null } }, {})).toThrow(
      ConfigError,
    );
    expect(() => resolveDbUrl(config, { [DB_URL_ENV]: 'sqlite://x' })).toThrow(/store\.db\.url/);
    expect(() =>
      createDbSessionStore({ ...config, store: { mode: 'raft', db: null } }, testLogger()),
    ).toThrow(/store\.mode/);
    expect(dialectOf('mariadb://root@h/db')).toBe('mysql');
    expect(redactUrl('postgres://user:s3cret@host:5432/db')).toBe(
      'postgres://user:***@host:5432/db',
    );
  });

  it('opens a node’s store from a shipped config, with the URL from the environment', async () => {
    const config = loadConfig(join(CONFIGS, 'db-pg-node2.yaml'), {}, ROOT);
    const prefix = uniquePrefix('cfg');
    prefixes.push(prefix);
    const store = await createDbSessionStore(
      config,
      testLogger(),
      { tablePrefix: prefix, address: '127.0.0.1:8192' },
      { [DB_URL_ENV]: dbUrl('postgres') },
    );
    try {
      expect(store.nodeId).toBe('pg-node2');
      expect(store.isLeader()).toBe(true);
      expect(store.drivesPhaseTwo()).toBe(true);
      expect(store.leaseHolder()).toMatchObject({ nodeId: 'pg-node2', address: '127.0.0.1:8192' });
    } finally {
      await store.close();
    }
  });
});
