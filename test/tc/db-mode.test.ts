/**
 * db mode as real node processes: three `concord start` nodes with `store.mode: db` on
 * PostgreSQL, then on MariaDB, sharing fresh tables (a unique prefix per run), no Raft and
 * no data dir. Every node serves every TC call (never NOT_LEADER) and takes RM channels (the
 * RM keeps one to every node); the node that decides a transaction runs its phase two, the
 * driver-lease holder runs retries and what a dead node left; when the holder is killed,
 * another node takes the lease over and finishes what it left.
 *
 * A Saga's later report on a third node (the session already decided) starts no pass there
 * beside the decider's at its term; a second cluster with a short retry horizon shows that a
 * pass in flight across an operator's forced resume does not stop the retries the resume
 * restarted (a stale RetryStopped is refused).
 *
 * A short lease (3 s, renewed every 500 ms) keeps the failover part of the file short.
 */
import type { Xid } from '../../src/shared/ids.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { PinnedDiscovery } from '../../bench/lib/pinned-discovery.ts';
import { LockConflictError, TcClient } from '../../src/client/tc-client.ts';
import { findNodeConfigs } from '../../src/cli/cluster-up.ts';
import {
  DB_URL_ENV as CONFIG_DB_URL_ENV,
  loadConfig,
  validateConfig,
} from '../../src/server/config.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import { DB_URL_ENV, type DialectName } from '../../src/store/db/index.ts';
import { connectAdmin, dbUrl, uniquePrefix, type Admin } from '../store-db/helpers.ts';
import { testSecurity } from '../support/cluster.ts';
import {
  REPO_ROOT,
  TestRm,
  freePort,
  rawCall,
  rawClient,
  waitFor,
  waitForStatus,
} from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const TOKEN = 'db-mode-test-token-0123456789';
const LEASE = { leaseMs: 3_000, renewIntervalMs: 500, safetyMarginMs: 500 };
const TM = { applicationId: 'db-mode-test', transactionServiceGroup: 'default' } as const;

interface DbNode {
  id: string;
  http: number;
  tc: number;
  file: string;
  logFile: string;
  proc: ChildProcess | null;
}

interface Metadata {
  storeMode: string;
  term: number;
  leaderId: string | null;
  nodes: Array<{
    nodeId: string;
    role: string;
    transaction: { host: string; port: number } | null;
    internal: unknown;
    healthy: boolean | null;
  }>;
}

/** Three db-mode node processes on free ports, sharing fresh tables. */
class DbCluster {
  readonly root: string;
  readonly nodes: DbNode[] = [];
  readonly prefix: string;

  private constructor(readonly dialect: DialectName) {
    this.root = mkdtempSync(join(tmpdir(), `concord-db-mode-${dialect}-`));
    this.prefix = uniquePrefix(`dbm_${dialect === 'postgres' ? 'pg' : 'my'}`);
  }

  /** `extra`: more top-level config sections, the same on every node (phaseTwo, ...). */
  static async start(
    dialect: DialectName,
    extra: Record<string, unknown> = {},
  ): Promise<DbCluster> {
    const c = new DbCluster(dialect);
    const used = new Set<number>();
    const port = async () => {
      for (;;) {
        const p = await freePort();
        if (!used.has(p)) {
          used.add(p);
          return p;
        }
      }
    };
    const raftPorts: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const id = `${dialect === 'postgres' ? 'pg' : 'my'}-node${i}`;
      c.nodes.push({
        id,
        http: await port(),
        tc: await port(),
        file: join(c.root, `${id}.yaml`),
        logFile: join(c.root, `${id}.log`),
        proc: null,
      });
      raftPorts.push(await port());
    }
    for (const n of c.nodes) {
      writeFileSync(
        n.file,
        stringify({
          node: { id: n.id, group: 'default' },
          server: { host: '127.0.0.1', httpPort: n.http, tcPort: n.tc },
          // No dataDir: db mode keeps nothing locally. The peers are the members the openapi lists.
          raft: {
            peers: c.nodes.map((p, i) => ({
              nodeId: p.id,
              host: '127.0.0.1',
              raftPort: raftPorts[i],
              tcPort: p.tc,
              httpPort: p.http,
            })),
          },
          store: { mode: 'db', db: { url: dbUrl(dialect), tablePrefix: c.prefix, lease: LEASE } },
          http: { authToken: TOKEN },
          log: { level: 'info' },
          security: testSecurity(),
          ...extra,
        }),
      );
    }
    for (const n of c.nodes) c.spawn(n);
    await c.holder(60_000);
    return c;
  }

  private spawn(n: DbNode): void {
    const fd = openSync(n.logFile, 'a');
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env[DB_URL_ENV];
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', resolve(REPO_ROOT, 'src/cli/main.ts'), 'start', '--config', n.file],
      { cwd: REPO_ROOT, env, stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    n.proc = proc;
    proc.once('exit', () => {
      if (n.proc === proc) n.proc = null;
    });
  }

  live(): DbNode[] {
    return this.nodes.filter((n) => n.proc !== null);
  }

  byId(id: string): DbNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  async metadata(n: DbNode): Promise<Metadata> {
    const res = await fetchNode(`${nodeBase(n.http)}/metadata/v1/cluster?group=default`, {
      signal: AbortSignal.timeout(2_000),
    });
    if (res.status !== 200) throw new Error(`metadata of ${n.id}: HTTP ${res.status}`);
    return (await res.json()) as Metadata;
  }

  /** The lease holder every live node names. */
  holder(timeoutMs = 20_000): Promise<DbNode> {
    return waitFor(
      'a lease holder every live node names',
      async () => {
        const live = this.live();
        const mds = await Promise.all(live.map((n) => this.metadata(n)));
        const id = mds[0]?.leaderId ?? null;
        if (id === null || mds.some((m) => m.leaderId !== id) || !live.some((n) => n.id === id))
          return undefined;
        return this.byId(id);
      },
      timeoutMs,
      100,
    );
  }

  /** A TM client that sends every call to this node. */
  pinned(n: DbNode): TcClient {
    return new TcClient({
      discovery: new PinnedDiscovery({
        nodeId: n.id,
        transaction: { host: '127.0.0.1', port: n.tc },
        control: { host: '127.0.0.1', port: n.http },
      }),
    });
  }

  /** A client that follows the metadata's leader: the lease holder (RM channels go there). */
  client(): TcClient {
    return new TcClient({ seeds: this.nodes.map((n) => `127.0.0.1:${n.http}`) });
  }

  async kill(n: DbNode): Promise<void> {
    const proc = n.proc;
    if (!proc) return;
    n.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGKILL');
    await Promise.race([exited, sleep(10_000)]);
  }

  tails(lines = 30): string {
    return this.nodes
      .map((n) => {
        let text = '';
        try {
          text = readFileSync(n.logFile, 'utf8').split('\n').slice(-lines).join('\n');
        } catch {
          // no log
        }
        return `--- ${n.id} ---\n${text}`;
      })
      .join('\n');
  }

  async stop(admin: Admin | null): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n)));
    await admin?.dropTables(this.prefix).catch(() => undefined);
    rmSync(this.root, { recursive: true, force: true });
  }
}

describe('db-mode config', () => {
  const keyOf = (raw: unknown, env: NodeJS.ProcessEnv = {}) => {
    try {
      validateConfig(raw, { env });
      return null;
    } catch (err) {
      return err instanceof ConfigError ? err.key : String(err);
    }
  };
  const minimal = {
    node: { id: 'a' },
    store: { mode: 'db', db: { url: 'postgres://u@127.0.0.1:5432/db' } },
  };

  it('needs no Raft section: no data dir, no peers, no raft port checks', () => {
    const c = validateConfig(minimal, { cwd: '/srv' });
    expect(c.store).toEqual({ mode: 'db', db: { url: 'postgres://u@127.0.0.1:5432/db' } });
    expect(c.raft.peers).toEqual([]);
    expect(c.raft.dataDir).toBe('/srv/data/a');
  });

  it('reads the ready configs, and cluster up finds them by prefix', () => {
    for (const prefix of ['db-pg-node', 'db-mysql-node']) {
      const files = findNodeConfigs(join(REPO_ROOT, 'cluster-configs'), prefix);
      expect(files).toHaveLength(3);
      for (const f of files) expect(loadConfig(f, {}).store.mode).toBe('db');
    }
    expect(() => findNodeConfigs(join(REPO_ROOT, 'cluster-configs'), '../x')).toThrow(ConfigError);
  });

  it('takes the store options, and names the key of a bad one', () => {
    const c = validateConfig({
      ...minimal,
      store: {
        mode: 'db',
        db: { url: 'mariadb://r@h/db', tablePrefix: 'c2_', maxConnections: 8, lease: LEASE },
      },
    });
    expect(c.store.db).toEqual({
      url: 'mariadb://r@h/db',
      tablePrefix: 'c2_',
      maxConnections: 8,
      lease: LEASE,
    });
    const db = (extra: object) => ({
      ...minimal,
      store: { mode: 'db', db: { url: 'postgres://u@h/db', ...extra } },
    });
    expect(keyOf(db({ tablePrefix: 'Bad-Prefix' }))).toBe('store.db.tablePrefix');
    expect(keyOf(db({ maxConnections: 1 }))).toBe('store.db.maxConnections');
    expect(keyOf(db({ lease: { leaseMs: 3_000, renewIntervalMs: 2_000 } }))).toBe(
      'store.db.lease.renewIntervalMs',
    );
    expect(keyOf(db({ lease: { ttl: 1 } }))).toBe('store.db.lease.ttl');
    // The decider's hand-off time: 100 ms .. 10 min, a whole number of ms.
    expect(validateConfig(db({ deciderHandOffMs: 1_500 })).store.db?.deciderHandOffMs).toBe(1_500);
    expect(validateConfig(db({})).store.db?.deciderHandOffMs).toBeUndefined();
    for (const bad of [99, 600_001, 2.5, '5s', -1])
      expect(keyOf(db({ deciderHandOffMs: bad }))).toBe('store.db.deciderHandOffMs');
    // The phase-two sweep's slice: 1 .. 1,000,000 sessions per turn (default 1,000).
    expect(validateConfig(minimal).phaseTwo.sweepSliceSessions).toBe(1_000);
    expect(
      validateConfig({ ...minimal, phaseTwo: { sweepSliceSessions: 50 } }).phaseTwo
        .sweepSliceSessions,
    ).toBe(50);
    for (const bad of [0, 1_000_001, 1.5])
      expect(keyOf({ ...minimal, phaseTwo: { sweepSliceSessions: bad } })).toBe(
        'phaseTwo.sweepSliceSessions',
      );
    expect(keyOf(db({ password: 'x' }))).toBe('store.db.password');
    expect(keyOf({ ...minimal, raft: { join: true } })).toBe('raft.join');
    expect(keyOf({ node: { id: 'a' }, store: { mode: 'db' } })).toBe('store.db.url');
    expect(
      keyOf({ node: { id: 'a' }, store: { mode: 'db' } }, { [DB_URL_ENV]: 'postgres://u@h/db' }),
    ).toBeNull();
    expect(
      keyOf({
        ...minimal,
        raft: {
          peers: [{ nodeId: 'a', host: '127.0.0.1', raftPort: 1, tcPort: 2, httpPort: 7091 }],
        },
      }),
    ).toBe('raft.peers[0].tcPort');
  });

  it('the config and the db store name the same URL override variable', () => {
    expect(CONFIG_DB_URL_ENV).toBe(DB_URL_ENV);
  });
});

describe.each([['PostgreSQL', 'postgres'] as const, ['MariaDB', 'mysql'] as const])(
  'db mode on %s: three stateless node processes',
  (_name, dialect) => {
    let cluster: DbCluster;
    let admin: Admin | null = null;
    let rmClient: TcClient;
    let rm: TestRm;
    const tms = new Map<string, TcClient>();
    const tm = (n: DbNode) => {
      let c = tms.get(n.id);
      if (!c) {
        c = cluster.pinned(n);
        tms.set(n.id, c);
      }
      return c;
    };

    beforeAll(async () => {
      admin = await connectAdmin(dialect);
      cluster = await DbCluster.start(dialect);
      rmClient = cluster.client();
      rm = new TestRm(rmClient, ['db-mode-stock'], { applicationId: TM.applicationId });
      await rm.connect(20_000);
    }, 90_000);

    afterAll(async () => {
      for (const c of tms.values()) await c.close().catch(() => undefined);
      await rmClient?.close().catch(() => undefined);
      await cluster?.stop(admin);
      await admin?.close();
    });

    it('shows db mode in the openapi: same holder everywhere, no Raft port, membership changes refused with a typed error', async () => {
      const holder = await cluster.holder();
      for (const n of cluster.nodes) {
        const md = await cluster.metadata(n);
        expect(md.storeMode).toBe('db');
        expect(md.leaderId).toBe(holder.id);
        expect(md.nodes.map((x) => x.nodeId).sort()).toEqual(cluster.nodes.map((x) => x.id).sort());
        expect(md.nodes.every((x) => x.internal === null)).toBe(true);
        const health = await fetchNode(`${nodeBase(n.http)}/health`);
        expect(health.status).toBe(200);
        expect(await health.json()).toMatchObject({
          status: 'UP',
          storeMode: 'db',
          role: n.id === holder.id ? 'leader' : 'follower',
        });
      }
      const change = await fetchNode(
        `${nodeBase(holder.http)}/metadata/v1/changeCluster?raftClusterStr=127.0.0.1:1`,
        { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } },
      );
      expect(change.status).toBe(409);
      expect(((await change.json()) as { error: { code: string } }).error.code).toBe(
        'NOT_SUPPORTED_IN_DB_MODE',
      );
      const unauthenticated = await fetchNode(
        `${nodeBase(holder.http)}/metadata/v1/changeCluster?raftClusterStr=127.0.0.1:1`,
        { method: 'POST' },
      );
      expect(unauthenticated.status).toBe(401);
      const metrics = await (await fetchNode(`${nodeBase(holder.http)}/metrics`)).text();
      expect(metrics).toMatch(/concord_db_lease_holder\{[^}]*\} 1/);
    });

    it('serves begin, branch register and commit on every node (never NOT_LEADER), also across nodes', async () => {
      // Raw calls: the typed client would follow a NOT_LEADER silently.
      for (const n of cluster.nodes) {
        const raw = rawClient(n.tc);
        try {
          const { response, error } = await rawCall(raw, 'Begin', {
            ...TM,
            name: 'raw',
            timeoutMs: 30_000,
            requestId: `raw-${n.id}-${Date.now()}`,
          });
          expect(error).toBeUndefined();
          expect(response.resultCode, `${n.id}: ${JSON.stringify(response.error)}`).toBe(
            'RESULT_CODE_OK',
          );
          expect(response.xid).toMatch(new RegExp(`^127\\.0\\.0\\.1:${n.tc}:`));
        } finally {
          raw.close();
        }
      }
      const xids: Xid[] = [];
      for (const n of cluster.nodes) {
        const xid = await tm(n).begin({ ...TM, name: `on-${n.id}`, timeoutMs: 30_000 });
        await tm(n).branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'db-mode-stock',
          lockKey: `stock:${n.id}`,
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        });
        // The node that decides runs the first pass before answering, holder or not.
        expect(await tm(n).commit(xid)).toBe('Committed');
        xids.push(xid);
      }
      // One transaction through all three nodes.
      const [a, b, c] = cluster.nodes as [DbNode, DbNode, DbNode];
      const xid = await tm(a).begin({ ...TM, name: 'across', timeoutMs: 30_000 });
      await tm(b).branchRegister({
        xid,
        branchType: 'TCC',
        resourceId: 'db-mode-stock',
        lockKey: 'stock:across',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      expect(await tm(c).commit(xid)).toBe('Committed');
      xids.push(xid);
      for (const x of xids) {
        expect(await waitForStatus(tm(a), x, (s) => s === 'Committed', 20_000)).toBe('Committed');
        expect(rm.callsFor(x).map((call) => call.kind)).toEqual(['commit']);
      }
    });

    it('a row locked through one node conflicts through another, until the holder rolls the owner back', async () => {
      const [a, b, c] = cluster.nodes as [DbNode, DbNode, DbNode];
      const owner = await tm(a).begin({ ...TM, name: 'owner', timeoutMs: 30_000 });
      await tm(a).branchRegister({
        xid: owner,
        branchType: 'TCC',
        resourceId: 'db-mode-stock',
        lockKey: 'stock:1,2',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      const other = await tm(b).begin({ ...TM, name: 'other', timeoutMs: 30_000 });
      const conflict = await tm(b)
        .branchRegister({
          xid: other,
          branchType: 'TCC',
          resourceId: 'db-mode-stock',
          lockKey: 'stock:2,3',
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        })
        .then(
          () => null,
          (err: unknown) => err,
        );
      expect(conflict).toBeInstanceOf(LockConflictError);
      expect((conflict as LockConflictError).message).toContain(owner);
      expect(await tm(c).lockQuery({ resourceId: 'db-mode-stock', lockKey: 'stock:2' })).toBe(
        false,
      );
      // Nothing of the refused branch was kept: row 3 is free.
      expect(await tm(c).lockQuery({ resourceId: 'db-mode-stock', lockKey: 'stock:3' })).toBe(true);
      expect(['Rollbacked', 'Rollbacking']).toContain(await tm(c).rollback(owner));
      await waitForStatus(tm(a), owner, (s) => s === 'Rollbacked', 20_000);
      await tm(b).branchRegister({
        xid: other,
        branchType: 'TCC',
        resourceId: 'db-mode-stock',
        lockKey: 'stock:2,3',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      expect(['Committed', 'Committing']).toContain(await tm(b).commit(other));
      await waitForStatus(tm(c), other, (s) => s === 'Committed', 20_000);
    });

    /** A metric's sum over its labels on one node (/metrics). */
    const metricSum = async (n: DbNode, name: string): Promise<number> => {
      const text = await (await fetchNode(`${nodeBase(n.http)}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
        sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    };
    /** The metric on every live node, by node id. */
    const perNode = async (name: string): Promise<Map<string, number>> =>
      new Map(
        await Promise.all(
          cluster.live().map(async (n) => [n.id, await metricSum(n, name)] as const),
        ),
      );
    const CALLS = 'concord_tc_branch_phase_two_total';
    const ENDED = 'concord_tc_global_ended_total';
    const delta = (after: Map<string, number>, before: Map<string, number>, id: string) =>
      (after.get(id) ?? 0) - (before.get(id) ?? 0);
    const totalDelta = (after: Map<string, number>, before: Map<string, number>) =>
      [...after.keys()].reduce((sum, id) => sum + delta(after, before, id), 0);
    const nonHolder = async () => {
      const holder = await cluster.holder();
      return { holder, decider: cluster.live().find((n) => n.id !== holder.id)! };
    };
    const tccBranch = (n: DbNode, xid: Xid, key: string) =>
      tm(n).branchRegister({
        xid,
        branchType: 'TCC',
        resourceId: 'db-mode-stock',
        lockKey: `stock:${key}`,
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
    /** The RM's first commit call of `xid` waits until the returned function answers it. */
    const holdFirstCall = (xid: string) => {
      let answer!: (s: 'PhaseTwo_Committed') => void;
      const held = new Promise<'PhaseTwo_Committed'>((r) => (answer = r));
      rm.behave = (call, attempt) =>
        call.xid === xid && call.kind === 'commit' && attempt === 1
          ? held
          : call.kind === 'commit'
            ? 'PhaseTwo_Committed'
            : 'PhaseTwo_Rollbacked';
      return answer;
    };
    const logOf = (n: DbNode) => readFileSync(n.logFile, 'utf8');

    it('the node that decides runs phase two itself: its calls, none from the holder; each session ends once', async () => {
      const { holder, decider } = await nonHolder();
      const calls = await perNode(CALLS);
      const ended = await perNode(ENDED);
      const xids: Xid[] = [];
      for (let i = 0; i < 5; i++) {
        const xid = await tm(decider).begin({ ...TM, name: `decided-${i}`, timeoutMs: 30_000 });
        await tccBranch(decider, xid, `decided-${i}`);
        // Answered after the decider's own pass: no wait for the holder's due poll.
        expect(await tm(decider).commit(xid)).toBe('Committed');
        xids.push(xid);
      }
      const callsAfter = await perNode(CALLS);
      const endedAfter = await perNode(ENDED);
      expect(delta(callsAfter, calls, decider.id)).toBe(5);
      expect(delta(callsAfter, calls, holder.id)).toBe(0);
      expect(delta(endedAfter, ended, decider.id)).toBe(5);
      expect(totalDelta(endedAfter, ended)).toBe(5);
      for (const x of xids) expect(rm.callsFor(x).map((c) => c.kind)).toEqual(['commit']);
    });

    it('a decider slower than its hand-off time is fenced off: the holder acquires the session, the decider late result is refused, the session ends once', async () => {
      const { holder, decider } = await nonHolder();
      const xid = await tm(decider).begin({ ...TM, name: 'slow-decider', timeoutMs: 60_000 });
      await tccBranch(decider, xid, 'slow-decider');
      const answerFirst = holdFirstCall(xid);
      // The holder's call (the second) is held too, until the decider's late result was refused.
      let answerSecond!: (s: 'PhaseTwo_Committed') => void;
      const second = new Promise<'PhaseTwo_Committed'>((r) => (answerSecond = r));
      const base = rm.behave!;
      rm.behave = (call, attempt) =>
        call.xid === xid && call.kind === 'commit' && attempt === 2 ? second : base(call, attempt);
      const ended = await perNode(ENDED);
      try {
        const commit = tm(decider).commit(xid);
        await waitFor('the decider call', () => (rm.callsFor(xid).length === 1 ? true : undefined));
        // Past the hand-off time the holder takes the session over and calls the RM again.
        await waitFor(
          'the holder call',
          () => (rm.callsFor(xid).length === 2 ? true : undefined),
          30_000,
        );
        answerFirst('PhaseTwo_Committed');
        await waitFor(
          'the decider to be fenced off',
          () =>
            logOf(decider)
              .split('\n')
              .some((l) => l.includes(xid) && l.includes('fenced off by a newer term'))
              ? true
              : undefined,
          20_000,
        );
        const session = await tm(holder).getSession(xid);
        expect(session.status).toBe('Committing');
        expect(session.branches.map((b) => b.status)).toEqual(['Registered']);
        answerSecond('PhaseTwo_Committed');
        expect(await waitForStatus(tm(holder), xid, (s) => s === 'Committed', 20_000)).toBe(
          'Committed',
        );
        expect(['Committing', 'Committed']).toContain(await commit);
        const endedAfter = await perNode(ENDED);
        expect(delta(endedAfter, ended, holder.id)).toBe(1);
        expect(totalDelta(endedAfter, ended)).toBe(1);
        expect(rm.callsFor(xid).map((c) => c.kind)).toEqual(['commit', 'commit']);
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        answerFirst('PhaseTwo_Committed');
        answerSecond('PhaseTwo_Committed');
        rm.behave = null;
      }
    });

    it("a Saga's report repeated on another node is answered, not driven there: the second call is the holder's, after the hand-off", async () => {
      const holder = await cluster.holder();
      const [decider, other] = cluster.live().filter((n) => n.id !== holder.id);
      const xid = await tm(decider!).begin({ ...TM, name: 'saga-again', timeoutMs: 60_000 });
      await tm(decider!).branchRegister({
        xid,
        branchType: 'SAGA',
        resourceId: 'db-mode-stock',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      // The decider's compensation is held until a second call came (from whichever node).
      let answerFirst!: (s: 'PhaseTwo_Rollbacked') => void;
      const held = new Promise<'PhaseTwo_Rollbacked'>((r) => (answerFirst = r));
      rm.behave = (call, attempt) =>
        call.xid === xid && attempt === 1
          ? held
          : call.kind === 'commit'
            ? 'PhaseTwo_Committed'
            : 'PhaseTwo_Rollbacked';
      const calls = await perNode(CALLS);
      try {
        const first = tm(decider!).globalReport(xid, 'Rollbacking');
        await waitFor('the decider call', () => (rm.callsFor(xid).length === 1 ? true : undefined));
        // The TM reports again on another node (its first answer was slow): the same report.
        expect(await tm(other!).globalReport(xid, 'Rollbacking')).toBe('Rollbacking');
        await waitFor(
          'a second call',
          () => (rm.callsFor(xid).length === 2 ? true : undefined),
          30_000,
        );
        const callsAfter = await perNode(CALLS);
        // Not a second pass at the decider's term beside its own: the holder's, fencing it.
        expect(delta(callsAfter, calls, other!.id)).toBe(0);
        expect(delta(callsAfter, calls, holder.id)).toBe(1);
        answerFirst('PhaseTwo_Rollbacked');
        expect(await waitForStatus(tm(holder), xid, (s) => s === 'Rollbacked', 20_000)).toBe(
          'Rollbacked',
        );
        expect(['Rollbacking', 'Rollbacked']).toContain(await first);
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        answerFirst('PhaseTwo_Rollbacked');
        rm.behave = null;
      }
    });

    it("a Saga's different report on another node (Rollbacking, then RollbackRetrying) starts no second pass there at the decider's term: the second call is the holder's, after the hand-off", async () => {
      const holder = await cluster.holder();
      const [decider, other] = cluster.live().filter((n) => n.id !== holder.id);
      const xid = await tm(decider!).begin({ ...TM, name: 'saga-moved', timeoutMs: 60_000 });
      await tm(decider!).branchRegister({
        xid,
        branchType: 'SAGA',
        resourceId: 'db-mode-stock',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      let answerFirst!: (s: 'PhaseTwo_Rollbacked') => void;
      const held = new Promise<'PhaseTwo_Rollbacked'>((r) => (answerFirst = r));
      rm.behave = (call, attempt) =>
        call.xid === xid && attempt === 1
          ? held
          : call.kind === 'commit'
            ? 'PhaseTwo_Committed'
            : 'PhaseTwo_Rollbacked';
      const calls = await perNode(CALLS);
      const ended = await perNode(ENDED);
      try {
        const first = tm(decider!).globalReport(xid, 'Rollbacking');
        await waitFor('the decider call', () => (rm.callsFor(xid).length === 1 ? true : undefined));
        // The TM's engine moves the decided session on, through another node: the report
        // changes it there (Rollbacking -> RollbackRetrying) but decides nothing.
        expect(await tm(other!).globalReport(xid, 'RollbackRetrying')).toBe('RollbackRetrying');
        await waitFor(
          'a second call',
          () => (rm.callsFor(xid).length === 2 ? true : undefined),
          30_000,
        );
        // The node that made the second call counts it once the RM answered it (the first is held).
        const callsAfter = await waitFor('the second call counted', async () => {
          const now = await perNode(CALLS);
          return totalDelta(now, calls) >= 1 ? now : undefined;
        });
        // Before the fix: the other node ran a pass at the decider's term, unfenced, at once.
        expect(delta(callsAfter, calls, other!.id)).toBe(0);
        expect(delta(callsAfter, calls, holder.id)).toBe(1);
        answerFirst('PhaseTwo_Rollbacked');
        expect(await waitForStatus(tm(holder), xid, (s) => s === 'Rollbacked', 20_000)).toBe(
          'Rollbacked',
        );
        expect(['Rollbacking', 'RollbackRetrying', 'Rollbacked']).toContain(await first);
        expect(totalDelta(await perNode(ENDED), ended)).toBe(1);
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        answerFirst('PhaseTwo_Rollbacked');
        rm.behave = null;
      }
    });

    it('kill -9 of the deciding node mid phase two: the holder takes the transaction over and finishes it', async () => {
      const { holder, decider } = await nonHolder();
      const xid = await tm(decider).begin({ ...TM, name: 'dead-decider', timeoutMs: 60_000 });
      await tccBranch(decider, xid, 'dead-decider');
      const answerFirst = holdFirstCall(xid);
      const calls = await perNode(CALLS);
      const ended = await perNode(ENDED);
      try {
        void tm(decider)
          .commit(xid)
          .catch(() => undefined);
        await waitFor('the decider call', () => (rm.callsFor(xid).length === 1 ? true : undefined));
        await cluster.kill(decider);
        expect(await waitForStatus(tm(holder), xid, (s) => s === 'Committed', 30_000)).toBe(
          'Committed',
        );
        expect(rm.callsFor(xid).map((c) => c.kind)).toEqual(['commit', 'commit']);
        const callsAfter = await perNode(CALLS);
        const endedAfter = await perNode(ENDED);
        expect(delta(callsAfter, calls, holder.id)).toBe(1);
        expect(delta(endedAfter, ended, holder.id)).toBe(1);
        expect(totalDelta(endedAfter, ended)).toBe(1);
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        answerFirst('PhaseTwo_Committed');
        rm.behave = null;
      }
    });

    it('kill -9 of the lease holder while it retries a transaction: another node takes the lease and finishes phase two', async () => {
      const { holder, decider } = await nonHolder();
      const epochBefore = (await cluster.metadata(decider)).term;
      // The decider's call fails (retryable): the retry is the holder's, and the RM holds the
      // holder's call: the holder dies in the middle of phase two.
      let holderCall!: () => void;
      const stuck = new Promise<void>((r) => (holderCall = r));
      let release!: (s: 'PhaseTwo_Committed') => void;
      const never = new Promise<'PhaseTwo_Committed'>((r) => (release = r));
      rm.behave = (call, attempt) => {
        if (call.kind !== 'commit') return 'PhaseTwo_Rollbacked';
        if (attempt === 1) return 'PhaseTwo_CommitFailed_Retryable';
        if (attempt === 2) {
          holderCall();
          return never;
        }
        return 'PhaseTwo_Committed';
      };
      try {
        const xid = await tm(decider).begin({ ...TM, name: 'failover', timeoutMs: 60_000 });
        await tccBranch(decider, xid, 'failover');
        expect(await tm(decider).commit(xid)).toBe('CommitRetrying');
        await stuck;
        expect((await tm(decider).getSession(xid)).status).toBe('CommitRetrying');

        // A watch on a survivor answers when the lease changes hands.
        const md = await cluster.metadata(decider);
        const watch = fetchNode(`${nodeBase(decider.http)}/metadata/v1/watch`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ groupTerms: { default: md.term }, timeoutMs: 20_000 }),
          signal: AbortSignal.timeout(25_000),
        });
        const killedAt = Date.now();
        await cluster.kill(holder);

        const next = await cluster.holder(20_000);
        expect(next.id).not.toBe(holder.id);
        const watched = await watch;
        expect(watched.status).toBe(200);
        expect(((await watched.json()) as { metadata: Metadata }).metadata.term).toBeGreaterThan(
          epochBefore,
        );
        expect(await waitForStatus(tm(next), xid, (s) => s === 'Committed', 30_000)).toBe(
          'Committed',
        );
        expect(rm.callsFor(xid).map((c) => c.kind)).toEqual(['commit', 'commit', 'commit']);
        expect((await cluster.metadata(next)).term).toBeGreaterThan(epochBefore);
        // Within the lease (3 s) plus a few renewals and one pass.
        expect(Date.now() - killedAt).toBeLessThan(20_000);
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        release('PhaseTwo_Committed');
        rm.behave = null;
      }
    });
  },
);

/** The retry horizon of the cluster below (phaseTwo.retryHorizonMs): short, to be waited out. */
const HORIZON_MS = 4_000;

describe.each([['PostgreSQL', 'postgres'] as const, ['MariaDB', 'mysql'] as const])(
  'db mode on %s: the retry horizon against a forced resume',
  (_name, dialect) => {
    let cluster: DbCluster;
    let admin: Admin | null = null;
    let rmClient: TcClient;
    let rm: TestRm;
    let ops: TcClient | null = null;

    beforeAll(async () => {
      admin = await connectAdmin(dialect);
      cluster = await DbCluster.start(dialect, {
        // A forced resume's alarm time (now + stuckAfterMs) is the new horizon: long enough
        // for the pass after it on a loaded box.
        phaseTwo: { retryHorizonMs: HORIZON_MS, stuckAfterMs: 60_000 },
      });
      rmClient = cluster.client();
      rm = new TestRm(rmClient, ['db-mode-stock'], { applicationId: TM.applicationId });
      await rm.connect(20_000);
    }, 90_000);

    afterAll(async () => {
      await ops?.close().catch(() => undefined);
      await rmClient?.close().catch(() => undefined);
      await cluster?.stop(admin);
      await admin?.close();
    });

    it("a stop judged before an operator's forced resume and applied after it is refused: the pass in flight does not undo the resume", async () => {
      const holder = await cluster.holder();
      ops = cluster.pinned(holder);
      const xid = await ops.begin({ ...TM, name: 'horizon-resume', timeoutMs: 60_000 });
      const began = Date.now();
      for (const key of ['first', 'second'])
        await ops.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'db-mode-stock',
          lockKey: `stock:horizon-${key}`,
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        });
      // The first branch's first confirm is held past the horizon: the pass that sent it read
      // the session (and its horizon) before the operator's resume.
      let answerFirst!: (s: 'PhaseTwo_Committed') => void;
      const held = new Promise<'PhaseTwo_Committed'>((r) => (answerFirst = r));
      rm.behave = (call, attempt) =>
        call.xid === xid && call.kind === 'commit' && attempt === 1 && rm.callsFor(xid).length === 1
          ? held
          : call.kind === 'commit'
            ? 'PhaseTwo_Committed'
            : 'PhaseTwo_Rollbacked';
      try {
        const commit = ops.commit(xid).catch(() => null);
        await waitFor('the first confirm', () =>
          rm.callsFor(xid).length === 1 ? true : undefined,
        );
        const past = began + HORIZON_MS + 500 - Date.now();
        if (past > 0) await sleep(past);
        // Past the horizon, with the pass in flight: the operator forces a resume (a new horizon).
        await ops.resumeRetry(xid, { operator: 'carol', force: true });
        // The held confirm answers: the old pass reaches the second branch with the horizon it
        // read, and stops the retries — before the fix, for good (StopCommitOrCommitRetry).
        answerFirst('PhaseTwo_Committed');
        const end = await waitForStatus(
          ops,
          xid,
          (s) => s === 'Committed' || s === 'StopCommitOrCommitRetry',
          30_000,
        );
        expect(end).toBe('Committed');
        expect(rm.callsFor(xid).filter((c) => c.kind === 'commit').length).toBeGreaterThanOrEqual(
          2,
        );
        expect(
          readFileSync(holder.logFile, 'utf8')
            .split('\n')
            .some((l) => l.includes(xid) && l.includes('retries stopped, locks kept')),
        ).toBe(false);
        await commit;
      } catch (err) {
        console.error(cluster.tails());
        throw err;
      } finally {
        answerFirst('PhaseTwo_Committed');
        rm.behave = null;
      }
    }, 90_000);
  },
);
