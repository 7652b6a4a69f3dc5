/**
 * A Raft node on a real disk and a real network: three `kv-main` processes on loopback,
 * the write-ahead log and LevelDB in tmp dirs, gRPC between them, killed with SIGKILL. Each
 * test names the property it guards (DESIGN.md invariants 5 and 6).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, KvCluster, Load, sleep } from './kv-cluster.ts';
import { identifyPeer } from '../../src/raft/transport/grpc-transport.ts';
import { readFileSync } from 'node:fs';
import { requireNodeId } from '../../src/shared/ids.ts';

const clusters: KvCluster[] = [];

async function cluster(
  options: ConstructorParameters<typeof KvCluster>[0] = {},
): Promise<KvCluster> {
  const c = new KvCluster(options);
  clusters.push(c);
  await c.start();
  return c;
}

afterEach(async () => {
  for (const c of clusters.splice(0)) await c.destroy();
});

/** Every acknowledged write is present with its value. */
function expectAllAcked(acked: Map<string, string>, found: Record<string, string>): void {
  const missing = [...acked].filter(([k, v]) => found[k] !== v).map(([k]) => k);
  expect(missing, `${missing.length} of ${acked.size} acknowledged writes missing`).toEqual([]);
}

describe('raft node processes', () => {
  it('three processes elect one leader and replicate writes to every node', async () => {
    const c = await cluster();
    const leader = await c.waitForLeader();
    for (let i = 0; i < 30; i++) await c.put(`basic-${i}`, `v${i}`);
    // A linearizable read through the leader, and every node's own applied state.
    expect(Object.keys(await c.dump(leader, 'basic-'))).toHaveLength(30);
    for (const id of c.ids) {
      await eventually(`${id} to apply all writes`, async () => {
        const local = await c.dump(id, 'basic-', true);
        if (Object.keys(local).length !== 30)
          throw new Error(`${id} has ${Object.keys(local).length}`);
        expect(local['basic-7']).toBe('v7');
      });
    }
    // One leader per term: every node names the same leader in the same term.
    const statuses = await Promise.all(c.ids.map((id) => c.status(id)));
    expect(new Set(statuses.map((s) => `${s.term}/${s.leader}`)).size).toBe(1);
    expect(statuses.filter((s) => s.role === 'leader').map((s) => s.id)).toEqual([leader]);

    // Leadership transfer on request: the chosen follower takes over, writes go on.
    const target = c.ids.find((id) => id !== leader)!;
    await c.request(leader, 'POST', '/transfer', { to: target });
    await eventually(`${target} to lead`, async () => expect(await c.waitForLeader()).toBe(target));
    await c.put('basic-after-transfer', 'ok');
  });

  it('SIGKILL of the leader under load: a new leader is elected and no acknowledged write is lost', async () => {
    const c = await cluster();
    const first = await c.waitForLeader();
    const load = new Load(c, 'crash', 8);
    await sleep(1_500);
    const ackedBeforeKill = load.acked.size;
    await c.kill(first);
    await sleep(3_000);
    await load.stop();
    expect(ackedBeforeKill).toBeGreaterThan(20);
    expect(load.acked.size).toBeGreaterThan(ackedBeforeKill); // the survivors took writes again

    const second = await c.waitForLeader();
    expect(second).not.toBe(first);
    expectAllAcked(load.acked, await c.dump(second, 'crash-'));

    // The killed leader comes back as a follower and catches up.
    await c.spawn(first);
    await eventually(`${first} to catch up`, async () =>
      expectAllAcked(load.acked, await c.dump(first, 'crash-', true)),
    );
    // Every node applied the same commands: identical maps (acknowledged or not).
    expectAllAcked(load.acked, await c.converged('crash-'));
  });

  it('SIGKILL of all three mid-load and a restart: every acknowledged write is still there', async () => {
    const c = await cluster();
    await c.waitForLeader();
    const load = new Load(c, 'all', 8);
    await sleep(2_000);
    // Kill all three at once while writes are in flight.
    await Promise.all(c.ids.map((id) => c.kill(id)));
    await load.stop();
    expect(load.acked.size).toBeGreaterThan(20);

    await Promise.all(c.ids.map((id) => c.spawn(id)));
    const leader = await c.waitForLeader();
    expectAllAcked(load.acked, await c.dump(leader, 'all-'));
    expectAllAcked(load.acked, await c.converged('all-'));
    // The nodes' logs are on the write-ahead log (a new data directory's default).
    for (const id of c.ids) expect(await readdir(join(c.dataDir(id), 'raft-wal'))).not.toEqual([]);
  });

  it('a follower down long enough to need a snapshot catches up by snapshot', async () => {
    const c = await cluster({ snapshotInterval: 20 });
    const leader = await c.waitForLeader();
    const follower = c.ids.find((id) => id !== leader)!;
    for (let i = 0; i < 10; i++) await c.put(`snap-${i}`, `v${i}`);
    await eventually('follower applied', async () => {
      if (Object.keys(await c.dump(follower, 'snap-', true)).length !== 10)
        throw new Error('not yet');
    });
    const behind = (await c.status(follower)).durableLastIndex;
    await c.kill(follower);

    const acked = new Map<string, string>();
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 25; i++) {
          await c.put(`snap-${w}-${i}`, `v${w}-${i}`);
          acked.set(`snap-${w}-${i}`, `v${w}-${i}`);
        }
      }),
    );
    // The leader compacted past what the follower holds: entries alone cannot catch it up.
    const ls = await c.status(leader);
    expect(ls.snapshotIndex).toBeGreaterThan(behind);
    expect(ls.firstIndex).toBeGreaterThan(behind + 1);

    // The leader's transport keeps what it queued for the dead follower (appends of the
    // entries it missed) for one connect window, then drops it. A follower back within that
    // window catches up from those appends, legitimately, without a snapshot; wait it out.
    await eventually(
      'the leader to drop what it queued for the dead follower',
      async () => {
        expect((await c.status(leader)).transport.peers[follower]?.dropped).toBeGreaterThan(0);
      },
      10_000,
    );

    await c.spawn(follower);
    await eventually(
      `${follower} to catch up`,
      async () => expectAllAcked(acked, await c.dump(follower, 'snap-', true)),
      30_000,
    );
    // The restarted follower's driver counts the leader snapshots it restored.
    const fs = await c.status(follower);
    expect(fs.snapshotsRestored).toBeGreaterThanOrEqual(1);
    expect(fs.snapshotIndex).toBeGreaterThan(behind);
  });

  it('a node whose data dir was wiped rejoins only through a membership change', async () => {
    const c = await cluster();
    await c.waitForLeader();
    for (let i = 0; i < 20; i++) await c.put(`wipe-a-${i}`, `v${i}`);
    const victim = 'n3';
    const clusterId = (await c.status(victim)).clusterId;
    expect(clusterId).toMatch(/^[0-9a-f]{16}$/);
    for (const id of c.ids) expect((await c.status(id)).clusterId).toBe(clusterId);
    // The leader has heard the victim (it records a member's identity from its frames). A
    // node killed before any peer heard it never voted nor acknowledged an entry, so it
    // may found again like a member that starts late: the test would race its start.
    const knower = await c.waitForLeader();
    const f = c.pki!.node(victim);
    const victimTls = {
      ca: readFileSync(f.ca),
      cert: readFileSync(f.cert),
      key: readFileSync(f.key),
    };
    await eventually(`${knower} to know ${victim}'s identity`, async () => {
      const a = await identifyPeer(
        `127.0.0.1:${c.raftPort(knower)}`,
        requireNodeId(victim),
        2_000,
        {},
        victimTls,
      );
      if (a === null || a.knownUid === '') throw new Error(`${knower} does not know ${victim} yet`);
    });
    await c.kill(victim);
    await c.wipe(victim);

    // 0. Restarted as a founding member on its empty directory, it refuses to start: its
    // peers know it, so it lost its vote and its log. The error names the recovery.
    await expect(c.spawn(victim)).rejects.toThrow(/exited with 2 before listening/);
    const log = await c.logOf(victim);
    expect(log).toMatch(/node "n3" is a member of cluster [0-9a-f]{16}/);
    expect(log).toMatch(/concord cluster change/);

    // 1. Remove the lost member (its vote and its log are gone; it must not count).
    await c.changeMembership({ type: 'removeNode', nodeId: victim });
    for (let i = 0; i < 20; i++) await c.put(`wipe-b-${i}`, `v${i}`);

    // 2. Restart it empty, outside the membership: it neither campaigns nor receives the log.
    await c.spawn(victim, { join: true });
    await sleep(1_500);
    const outside = await c.status(victim);
    expect(outside.role).toBe('follower');
    expect(outside.kvKeys).toBe(0);
    const remaining = c.ids.filter((id) => id !== victim);
    const leaderStatus = await c.status(await c.waitForLeader());
    expect(leaderStatus.conf.voters).toEqual(remaining);
    // It never campaigned, so it cannot be ahead of the cluster's term. (A heartbeat the
    // leader queued for it before the removal may still reach it and lift its term up to
    // the cluster's: harmless, as it is no member and receives no log.)
    expect(outside.term).toBeLessThanOrEqual(leaderStatus.term);

    // 3. Add it as a learner: it catches up without voting.
    await c.changeMembership({
      type: 'addLearner',
      nodeId: victim,
      context: outside.memberContext,
    });
    await eventually(`${victim} to catch up as a learner`, async () => {
      const local = await c.dump(victim, 'wipe-', true);
      if (Object.keys(local).length !== 40)
        throw new Error(`has ${Object.keys(local).length} of 40`);
    });
    expect((await c.status(victim)).conf.learners).toEqual([victim]);

    // Same cluster, new identity: its peers took it once it was a member again.
    const rejoined = await c.status(victim);
    expect(rejoined.clusterId).toBe(clusterId);

    // 4. Promote it; it is a voter on every node.
    await c.changeMembership({ type: 'addVoter', nodeId: victim, context: '' });
    await eventually('promotion everywhere', async () => {
      for (const id of c.ids) expect((await c.status(id)).conf.voters).toEqual(['n1', 'n2', 'n3']);
    });

    // And it counts: with one of the old members killed, the rejoined node makes the quorum.
    const leader = await c.waitForLeader();
    const other = remaining.find((id) => id !== leader)!;
    await c.kill(other);
    await c.put('wipe-c-0', 'after');
    const all = await c.dump(await c.waitForLeader(), 'wipe-');
    expect(Object.keys(all)).toHaveLength(41);
  });
});
