/**
 * Cluster operations on real processes: `concord cluster up` on free loopback ports with a
 * tmp data dir; leader failover seen by a watching discovery client; membership changes
 * (a fourth node joins as learner and is promoted, then leaves; the leader removes
 * itself); leadership transfer; refused changes that change nothing.
 */
import { raftNodeConfig, writeConfig } from '../support/cluster.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterDiscovery, type LeaderChangeEvent } from '../../src/client/discovery.ts';
import { fetchHealth } from '../../src/client/http-metadata.ts';
import { freePorts, http, isAlive, killPid, runCli, spawnCli, waitFor } from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const TOKEN = 'ops-test-token-0123456789';
const TICK_MS = 50;

interface NodeSpec {
  id: string;
  http: number;
  tc: number;
  raft: number;
  file: string;
}

const root = mkdtempSync(join(tmpdir(), 'concord-ops-'));
const configsDir = join(root, 'configs');
const nodes: NodeSpec[] = [];
const extraPids = new Set<number>();
let up: ReturnType<typeof spawnCli> | null = null;

const url = (n: NodeSpec, path: string) => `${nodeBase(n.http)}${path}`;
const byId = (id: string) => nodes.find((n) => n.id === id)!;
function writeNodeConfig(n: NodeSpec, peers: NodeSpec[], joining: boolean): void {
  writeConfig(
    n.file,
    raftNodeConfig(n, {
      peers,
      dataRoot: join(root, 'data'),
      tickMs: TICK_MS,
      join: joining,
      authToken: TOKEN,
    }),
  );
}

async function metadata(n: NodeSpec): Promise<any> {
  const r = await http('GET', url(n, '/metadata/v1/cluster?group=default'), { timeoutMs: 2_000 });
  expect(r.status).toBe(200);
  return r.body;
}

/** The leader every given live node agrees on, with its metadata. */
async function agreedLeader(
  live: NodeSpec[],
  timeoutMs = 15_000,
): Promise<{ id: string; term: number; md: any }> {
  return waitFor(
    `a leader agreed by ${live.map((n) => n.id).join(', ')}`,
    async () => {
      const mds = await Promise.all(live.map(metadata));
      const leaders = new Set(mds.map((m) => m.leaderId));
      const id = mds[0].leaderId as string | null;
      if (leaders.size !== 1 || id === null) return undefined;
      const fromLeader = mds.find((m) => m.answeredBy === id);
      if (!fromLeader) return undefined;
      return { id, term: fromLeader.term as number, md: fromLeader };
    },
    timeoutMs,
  );
}

async function pidOf(n: NodeSpec): Promise<number> {
  const r = await http('GET', url(n, '/health'));
  return r.body.pid as number;
}

function startNode(n: NodeSpec): void {
  const child = spawnCli(['start', '--config', n.file]);
  extraPids.add(child.pid!);
}

beforeAll(async () => {
  mkdirSync(configsDir, { recursive: true });
  mkdirSync(join(root, 'extra'), { recursive: true });
  const ports = await freePorts(12);
  for (let i = 0; i < 4; i++) {
    const id = `node${i + 1}`;
    nodes.push({
      id,
      http: ports[3 * i]!,
      tc: ports[3 * i + 1]!,
      raft: ports[3 * i + 2]!,
      file: i < 3 ? join(configsDir, `${id}.yaml`) : join(root, 'extra', `${id}.yaml`),
    });
  }
  const first3 = nodes.slice(0, 3);
  for (const n of first3) writeNodeConfig(n, first3, false);
  writeNodeConfig(nodes[3]!, first3, true);

  up = spawnCli(['cluster', 'up', '--dir', configsDir]);
  await waitFor(
    '"Cluster is up" from concord cluster up',
    () =>
      up!.output().includes('Cluster is up')
        ? true
        : up!.exitCode !== null
          ? Promise.reject(new Error(up!.output()))
          : undefined,
    60_000,
    100,
  );
}, 90_000);

afterAll(async () => {
  // Collect every node pid we can still see, then stop: cluster up first (it stops its
  // children), then the nodes started separately, then anything left, by pid.
  const pids = new Set<number>(extraPids);
  for (const n of nodes) {
    try {
      pids.add(await pidOf(n));
    } catch {
      // not running
    }
  }
  if (up && up.exitCode === null) {
    const exited = new Promise((r) => up!.once('exit', r));
    up.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
    if (up.exitCode === null) up.kill('SIGKILL');
  }
  for (const pid of extraPids) await killPid(pid, 'SIGTERM', 10_000);
  for (const pid of pids) await killPid(pid, 'SIGKILL');
  rmSync(root, { recursive: true, force: true });
}, 60_000);

describe('a three-node cluster', () => {
  it('cluster up starts three nodes: one leader and two followers in every node’s metadata', async () => {
    const first3 = nodes.slice(0, 3);
    const { id, md } = await agreedLeader(first3);
    expect(md.storeMode).toBe('raft');
    expect(md.nodes.map((n: any) => n.nodeId)).toEqual(['node1', 'node2', 'node3']);
    expect(md.nodes.filter((n: any) => n.role === 'LEADER').map((n: any) => n.nodeId)).toEqual([
      id,
    ]);
    expect(md.nodes.filter((n: any) => n.role === 'FOLLOWER')).toHaveLength(2);
    for (const n of md.nodes) {
      const spec = byId(n.nodeId);
      expect(n).toMatchObject({
        group: 'default',
        term: md.term,
        control: { host: '127.0.0.1', port: spec.http },
        transaction: { host: '127.0.0.1', port: spec.tc },
        internal: { host: '127.0.0.1', port: spec.raft },
      });
    }
    // The leader sees every member answer.
    await waitFor('all members healthy on the leader', async () =>
      (await metadata(byId(id))).nodes.every((n: any) => n.healthy === true) ? true : undefined,
    );
    expect(up!.output()).toContain(nodeBase(nodes[0]!.http));

    // The leader's /metrics are fed by its driver: persist and peer round-trip histograms,
    // and the hot-path counters.
    const metric = (text: string, name: string) =>
      Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    await waitFor('the leader reports its rounds and round trips', async () => {
      const res = await fetchNode(`${nodeBase(byId(id).http)}/metrics`);
      const text = await res.text();
      const ok =
        metric(text, 'concord_raft_persist_duration_seconds_count') > 0 &&
        /concord_raft_rpc_duration_seconds_count\{[^}]*type="heartbeat"[^}]*\} [1-9]/.test(text) &&
        /concord_raft_rpc_duration_seconds_count\{[^}]*type="app"[^}]*\} [1-9]/.test(text) &&
        metric(text, 'concord_raft_rounds_total') > 0 &&
        metric(text, 'concord_raft_round_entries_total') > 0;
      return ok ? true : undefined;
    });
  });

  it('cluster status prints members, roles, term and lag (table and --json)', async () => {
    const table = await runCli(['cluster', 'status', '--server', `127.0.0.1:${nodes[1]!.http}`]);
    expect(table.code, table.out).toBe(0);
    expect(table.out).toMatch(/NODE\s+ROLE\s+HEALTHY\s+LAG/);
    expect(table.out).toMatch(/node1\s+(LEADER|FOLLOWER)/);
    const json = await runCli([
      'cluster',
      'status',
      '--server',
      `127.0.0.1:${nodes[2]!.http}`,
      '--json',
    ]);
    expect(json.code, json.out).toBe(0);
    const md = JSON.parse(json.out);
    expect(md.nodes).toHaveLength(3);
    expect(md.nodes.every((n: any) => typeof n.lag === 'number')).toBe(true);
  });

  it('bad tokens and malformed member lists are refused and change nothing', async () => {
    const { id } = await agreedLeader(nodes.slice(0, 3));
    const leader = byId(id);
    const before = (await metadata(leader)).metadataVersion;
    const change = (q: string, opts: Parameters<typeof http>[2]) =>
      http('POST', url(leader, `/metadata/v1/changeCluster${q}`), opts);
    expect((await change('?raftClusterStr=127.0.0.1:1', {})).status).toBe(401);
    expect(
      (await change('', { token: 'not-the-token-at-all', body: { members: [{ nodeId: id }] } }))
        .status,
    ).toBe(401);
    expect(
      (await http('POST', url(leader, `/metadata/v1/transferLeader?nodeId=${id}`), { token: 'x' }))
        .status,
    ).toBe(401);
    for (const body of [
      { members: [] },
      { members: [{ nodeId: 'node9' }] },
      { members: [{ nodeId: id }, { nodeId: id }] },
    ]) {
      const r = await change('', { token: TOKEN, body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('BAD_REQUEST');
    }
    expect((await change('?raftClusterStr=', { token: TOKEN })).status).toBe(400);
    expect((await change('', { token: TOKEN, raw: '{"members":' })).status).toBe(400);
    const cli = await runCli([
      'cluster',
      'change',
      '--server',
      `127.0.0.1:${leader.http}`,
      '--token',
      'wrong-token-wrong-token',
      '--members',
      'node1',
      '--yes',
    ]);
    expect(cli.code).not.toBe(0);
    expect(cli.out).toContain('bearer token');
    const after = await metadata(leader);
    expect(after.metadataVersion).toBe(before);
    expect(after.nodes.map((n: any) => n.nodeId)).toEqual(['node1', 'node2', 'node3']);
  });

  it('a follower refuses a change with 421 naming the leader', async () => {
    const { id } = await agreedLeader(nodes.slice(0, 3));
    const follower = nodes.slice(0, 3).find((n) => n.id !== id)!;
    const r = await http('POST', url(follower, '/metadata/v1/changeCluster'), {
      token: TOKEN,
      body: { members: [{ nodeId: 'node1' }, { nodeId: 'node2' }, { nodeId: 'node3' }] },
    });
    expect(r.status).toBe(421);
    expect(r.body.leader).toMatchObject({
      nodeId: id,
      control: { host: '127.0.0.1', port: byId(id).http },
    });
  });

  it('transfers leadership to a follower (CLI, following the not-leader answer)', async () => {
    const { id, term } = await agreedLeader(nodes.slice(0, 3));
    const target = nodes.slice(0, 3).find((n) => n.id !== id)!;
    const other = nodes.slice(0, 3).find((n) => n.id !== id && n.id !== target.id)!;
    const r = await runCli([
      'cluster',
      'transfer',
      '--server',
      `127.0.0.1:${other.http}`,
      '--to',
      target.id,
      '--token',
      TOKEN,
    ]);
    expect(r.code, r.out).toBe(0);
    const now = await agreedLeader(nodes.slice(0, 3));
    expect(now.id).toBe(target.id);
    expect(now.term).toBeGreaterThan(term);
  });

  it('SIGKILL of the leader: the survivors show a new leader within seconds, and a watching discovery client learns it without a failed call', async () => {
    const first3 = nodes.slice(0, 3);
    const { id: oldLeader } = await agreedLeader(first3);
    const d = new ClusterDiscovery({
      seeds: first3.map((n) => `127.0.0.1:${n.http}`),
      watchTimeoutMs: 10_000,
    });
    try {
      await d.start();
      expect(d.leader()?.nodeId).toBe(oldLeader);
      expect(d.leader()?.transaction.port).toBe(byId(oldLeader).tc);
      const changes: LeaderChangeEvent[] = [];
      d.on('leaderChange', (e) => changes.push(e));
      const learned = new Promise<LeaderChangeEvent>((resolve) =>
        d.on('leaderChange', (e) => e.leader && e.leader.nodeId !== oldLeader && resolve(e)),
      );

      const pid = await pidOf(byId(oldLeader));
      const killedAt = Date.now();
      await killPid(pid, 'SIGKILL');
      const survivors = first3.filter((n) => n.id !== oldLeader);
      const after = await agreedLeader(survivors, 10_000);
      expect(after.id).not.toBe(oldLeader);
      expect(Date.now() - killedAt).toBeLessThan(10_000);
      expect(after.md.nodes.find((n: any) => n.nodeId === after.id).role).toBe('LEADER');

      const e = await Promise.race([
        learned,
        new Promise<never>((_, rej) =>
          setTimeout(() => rej(new Error('discovery did not learn the new leader')), 10_000),
        ),
      ]);
      expect(e.leader!.nodeId).toBe(after.id);
      expect(d.leader()?.nodeId).toBe(after.id);
      // The first call goes straight to the new leader: nothing failed on the way.
      const attempts: string[] = [];
      const role = await d.call(async (leader) => {
        attempts.push(leader.nodeId);
        const h = await fetchHealth(leader.control!);
        return h.role;
      });
      expect(role).toBe('leader');
      expect(attempts).toEqual([after.id]);
    } finally {
      d.close();
    }

    // The killed node comes back as a follower of the new leader.
    startNode(byId(oldLeader));
    await waitFor(
      `${oldLeader} back and caught up`,
      async () => {
        const h = await http('GET', url(byId(oldLeader), '/health'), { timeoutMs: 1_000 });
        return h.body.role === 'follower' && h.body.leader !== null ? true : undefined;
      },
      30_000,
    );
  });

  it('change shows its plan: --dry-run changes nothing; removing a voter asks first', async () => {
    const { id } = await agreedLeader(nodes.slice(0, 3));
    const before = (await metadata(byId(id))).metadataVersion;
    const dry = await runCli([
      'cluster',
      'change',
      '--server',
      `127.0.0.1:${nodes[0]!.http}`,
      '--members',
      'node1,node2',
      '--dry-run',
    ]);
    expect(dry.code, dry.out).toBe(0);
    expect(dry.out).toContain('- remove node3');
    expect(dry.out).toContain('voters: 3 → 2');
    expect(dry.out).toContain('warning: the group would have 2 voters');
    expect(dry.out).toContain('Dry run: nothing changed.');
    // Without --yes, and without a terminal to ask on, removing a voter is refused.
    const asked = await runCli([
      'cluster',
      'remove',
      'node3',
      '--server',
      `127.0.0.1:${nodes[1]!.http}`,
      '--token',
      TOKEN,
    ]);
    expect(asked.code).toBe(2);
    expect(asked.out).toContain('- remove node3 (');
    expect(asked.out).toContain('pass --yes');
    const dryAdd = await runCli([
      'cluster',
      'add',
      `node4@127.0.0.1:${nodes[3]!.raft}:${nodes[3]!.tc}:${nodes[3]!.http}`,
      '--server',
      `127.0.0.1:${nodes[0]!.http}`,
      '--dry-run',
      '--json',
    ]);
    expect(dryAdd.code, dryAdd.out).toBe(0);
    expect(dryAdd.out).toContain('even number of voters (4)');
    const plan = JSON.parse(dryAdd.out.slice(dryAdd.out.indexOf('{')));
    expect(plan).toMatchObject({ dryRun: true, plan: { add: ['node4'], votersAfter: 4 } });
    const after = await metadata(byId(id));
    expect(after.metadataVersion).toBe(before);
    expect(after.nodes.map((n: any) => n.nodeId)).toEqual(['node1', 'node2', 'node3']);
  });

  it('adds a fourth node with cluster add: joins as a learner, promoted to voter once caught up', async () => {
    const node4 = nodes[3]!;
    startNode(node4);
    await waitFor(
      'node4 up (outside the membership)',
      async () =>
        (await http('GET', url(node4, '/health'), { timeoutMs: 1_000 })).body.member === false
          ? true
          : undefined,
      30_000,
    );
    const { id } = await agreedLeader(nodes.slice(0, 3));
    const leader = byId(id);
    // Record the roles node4 goes through, as the leader reports them.
    const roles: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const md = await metadata(leader).catch(() => null);
        const r = md?.nodes.find((n: any) => n.nodeId === 'node4')?.role;
        if (r && roles.at(-1) !== r) roles.push(r);
        await new Promise((res) => setTimeout(res, 5));
      }
    })();
    const cli = await runCli([
      'cluster',
      'add',
      `node4@127.0.0.1:${node4.raft}:${node4.tc}:${node4.http}`,
      '--server',
      `127.0.0.1:${leader.http}`,
      '--token',
      TOKEN,
      '--json',
    ]);
    polling = false;
    await poller;
    expect(cli.code, cli.out).toBe(0);
    // The plan and its warning on stderr, the answer on stdout.
    expect(cli.out).toContain('+ add node4 (as a learner; a voter once caught up)');
    expect(cli.out).toContain('warning: the group would have an even number of voters (4)');
    const r = { body: JSON.parse(cli.out.slice(cli.out.indexOf('{'))) };
    expect(r.body.steps).toEqual([
      { type: 'addLearner', nodeId: 'node4' },
      { type: 'addVoter', nodeId: 'node4' },
    ]);
    // Seen by the leader: a learner first (it waits ≥ one 50 ms progress poll there), then a voter.
    expect(roles).toEqual(['LEARNER', 'FOLLOWER']);
    const md = r.body.metadata;
    expect(
      md.nodes.map((n: any) => [n.nodeId, n.role === 'LEADER' ? 'LEADER' : n.role]),
    ).toContainEqual(['node4', 'FOLLOWER']);
    expect(md.nodes.find((n: any) => n.nodeId === 'node4')).toMatchObject({
      control: { port: node4.http },
      transaction: { port: node4.tc },
      internal: { port: node4.raft },
    });
    await waitFor('node4 a voting member that knows the leader', async () => {
      const h = (await http('GET', url(node4, '/health'))).body;
      return h.member && h.role === 'follower' && h.leader?.nodeId === id ? true : undefined;
    });
    // Every node, node4 included, shows four members.
    await agreedLeader(nodes);
  });

  it('removes the fourth node again (cluster remove --yes)', async () => {
    const { id } = await agreedLeader(nodes);
    const r = await runCli([
      'cluster',
      'remove',
      'node4',
      '--server',
      `127.0.0.1:${byId(id).http}`,
      '--token',
      TOKEN,
      '--yes',
      '--json',
    ]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('- remove node4 (a voter)');
    expect(r.out).toContain('voters: 4 → 3');
    const answer = JSON.parse(r.out.slice(r.out.indexOf('{')));
    expect(answer.steps).toEqual([{ type: 'removeNode', nodeId: 'node4' }]);
    expect(answer.metadata.nodes.map((n: any) => n.nodeId)).toEqual(['node1', 'node2', 'node3']);
    // Every remaining member agrees. (node4 itself may never hear of its removal — the
    // leader stops replicating to it once the change is appended, as in any Raft — so the
    // operator stops it; its pre-votes cannot disturb the group.)
    const after = await agreedLeader(nodes.slice(0, 3));
    for (const n of nodes.slice(0, 3))
      expect((await metadata(n)).nodes.map((x: any) => x.nodeId)).toEqual([
        'node1',
        'node2',
        'node3',
      ]);
    expect(after.md.nodes).toHaveLength(3);
  });

  it('removes the leader: it steps down after the change commits and the others elect a new one', async () => {
    const first3 = nodes.slice(0, 3);
    const { id, term } = await agreedLeader(first3);
    const rest = first3.filter((n) => n.id !== id);
    const r = await http(
      'POST',
      url(
        byId(id),
        `/metadata/v1/changeCluster?raftClusterStr=${rest.map((n) => `127.0.0.1:${n.raft}`).join(',')}`,
      ),
      { token: TOKEN, timeoutMs: 60_000 },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.steps).toEqual([{ type: 'removeNode', nodeId: id }]);
    const now = await agreedLeader(rest, 15_000);
    expect(now.id).not.toBe(id);
    expect(now.term).toBeGreaterThan(term);
    expect(now.md.nodes.map((n: any) => n.nodeId)).toEqual(rest.map((n) => n.id));
    const h = (await http('GET', url(byId(id), '/health'))).body;
    expect(h.member).toBe(false);
    expect(h.role).not.toBe('leader');
    expect(isAlive(await pidOf(byId(id)))).toBe(true);
  });
});
