/**
 * Cluster id and node identity at start (issue 13, item 3): which cluster a node belongs
 * to, and the refusal of a founding member that lost its state.
 */
import { describe, expect, it } from 'vitest';
import { validateRaftNodeConfig } from '../../src/raft/node/config.ts';
import {
  bootstrapClusterId,
  IDENTIFY_TIMEOUT_MS,
  JOIN_DISCOVERY_TIMEOUT_MS,
  settleIdentity,
} from '../../src/raft/node/identity.ts';
import { bootstrapConf } from '../../src/raft/node/raft-node.ts';
import type { StoredIdentity } from '../../src/raft/storage/leveldb-storage.ts';
import type { IdentifyAnswer } from '../../src/raft/transport/grpc-transport.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';

const config = (over: Record<string, unknown> = {}) =>
  validateRaftNodeConfig({
    nodeId: 'n3',
    raftAddress: '127.0.0.1:7003',
    peers: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002' },
    dataDir: '/tmp/n3',
    ...over,
  });

const fresh: StoredIdentity = { clusterId: null, nodeUid: 'uid-new', peerUids: {}, empty: true };

function peers(answers: Record<string, Partial<IdentifyAnswer> | null>) {
  const byAddress: Record<string, string> = { '127.0.0.1:7001': 'n1', '127.0.0.1:7002': 'n2' };
  const asked: string[] = [];
  const identify = async (address: string) => {
    const id = byAddress[address]!;
    asked.push(id);
    const a = answers[id];
    return a === null || a === undefined
      ? null
      : { nodeId: id, clusterId: '', nodeUid: `uid-${id}`, knownUid: '', ...a };
  };
  return { identify, asked };
}

const settle = (c: ReturnType<typeof config>, stored: StoredIdentity, identify: never) =>
  settleIdentity({
    config: c,
    stored,
    bootstrap: bootstrapConf(c),
    identify,
    logger: silentLogger(),
    sleep: async () => {},
  });

/**
 * settleIdentity for a fresh founding n3 on a fake clock: `identify` advances `clock.t` by
 * IDENTIFY_TIMEOUT_MS to time an ask out; waits between rounds advance it too.
 */
function settleOnFakeClock(
  identify: (address: string, clock: { t: number }) => Promise<IdentifyAnswer | null>,
) {
  const clock = { t: 0 };
  const c = config();
  const result = settleIdentity({
    config: c,
    stored: fresh,
    bootstrap: bootstrapConf(c),
    identify: (address: string) => identify(address, clock),
    logger: silentLogger(),
    sleep: async (ms) => {
      clock.t += ms;
    },
    now: () => clock.t,
  });
  return { clock, c, result };
}

describe('cluster id', () => {
  it('founding members compute the same id from the same membership; a token or another address changes it', () => {
    const c1 = bootstrapConf(config());
    const c2 = bootstrapConf(
      validateRaftNodeConfig({
        nodeId: 'n1',
        raftAddress: '127.0.0.1:7001',
        peers: { n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' },
        dataDir: '/tmp/n1',
      }),
    );
    expect(bootstrapClusterId(c1, '')).toBe(bootstrapClusterId(c2, ''));
    expect(bootstrapClusterId(c1, 'prod')).not.toBe(bootstrapClusterId(c1, ''));
    const moved = bootstrapConf(config({ raftAddress: '127.0.0.1:7009' }));
    expect(bootstrapClusterId(moved, '')).not.toBe(bootstrapClusterId(c1, ''));
  });

  it('a founding member on an empty directory that nobody knows founds the computed cluster (peers down or fresh)', async () => {
    const c = config();
    const r = await settle(c, fresh, peers({ n1: null, n2: {} }).identify as never);
    expect(r).toEqual({
      identity: { clusterId: bootstrapClusterId(bootstrapConf(c), ''), nodeUid: 'uid-new' },
      learned: true,
    });
  });

  it('a founding member that starts late joins its running cluster: the peers hold the same id and do not know it', async () => {
    const c = config();
    const id = bootstrapClusterId(bootstrapConf(c), '');
    const r = await settle(
      c,
      fresh,
      peers({ n1: { clusterId: id }, n2: { clusterId: id } }).identify as never,
    );
    expect(r.identity.clusterId).toBe(id);
  });

  it('a founding member on an empty directory that its peers know refuses to start and names the recovery', async () => {
    const c = config();
    const id = bootstrapClusterId(bootstrapConf(c), '');
    const err = await settle(
      c,
      fresh,
      peers({ n1: { clusterId: id, knownUid: 'uid-old' }, n2: null }).identify as never,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/node "n3" is a member of cluster/);
    expect((err as Error).message).toMatch(/uid-old/);
    expect((err as Error).message).toMatch(/concord cluster change --members n1,n2/);
    expect((err as Error).message).toMatch(/raft\.join/);
  });

  it('a founding member on an empty directory asks again while an ask times out (a slow peer tells nothing)', async () => {
    // A loaded machine: the asks of the first rounds time out, then n2 answers that it
    // knows this node. Founding on the silence of a timed-out round would let a member that
    // lost its state vote again (CI caught it: the wiped node started as a founding member).
    let round = 0;
    const err = await settleOnFakeClock(async (address, clock) => {
      if (address.endsWith('1')) round++;
      if (round >= 4 && address.endsWith('2'))
        return { nodeId: 'n2', clusterId: 'c1', nodeUid: 'uid-n2', knownUid: 'uid-old' };
      if (address.endsWith('1')) clock.t += IDENTIFY_TIMEOUT_MS; // timed out
      return null;
    }).result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/node "n3" is a member of cluster c1/);
    expect(round).toBe(4);
  });

  it('a founding member whose peers keep timing out founds only at the deadline', async () => {
    const { clock, c, result } = settleOnFakeClock(async (_address, clock) => {
      clock.t += IDENTIFY_TIMEOUT_MS;
      return null;
    });
    const r = await result;
    expect(r.identity.clusterId).toBe(bootstrapClusterId(bootstrapConf(c), ''));
    expect(clock.t).toBeGreaterThanOrEqual(JOIN_DISCOVERY_TIMEOUT_MS);
  });

  it('a founding member whose peers refuse at once (a cluster starting) founds at once', async () => {
    let asks = 0;
    const c = config();
    const r = await settle(c, fresh, (async () => {
      asks++;
      return null;
    }) as never);
    expect(r.identity.clusterId).toBe(bootstrapClusterId(bootstrapConf(c), ''));
    expect(asks).toBe(2);
  });

  it("a follower that does not know it is no answer while the leader's ask timed out", async () => {
    // n1 (a follower: it hears only the leader, and never exchanged a vote with n3) answers
    // at once that it does not know this node; n2 (the leader, which does) is slow, and its
    // first ask times out. Founding on n1's answer alone let the wiped node start as a
    // founding member (raft-cluster.test.ts under load).
    let n2Asks = 0;
    const err = await settleOnFakeClock(async (address, clock) => {
      if (address.endsWith('1'))
        return { nodeId: 'n1', clusterId: 'c1', nodeUid: 'uid-n1', knownUid: '' };
      n2Asks++;
      if (n2Asks === 1) {
        clock.t += IDENTIFY_TIMEOUT_MS; // timed out
        return null;
      }
      return { nodeId: 'n2', clusterId: 'c1', nodeUid: 'uid-n2', knownUid: 'uid-old' };
    }).result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/node "n3" is a member of cluster c1/);
    expect(n2Asks).toBe(2);
  });

  it('a founding member whose peers belong to another cluster refuses to start', async () => {
    const err = await settle(
      config(),
      fresh,
      peers({ n1: { clusterId: 'other' } }).identify as never,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/peers belong to cluster other/);
  });

  it('a joining node learns the id from its peers, asking until one knows it', async () => {
    let round = 0;
    const identify = async (address: string) => {
      round++;
      return round < 5
        ? null
        : {
            nodeId: address.endsWith('1') ? 'n1' : 'n2',
            clusterId: 'c9',
            nodeUid: 'u',
            knownUid: '',
          };
    };
    const r = await settle(config({ join: true }), fresh, identify as never);
    expect(r.identity.clusterId).toBe('c9');
  });

  it('a joining node that no peer answers gives up with a clear error', async () => {
    let t = 0;
    const err = await settleIdentity({
      config: config({ join: true }),
      stored: fresh,
      bootstrap: bootstrapConf(config({ join: true })),
      identify: async () => null,
      logger: silentLogger(),
      sleep: async (ms) => {
        t += ms;
      },
      now: () => t,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/cluster id/);
    expect(t).toBeGreaterThanOrEqual(JOIN_DISCOVERY_TIMEOUT_MS);
  });

  it('a node whose directory already names its cluster does not ask anyone', async () => {
    const p = peers({ n1: { clusterId: 'x' } });
    const r = await settle(
      config(),
      { ...fresh, clusterId: 'mine', empty: false },
      p.identify as never,
    );
    expect(r).toEqual({ identity: { clusterId: 'mine', nodeUid: 'uid-new' }, learned: false });
    expect(p.asked).toEqual([]);
  });
});
