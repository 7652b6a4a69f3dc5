/**
 * A decided commit is final (issue 13 item 7), on a real three-node cluster of `concord
 * start` processes with a real RM channel: an RM that fails its confirm past the alarm
 * threshold keeps being retried (never CommitFailed), the session shows stuck (GetSession,
 * ListSessions with the stuck filter, the leader's `concord_tc_global_stuck` gauge, one warn line
 * in the leader's log), and once the RM heals the transaction ends Committed.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TcClient } from '../../src/client/tc-client.ts';
import {
  failingUntilHealed,
  startClusterWithRm,
  stopClusterWithRm,
  waitForStatus,
} from './helpers.ts';
import { waitFor } from '../support/wait.ts';
import type { TestCluster, TestNode, TestRm } from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const STUCK_AFTER_MS = 1_500;
let cluster: TestCluster;
let ops: TcClient;
let rm: TestRm;
let failing = true;

beforeAll(async () => {
  ({
    cluster,
    tc: ops,
    rm,
  } = await startClusterWithRm(
    'stuck',
    {
      tickMs: 50,
      phaseTwo: { stuckAfterMs: STUCK_AFTER_MS, retryBaseMs: 100, retryMaxBackoffMs: 400 },
    },
    ['stock'],
    { applicationId: 'shop', behave: failingUntilHealed(() => failing) },
  ));
}, 90_000);

afterAll(() => stopClusterWithRm({ cluster, tc: ops, rm }));

async function gauge(node: TestNode, name: string): Promise<number> {
  const res = await fetchNode(`${nodeBase(node.http)}/metrics`, {
    signal: AbortSignal.timeout(2_000),
  });
  const line = (await res.text())
    .split('\n')
    .find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  if (line === undefined) throw new Error(`no ${name} in the metrics of ${node.id}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function stuckLines(node: TestNode, xid: string): unknown[] {
  return readFileSync(node.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes(xid) && l.includes('phase two is stuck'))
    .map((l) => JSON.parse(l) as { xid: string; level: number })
    .filter((l) => l.xid === xid && l.level === 40);
}

describe('an RM that fails its confirm past the alarm threshold', () => {
  it('is retried, shown stuck, and the transaction ends Committed once the RM heals', async () => {
    const xid = await ops.begin({
      applicationId: 'shop',
      transactionServiceGroup: 'default',
      timeoutMs: 60_000,
    });
    const branchId = await ops.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: 'shop',
    });
    expect(await ops.commit(xid)).toBe('CommitRetrying');

    // Past the alarm threshold: still retried, never CommitFailed, and shown stuck.
    const stuck = await waitFor(
      `${xid} to be shown stuck`,
      async () => {
        const s = await ops.getSession(xid);
        return s.stuck ? s : undefined;
      },
      30_000,
      100,
    );
    expect(stuck.live).toBe(true);
    expect(stuck.status).toBe('CommitRetrying');
    const leader = await cluster.leader();
    const listed = await ops.listSessions({ stuck: true });
    expect(listed.sessions.map((s) => s.xid)).toEqual([xid]);
    expect(listed.sessions[0]!.stuck).toBe(true);
    expect(await gauge(leader, 'concord_tc_global_stuck')).toBe(1);
    const calls = rm.callsFor(xid).length;
    await waitFor(
      'more confirms past the alarm',
      () => (rm.callsFor(xid).length >= calls + 3 ? true : undefined),
      30_000,
      50,
    );
    expect(await ops.getStatus(xid)).toBe('CommitRetrying');
    expect(stuckLines(leader, xid)).toHaveLength(1);
    expect(rm.callsFor(xid).every((c) => c.kind === 'commit' && c.branchId === branchId)).toBe(
      true,
    );

    // The RM heals: the next retry commits it.
    failing = false;
    expect(await waitForStatus(ops, xid, (s) => s === 'Committed', 30_000)).toBe('Committed');
    expect((await ops.listSessions({ stuck: true })).sessions).toEqual([]);
    expect(await gauge(leader, 'concord_tc_global_stuck')).toBe(0);
  }, 120_000);
});
