/**
 * The HTTP openapi against a fake Raft group, in process: metadata shape, watch long
 * poll, membership changes (diff, learner → voter, the leader last), authentication,
 * bounded and malformed input — every refusal typed and changing nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '../../src/shared/logger.ts';
import { ClusterView } from '../../src/server/cluster-view.ts';
import { validateConfig, type LimitsConfig } from '../../src/server/config.ts';
import { encodeMemberContext, type MemberEndpoints } from '../../src/server/config/endpoints.ts';
import { OpenApiServer } from '../../src/server/http/server.ts';
import { MembershipManager } from '../../src/server/membership.ts';
import { createNodeMetrics } from '../../src/server/metrics.ts';
import { ClusterDiscovery, type LeaderChangeEvent } from '../../src/client/discovery.ts';
import { NotLeaderError } from '../../src/shared/errors.ts';
import { FakeGroup, endpointsFor } from './fake-raft.ts';
import { freePorts, http } from './helpers.ts';
import type { NodeId } from '../../src/shared/ids.ts';
import { nid } from '../support/node-id.ts';

const TOKEN = 'test-token-0123456789abcdef';
const baseLimits: LimitsConfig = validateConfig({
  node: { id: 'x' },
  raft: { dataDir: '/tmp/x', join: true },
}).limits;

interface Api {
  id: string;
  url: string;
  server: OpenApiServer;
  view: ClusterView;
}

const open: Api[] = [];
afterEach(async () => {
  for (const a of open.splice(0)) {
    await a.server.close();
    a.view.stop();
  }
});

async function startApi(
  group: FakeGroup,
  id: NodeId,
  opts: { port?: number; limits?: Partial<LimitsConfig>; token?: string | null } = {},
): Promise<Api> {
  const control = group.control(id);
  const view = new ClusterView({
    control,
    group: 'default',
    storeMode: 'raft',
    version: '9.9.9',
    healthWindowMs: 1_000,
    knownEndpoints: new Map(),
    logger: silentLogger(),
  });
  view.start();
  const limits = {
    ...baseLimits,
    learnerCatchUpTimeoutMs: 1_000,
    transferTimeoutMs: 2_000,
    ...opts.limits,
  };
  const membership = new MembershipManager(
    control,
    view,
    {
      changeTimeoutMs: limits.changeTimeoutMs,
      learnerCatchUpTimeoutMs: limits.learnerCatchUpTimeoutMs,
      learnerCatchUpMaxLagEntries: limits.learnerCatchUpMaxLagEntries,
      transferTimeoutMs: limits.transferTimeoutMs,
      electionTimeoutMs: 500,
    },
    silentLogger(),
  );
  const metrics = createNodeMetrics({ node: id, group: 'default' }, { processMetrics: false });
  metrics.bindRaft(control);
  const server = new OpenApiServer({
    host: '127.0.0.1',
    port: opts.port ?? 0,
    view,
    membership,
    metrics,
    limits,
    authToken: opts.token === undefined ? TOKEN : opts.token,
    logger: silentLogger(),
  });
  const port = await server.listen();
  const api = { id, url: `http://127.0.0.1:${port}`, server, view };
  open.push(api);
  return api;
}

describe('GET /metadata/v1/cluster', () => {
  it("answers Seata's shape: storeMode, term, and each member's role and endpoints", async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node2'), 3);
    const a = await startApi(g, nid('node1'));
    const r = await http('GET', `${a.url}/metadata/v1/cluster?group=default`);
    expect(r.status).toBe(200);
    expect(r.body.storeMode).toBe('raft');
    expect(r.body.term).toBe(3);
    expect(r.body.leaderId).toBe('node2');
    expect(r.body.nodes.map((n: any) => [n.nodeId, n.role])).toEqual([
      ['node1', 'FOLLOWER'],
      ['node2', 'LEADER'],
      ['node3', 'FOLLOWER'],
    ]);
    const n1 = r.body.nodes[0];
    expect(n1).toMatchObject({
      group: 'default',
      term: 3,
      control: { host: '127.0.0.1', port: 17091 },
      transaction: { host: '127.0.0.1', port: 18091 },
      internal: { host: '127.0.0.1', port: 19091 },
      healthy: true,
      version: '9.9.9',
    });
    // A follower cannot judge other followers' health.
    expect(r.body.nodes[2].healthy).toBeNull();
  });

  it('shows learners as LEARNER and, on the leader, each member’s lag', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    await g.control(nid('node1')).changeMembership({
      type: 'addLearner',
      nodeId: nid('node3'),
      context: encodeMemberContext(endpointsFor(3)),
    });
    g.match.set(nid('node3'), 4);
    const r = await http('GET', `${a.url}/metadata/v1/cluster`);
    const n3 = r.body.nodes.find((n: any) => n.nodeId === 'node3');
    expect(n3.role).toBe('LEARNER');
    expect(n3.lag).toBe(g.lastIndex - 4);
  });

  it('refuses an unknown group with 404 and a typed error', async () => {
    const g = new FakeGroup([nid('node1')]);
    const a = await startApi(g, nid('node1'));
    const r = await http('GET', `${a.url}/metadata/v1/cluster?group=other`);
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ name: 'UnknownGroupError', code: 'UNKNOWN_GROUP' });
  });

  it('answers unknown routes with 404 and wrong methods with 405, typed', async () => {
    const g = new FakeGroup([nid('node1')]);
    const a = await startApi(g, nid('node1'));
    expect((await http('GET', `${a.url}/nope`)).body.error.code).toBe('NOT_FOUND');
    const r = await http('POST', `${a.url}/metadata/v1/cluster`);
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('GET');
  });

  it('survives garbage on the socket and odd request targets', async () => {
    const g = new FakeGroup([nid('node1')]);
    const a = await startApi(g, nid('node1'));
    const port = Number(new URL(a.url).port);
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        const sock = connect(port, '127.0.0.1', () => sock.end(text));
        let out = '';
        sock.on('data', (d) => (out += d.toString()));
        sock.on('close', () => resolve(out));
        sock.on('error', () => resolve(out));
      });
    expect(await raw('GET //x:99999 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')).toMatch(
      /^HTTP\/1\.1 (400|404)/,
    );
    expect(await raw('\x00\x01\x02 not http at all\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect((await http('GET', `${a.url}/health`)).status).toBe(200);
  });
});

describe('POST /metadata/v1/watch', () => {
  it('answers at once when the client’s term is stale', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'), 5);
    const a = await startApi(g, nid('node2'));
    const r = await http('POST', `${a.url}/metadata/v1/watch`, {
      body: { groupTerms: { default: 4 } },
    });
    expect(r.status).toBe(200);
    expect(r.body.changed).toEqual(['default']);
    expect(r.body.groupTerms).toEqual({ default: 5 });
    expect(r.body.metadata.leaderId).toBe('node1');
  });

  it('holds the request until the term changes', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'), 5);
    const a = await startApi(g, nid('node2'));
    const started = Date.now();
    const pending = http('POST', `${a.url}/metadata/v1/watch`, {
      body: { groupTerms: { default: 5 }, timeoutMs: 10_000 },
    });
    await sleep(300);
    g.elect(nid('node2'), 6);
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.body.metadata).toMatchObject({ term: 6, leaderId: 'node2' });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('answers a membership change within the same term when given the metadata version', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'), 5);
    const a = await startApi(g, nid('node2'));
    const md = (await http('GET', `${a.url}/metadata/v1/cluster`)).body;
    const pending = http('POST', `${a.url}/metadata/v1/watch`, {
      body: {
        groupTerms: { default: 5 },
        groupVersions: { default: md.metadataVersion },
        timeoutMs: 10_000,
      },
    });
    await sleep(200);
    await g.control(nid('node1')).changeMembership({
      type: 'addLearner',
      nodeId: nid('node3'),
      context: encodeMemberContext(endpointsFor(3)),
    });
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.body.metadata.term).toBe(5);
    expect(r.body.metadata.nodes.map((n: any) => n.nodeId)).toContain('node3');
  });

  it('answers 304 after the timeout (clamped to at least 1 s) when nothing changed', async () => {
    const g = new FakeGroup([nid('node1')]);
    g.elect(nid('node1'), 2);
    const a = await startApi(g, nid('node1'));
    const started = Date.now();
    const r = await http('POST', `${a.url}/metadata/v1/watch`, {
      body: { groupTerms: { default: 2 }, timeoutMs: 10 },
    });
    expect(r.status).toBe(304);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
  });

  it("accepts Seata's form body (group=term)", async () => {
    const g = new FakeGroup([nid('node1')]);
    g.elect(nid('node1'), 2);
    const a = await startApi(g, nid('node1'));
    const r = await http('POST', `${a.url}/metadata/v1/watch`, {
      raw: 'default=1',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(r.status).toBe(200);
    expect(r.body.groupTerms).toEqual({ default: 2 });
  });

  it('bounds concurrent watchers: beyond the limit, 503 TOO_MANY_WATCHERS', async () => {
    const g = new FakeGroup([nid('node1')]);
    g.elect(nid('node1'), 2);
    const a = await startApi(g, nid('node1'), { limits: { maxWatchers: 2 } });
    const held = [1, 2].map(() =>
      http('POST', `${a.url}/metadata/v1/watch`, {
        body: { groupTerms: { default: 2 }, timeoutMs: 5_000 },
      }),
    );
    await sleep(200);
    const r = await http('POST', `${a.url}/metadata/v1/watch`, {
      body: { groupTerms: { default: 2 } },
    });
    expect(r.status).toBe(503);
    expect(r.body.error).toMatchObject({ code: 'TOO_MANY_WATCHERS', retryable: true });
    g.elect(nid('node1'), 3);
    expect((await Promise.all(held)).map((x) => x.status)).toEqual([200, 200]);
  });

  it('refuses malformed bodies with typed 400s, and oversized ones with 413', async () => {
    const g = new FakeGroup([nid('node1')]);
    const a = await startApi(g, nid('node1'));
    const url = `${a.url}/metadata/v1/watch`;
    const bad = [
      { raw: '{not json', code: 'BAD_REQUEST' },
      { raw: '[1,2]', code: 'BAD_REQUEST' },
      { body: {}, code: 'BAD_REQUEST' },
      { body: { groupTerms: { default: 'x' } }, code: 'BAD_REQUEST' },
      { body: { groupTerms: { default: -1 } }, code: 'BAD_REQUEST' },
      { body: { groupTerms: { default: 1 }, timeoutMs: 'soon' }, code: 'BAD_REQUEST' },
      { body: { groupTerms: { other: 1 } }, code: 'UNKNOWN_GROUP' },
    ];
    for (const b of bad) {
      const r = await http('POST', url, b);
      expect(r.body?.error?.code, JSON.stringify(b)).toBe(b.code);
    }
    const huge = await http('POST', url, {
      raw: JSON.stringify({ groupTerms: { default: 1 }, pad: 'x'.repeat(100_000) }),
    });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    // Still serving.
    expect((await http('GET', `${a.url}/health`)).status).toBe(200);
  });
});

describe('POST /metadata/v1/changeCluster', () => {
  const node4 = (ep: MemberEndpoints = endpointsFor(4)) => ({
    nodeId: 'node4',
    raft: `${ep.raft.host}:${ep.raft.port}`,
    transaction: `${ep.transaction.host}:${ep.transaction.port}`,
    control: `${ep.control.host}:${ep.control.port}`,
  });

  it('refuses without a valid bearer token (401) and changes nothing', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    const before = JSON.stringify(g.conf);
    const url = `${a.url}/metadata/v1/changeCluster`;
    for (const token of [undefined, '', 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1)]) {
      const r = await http('POST', url, {
        body: { members: [{ nodeId: 'node1' }] },
        ...(token === undefined ? {} : { token }),
      });
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe('UNAUTHORIZED');
      expect(r.headers.get('www-authenticate')).toContain('Bearer');
    }
    const basic = await http('POST', url, {
      body: { members: [{ nodeId: 'node1' }] },
      headers: { authorization: `Basic ${TOKEN}` },
    });
    expect(basic.status).toBe(401);
    expect(JSON.stringify(g.conf)).toBe(before);
    expect(g.proposed).toEqual([]);
  });

  it('refuses every change when the node has no token configured', async () => {
    const g = new FakeGroup([nid('node1')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'), { token: null });
    const r = await http(
      'POST',
      `${a.url}/metadata/v1/changeCluster?raftClusterStr=127.0.0.1:19091`,
      { token: TOKEN },
    );
    expect(r.status).toBe(401);
    expect(r.body.error.message).toContain('no http.authToken');
  });

  it('refuses malformed member lists with 400 and changes nothing', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    const before = JSON.stringify(g.conf);
    const url = `${a.url}/metadata/v1/changeCluster`;
    const cases: Array<{ q?: string; body?: unknown; raw?: string; msg: RegExp }> = [
      { q: 'raftClusterStr=', msg: /removing every node/ },
      { q: 'raftClusterStr=127.0.0.1:19091,,127.0.0.1:19092', msg: /empty entry/ },
      { q: 'raftClusterStr=not-an-address', msg: /not a valid "host:port"/ },
      { q: 'raftClusterStr=127.0.0.1:99999', msg: /not a valid "host:port"/ },
      { q: 'raftClusterStr=127.0.0.1:19099', msg: /not the raft address of a current member/ },
      { body: { members: [] }, msg: /removing every node/ },
      { body: { members: 'node1' }, msg: /must be a list/ },
      { body: { members: [{ nodeId: 'bad id!' }] }, msg: /nodeId must be a node id/ },
      { body: { members: [{ nodeId: 'node1' }, { nodeId: 'node1' }] }, msg: /listed twice/ },
      { body: { members: [{ nodeId: 'node4' }] }, msg: /needs its raft, transaction and control/ },
      {
        body: { members: [{ nodeId: 'node4', raft: '127.0.0.1:1' }] },
        msg: /all of raft, transaction and control/,
      },
      {
        body: {
          members: [
            { nodeId: 'node4', raft: 'x', transaction: '127.0.0.1:2', control: '127.0.0.1:3' },
          ],
        },
        msg: /members\[0\]\.raft/,
      },
      {
        body: { members: [{ ...node4(), raft: '127.0.0.1:19091' }] },
        msg: /already used by member node1/,
      },
      { body: { members: [{ nodeId: 'node1', extra: 1 }] }, msg: /not a known field/ },
      {
        body: {
          members: [
            {
              nodeId: 'node1',
              raft: '127.0.0.1:1',
              transaction: '127.0.0.1:2',
              control: '127.0.0.1:3',
            },
          ],
        },
        msg: /other endpoints/,
      },
      { body: {}, msg: /missing member list/ },
      { raw: '{"members": [', msg: /malformed JSON/ },
      {
        q: 'raftClusterStr=127.0.0.1:19091',
        body: { members: [{ nodeId: 'node1' }] },
        msg: /either raftClusterStr or/,
      },
    ];
    for (const c of cases) {
      const r = await http('POST', `${url}${c.q ? `?${c.q}` : ''}`, {
        token: TOKEN,
        ...(c.raw !== undefined ? { raw: c.raw } : c.body !== undefined ? { body: c.body } : {}),
      });
      expect(r.status, JSON.stringify(c)).toBe(400);
      expect(r.body.error.code).toBe('BAD_REQUEST');
      expect(r.body.error.message).toMatch(c.msg);
    }
    expect(JSON.stringify(g.conf)).toBe(before);
    expect(g.proposed).toEqual([]);
  });

  it('answers a follower’s request with 421 naming the leader and its control endpoint', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node2'));
    const a = await startApi(g, nid('node1'));
    const r = await http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [{ nodeId: 'node1' }] },
    });
    expect(r.status).toBe(421);
    expect(r.body.error.code).toBe('NOT_LEADER');
    expect(r.body.leader).toEqual({
      nodeId: 'node2',
      control: { host: '127.0.0.1', port: 17092 },
      transaction: { host: '127.0.0.1', port: 18092 },
    });
  });

  it('adds a node as a learner, promotes it once caught up, then removes others one at a time, the leader last', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    g.match.set(nid('node4'), 0);
    // The learner catches up a little later.
    setTimeout(() => g.match.set(nid('node4'), g.lastIndex), 300);
    const r = await http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [node4(), { nodeId: 'node3' }] },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.steps).toEqual([
      { type: 'addLearner', nodeId: 'node4' },
      { type: 'addVoter', nodeId: 'node4' },
      { type: 'removeNode', nodeId: 'node2' },
      { type: 'removeNode', nodeId: 'node1' },
    ]);
    expect(g.conf.voters).toEqual(['node3', 'node4']);
    expect(JSON.parse(g.conf.context[nid('node4')]!)).toEqual({
      raft: '127.0.0.1:19094',
      transaction: '127.0.0.1:18094',
      control: '127.0.0.1:17094',
    });
  });

  it('accepts Seata’s raftClusterStr to shrink the group', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    const r = await http(
      'POST',
      `${a.url}/metadata/v1/changeCluster?raftClusterStr=127.0.0.1:19091,127.0.0.1:19092`,
      { token: TOKEN },
    );
    expect(r.status).toBe(200);
    expect(r.body.steps).toEqual([{ type: 'removeNode', nodeId: 'node3' }]);
    expect(r.body.metadata.nodes.map((n: any) => n.nodeId)).toEqual(['node1', 'node2']);
  });

  it('gives up with 504 when a learner does not catch up, leaving it a learner', async () => {
    const g = new FakeGroup([nid('node1')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'), { limits: { learnerCatchUpTimeoutMs: 300 } });
    g.match.set(nid('node4'), 0);
    const r = await http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [{ nodeId: 'node1' }, node4()] },
    });
    expect(r.status).toBe(504);
    expect(r.body.error.code).toBe('TIMEOUT');
    expect(r.body.error.message).toMatch(
      /learner node4 did not catch up.*steps already committed: addLearner node4/,
    );
    expect(g.conf.learners).toEqual(['node4']);
  });

  it('refuses a second change while one is running (409)', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    let open!: () => void;
    g.gate = new Promise((r) => (open = r));
    const first = http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [{ nodeId: 'node1' }] },
    });
    await sleep(200);
    const second = await http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [{ nodeId: 'node1' }, { nodeId: 'node2' }] },
    });
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('CHANGE_IN_PROGRESS');
    g.gate = null;
    open();
    expect((await first).status).toBe(200);
    expect(g.conf.voters).toEqual(['node1']);
  });

  it('answers a no-op change with no steps', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    const r = await http('POST', `${a.url}/metadata/v1/changeCluster`, {
      token: TOKEN,
      body: { members: [{ nodeId: 'node2' }, { nodeId: 'node1' }] },
    });
    expect(r.status).toBe(200);
    expect(r.body.steps).toEqual([]);
  });
});

describe('POST /metadata/v1/transferLeader', () => {
  it('moves leadership to the named voter (authenticated)', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')]);
    g.elect(nid('node1'));
    const a = await startApi(g, nid('node1'));
    expect(
      (await http('POST', `${a.url}/metadata/v1/transferLeader?nodeId=node3`, { token: 'nope' }))
        .status,
    ).toBe(401);
    expect(g.leader).toBe('node1');
    const bad = await http('POST', `${a.url}/metadata/v1/transferLeader?nodeId=node9`, {
      token: TOKEN,
    });
    expect(bad.status).toBe(400);
    const r = await http('POST', `${a.url}/metadata/v1/transferLeader?nodeId=node3`, {
      token: TOKEN,
    });
    expect(r.status).toBe(200);
    expect(g.leader).toBe('node3');
    expect(r.body.leader.nodeId).toBe('node3');
  });
});

describe('GET /health and /metrics', () => {
  it('reports liveness, role, term and leader', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node2'), 4);
    const a = await startApi(g, nid('node1'));
    const r = await http('GET', `${a.url}/health`);
    expect(r.body).toMatchObject({
      status: 'UP',
      nodeId: 'node1',
      role: 'follower',
      term: 4,
      leader: { nodeId: 'node2' },
      member: true,
    });
  });

  it('serves Prometheus text with the Raft gauges', async () => {
    const g = new FakeGroup([nid('node1'), nid('node2')]);
    g.elect(nid('node1'), 7);
    const a = await startApi(g, nid('node1'));
    const r = await http('GET', `${a.url}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain('text/plain');
    const text = String(r.body);
    expect(text).toMatch(/concord_raft_term\{node="node1",group="default"\} 7/);
    expect(text).toMatch(/concord_raft_role\{role="leader",node="node1",group="default"\} 1/);
    expect(text).toMatch(/concord_raft_commit_index\{node="node1",group="default"\} 10/);
    expect(text).toContain('concord_raft_rpc_duration_seconds');
    expect(text).toContain('concord_http_request_duration_seconds');
  });
});

describe('ClusterDiscovery against the openapi', () => {
  it('watches a follower and learns a new leader from the watch, without a failed call', async () => {
    const ports = await freePorts(3);
    const contexts: Record<string, string> = {};
    ports.forEach((p, i) => {
      contexts[`node${i + 1}`] = encodeMemberContext({
        raft: { host: '127.0.0.1', port: 19000 + i },
        transaction: { host: '127.0.0.1', port: 18000 + i },
        control: { host: '127.0.0.1', port: p },
      });
    });
    const g = new FakeGroup([nid('node1'), nid('node2'), nid('node3')], contexts);
    g.elect(nid('node1'), 2);
    for (let i = 0; i < 3; i++) await startApi(g, nid(`node${i + 1}`), { port: ports[i]! });
    // These in-process servers are plain HTTP (no tls given): test/ops/https.test.ts has HTTPS.
    const d = new ClusterDiscovery({
      seeds: [`127.0.0.1:${ports[2]}`],
      watchTimeoutMs: 5_000,
      tls: null,
    });
    try {
      await d.start();
      expect(d.leader()?.nodeId).toBe('node1');
      expect(d.leader()?.transaction).toEqual({ host: '127.0.0.1', port: 18000 });
      const changes: LeaderChangeEvent[] = [];
      d.on('leaderChange', (e) => changes.push(e));
      await sleep(200);
      // An election: first a term without a leader, then the winner.
      g.elect(null, 3);
      await sleep(150);
      g.elect(nid('node3'), 3);
      const deadline = Date.now() + 3_000;
      while (d.leader()?.nodeId !== 'node3' && Date.now() < deadline) await sleep(20);
      expect(d.leader()?.nodeId).toBe('node3');
      expect(changes.at(-1)).toMatchObject({ leader: { nodeId: 'node3' }, term: 3 });
      const attempts: string[] = [];
      const v = await d.call(async (leader) => {
        attempts.push(leader.nodeId);
        return 'ok';
      });
      expect(v).toBe('ok');
      expect(attempts).toEqual(['node3']);
    } finally {
      d.close();
    }
  });

  it('retries a not-leader refusal on the named leader, but never retries an unknown outcome without a request id', async () => {
    const ports = await freePorts(2);
    const contexts: Record<string, string> = {};
    ports.forEach((p, i) => {
      contexts[`node${i + 1}`] = encodeMemberContext({
        raft: { host: '127.0.0.1', port: 19000 + i },
        transaction: { host: '127.0.0.1', port: 18000 + i },
        control: { host: '127.0.0.1', port: p },
      });
    });
    const g = new FakeGroup([nid('node1'), nid('node2')], contexts);
    g.elect(nid('node1'), 2);
    for (let i = 0; i < 2; i++) await startApi(g, nid(`node${i + 1}`), { port: ports[i]! });
    const d = new ClusterDiscovery({
      seeds: [`127.0.0.1:${ports[0]}`],
      watch: false,
      backoffBaseMs: 10,
      tls: null,
    });
    try {
      await d.start();
      g.elect(nid('node2'), 3);
      const seen: string[] = [];
      const v = await d.call(async (leader) => {
        seen.push(leader.nodeId);
        if (leader.nodeId !== 'node2') throw new NotLeaderError('node2');
        return 42;
      });
      expect(v).toBe(42);
      expect(seen).toEqual(['node1', 'node2']);

      let calls = 0;
      const timeout = Object.assign(new Error('deadline'), { code: 4 });
      await expect(
        d.call(async () => {
          calls++;
          throw timeout;
        }),
      ).rejects.toBe(timeout);
      expect(calls).toBe(1);

      calls = 0;
      await expect(
        d.call(
          async () => {
            calls++;
            if (calls < 3) throw timeout;
            return 'done';
          },
          { requestId: 'req-1' },
        ),
      ).resolves.toBe('done');
      expect(calls).toBe(3);
    } finally {
      d.close();
    }
  });
});
