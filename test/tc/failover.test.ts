/**
 * Leader failure under the TC protocol, on a real three-node cluster: the leader is
 * SIGKILLed while a transaction is in phase two and the new leader finishes it (the RM
 * channel follows the leadership); statuses never go backwards across the failover; a
 * Begin retried with the same requestId after a failover yields one transaction.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BranchStatus, GlobalStatus, TcClient } from '../../src/client/tc-client.ts';
import {
  TestCluster,
  TestRm,
  waitFor,
  waitForStatus,
  startClusterWithRm,
  statusRank,
  stopClusterWithRm,
} from './helpers.ts';

const TICK_MS = 50;
const APP = { applicationId: 'shop', transactionServiceGroup: 'default' };

let cluster: TestCluster;
let tc: TcClient;
let rm: TestRm;

beforeAll(async () => {
  ({ cluster, tc, rm } = await startClusterWithRm(
    'failover',
    { tickMs: TICK_MS },
    ['inventory', 'billing'],
    { clientId: 'rm-failover' },
  ));
}, 90_000);

afterAll(() => stopClusterWithRm({ cluster, tc, rm }), 60_000);

describe('leader failover', () => {
  it('the leader is SIGKILLed while a transaction is Committing: the new leader finishes it', async () => {
    const oldLeader = await cluster.leader();
    expect(rm.channel!.registeredWith).toBe(oldLeader.id);
    const xid = await tc.begin({ ...APP, name: 'failover', timeoutMs: 60_000 });
    const first = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'inventory',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    const second = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'billing',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });

    // The second branch's first commit hangs: the transaction sits in Committing on the old leader.
    let release: (s: BranchStatus) => void = () => undefined;
    rm.behave = (call, attempt) =>
      call.branchId === second && attempt === 1
        ? new Promise<BranchStatus>((r) => (release = r))
        : 'PhaseTwo_Committed';

    const seen: GlobalStatus[] = [];
    let polling = true;
    const observer = cluster.client();
    const poller = (async () => {
      while (polling) {
        try {
          seen.push(await observer.getStatus(xid));
        } catch {
          // during the election
        }
        await sleep(20);
      }
    })();

    try {
      const commit = tc.commit(xid);
      await waitFor(
        'the hanging commit call',
        () => (rm.callsFor(xid).some((c) => c.branchId === second) ? true : undefined),
        15_000,
      );
      expect(await observer.getStatus(xid)).toBe('Committing');

      await cluster.kill(oldLeader, 'SIGKILL');
      const newLeader = await cluster.leader();
      expect(newLeader.id).not.toBe(oldLeader.id);

      // The TM's commit call is retried on the new leader (commit is idempotent) and the
      // new leader re-drives phase two; the RM channel follows it there.
      const answered = await commit;
      expect(['Committing', 'CommitRetrying', 'Committed']).toContain(answered);
      await waitForStatus(observer, xid, (s) => s === 'Committed', 30_000);
      release('PhaseTwo_Committed');

      const calls = rm.callsFor(xid);
      expect(calls.filter((c) => c.branchId === first).length).toBe(1);
      const secondCalls = calls.filter((c) => c.branchId === second);
      expect(secondCalls.length).toBeGreaterThanOrEqual(2);
      expect(secondCalls[0]!.node).toBe(oldLeader.id);
      expect(secondCalls.at(-1)!.node).toBe(newLeader.id);
      expect(rm.channel!.registeredWith).toBe(newLeader.id);
    } finally {
      polling = false;
      rm.behave = null;
      await poller;
      await observer.close();
    }

    // Status queries never went backwards, across the failover too.
    seen.push('Committed');
    for (let i = 1; i < seen.length; i++)
      expect(statusRank(seen[i]!), `${seen[i - 1]} → ${seen[i]}`).toBeGreaterThanOrEqual(
        statusRank(seen[i - 1]!),
      );

    // Bring the old leader back (on its data dir) for the next test.
    cluster.restart(oldLeader);
    await waitFor(
      `${oldLeader.id} to rejoin`,
      async () => {
        const md = await cluster.metadata(oldLeader);
        return md.leaderId !== null && md.leaderId !== oldLeader.id ? true : undefined;
      },
      60_000,
      100,
    );
  });

  it('a Begin retried with the same requestId after a failover yields one transaction', async () => {
    const leader = await cluster.leader();
    const requestId = `begin-${Date.now()}`;
    const liveBefore = (await tc.listSessions()).totalLive;
    const xid = await tc.begin({ ...APP, name: 'retried', timeoutMs: 60_000, requestId });
    expect((await tc.listSessions()).totalLive).toBe(liveBefore + 1);

    // The TM "did not hear" the answer; the leader dies; the TM retries with the same requestId.
    await cluster.kill(leader, 'SIGKILL');
    const retrier = cluster.client();
    try {
      const again = await retrier.begin({ ...APP, name: 'retried', timeoutMs: 60_000, requestId });
      expect(again).toBe(xid);
      const newLeader = await cluster.leader();
      expect(newLeader.id).not.toBe(leader.id);
      // Served by the new leader, which minted no second transaction.
      expect((await retrier.listSessions()).totalLive).toBe(liveBefore + 1);
      expect(await retrier.getStatus(xid)).toBe('Begin');
      // A different requestId is a different transaction.
      const other = await retrier.begin({
        ...APP,
        name: 'retried',
        timeoutMs: 60_000,
        requestId: `${requestId}-2`,
      });
      expect(other).not.toBe(xid);
      expect(await retrier.rollback(other)).toBe('Rollbacked');
      expect(await retrier.rollback(xid)).toBe('Rollbacked');
    } finally {
      await retrier.close();
      cluster.restart(leader);
    }
  });
});
