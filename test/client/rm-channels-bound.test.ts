/**
 * The db-mode RM channel set (src/client/tc/rm-channels.ts) against a metadata answer it must
 * not trust: the answer (up to 1 MiB) may name thousands of nodes, and the set opens one
 * channel and one connection per node it keeps. It keeps at most MAX_RM_CHANNEL_NODES, the
 * lease holder's first. Real TcConnections (to a port nothing listens on) and real channels.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TcConnection } from '../../src/client/tc/connection.ts';
import { RmChannelSet } from '../../src/client/tc/rm-channels.ts';
import { MAX_RM_CHANNEL_NODES } from '../../src/client/tc/limits.ts';
import type { ClusterMetadata, HostPort, NodeMetadata } from '../../src/client/http-metadata.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { waitFor } from '../support/wait.ts';

let set: RmChannelSet | null = null;
const conns: TcConnection[] = [];

afterEach(async () => {
  await set?.close();
  set = null;
  for (const c of conns.splice(0)) c.close();
});

function node(i: number, role: NodeMetadata['role']): NodeMetadata {
  return {
    group: 'default',
    nodeId: `n${i}`,
    role,
    term: 1,
    control: null,
    // Ports 1 and 2 (3 for the holder): nothing listens; each channel dials and fails, which
    // is all this test needs.
    transaction: { host: '127.0.0.1', port: role === 'LEADER' ? 3 : 1 + (i % 2) },
    internal: null,
    healthy: null,
    version: null,
  };
}

describe('RM channels in db mode', () => {
  it('keep a channel to at most MAX_RM_CHANNEL_NODES nodes of a hostile metadata answer, the holder first', async () => {
    const count = MAX_RM_CHANNEL_NODES * 20;
    const nodes = Array.from({ length: count }, (_, i) =>
      node(i, i === count - 1 ? 'LEADER' : 'FOLLOWER'),
    );
    const md: ClusterMetadata = {
      storeMode: 'db',
      group: 'default',
      term: 1,
      leaderId: `n${count - 1}`,
      metadataVersion: '',
      answeredBy: 'n0',
      commitIndex: 0,
      appliedIndex: 0,
      lastIndex: 0,
      nodes,
    };
    // Each node's channel dials (and redials) its own target object: one per node kept.
    const dialed = new Set<HostPort>();
    set = new RmChannelSet(
      {
        logger: silentLogger(),
        metadata: () => Promise.resolve(md),
        onMetadata: () => () => undefined,
        leaderId: () => md.leaderId,
        leaderRouting: {
          logger: silentLogger(),
          leader: () => Promise.reject(new Error('not raft mode')),
          connection: () => {
            throw new Error('not raft mode');
          },
          onLeaderChange: () => () => undefined,
          refresh: () => undefined,
          random: Math.random,
        },
        dial: (target) => {
          dialed.add(target);
          const c = new TcConnection(target);
          conns.push(c);
          return c;
        },
        unreachable: () => undefined,
        random: Math.random,
      },
      {
        applicationId: 'app',
        transactionServiceGroup: 'default',
        clientId: 'app:rm',
        resourceIds: () => ['db'],
        handler: () => Promise.reject(new Error('no phase two here')),
      },
    ).start();
    // Each kept node's channel dials its connection once it starts (a few microtasks in).
    await waitFor('the kept channels to dial', () =>
      dialed.size >= MAX_RM_CHANNEL_NODES ? true : undefined,
    );
    // Every channel started in the same turn as the first: a later turn dials no more.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(dialed.size).toBe(MAX_RM_CHANNEL_NODES);
    expect([...dialed].some((t) => t.port === 3)).toBe(true);
  });
});
