/**
 * Backpressure on the RM channel (issue 14): an RM that stops reading its channel must not
 * make the leader queue phase-two calls behind the unread ones. The leader sends until the
 * channel's stream stops draining (write() says false), then sends it nothing more — the
 * driver retries those branches later — so the calls written to the channel stay what its
 * stream's buffers held, across call timeouts and retries (without this, each timeout let the
 * driver's next 64 calls be written behind the unread ones, without end). Once it reads and
 * answers, every transaction finishes. A real three-node cluster and a raw gRPC RM that
 * pauses its side of the channel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { branchStatusToCode } from '../../src/shared/tc-codes.ts';
import type { TcClient } from '../../src/client/tc-client.ts';
import {
  DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS,
  MAX_INFLIGHT_PHASE_TWO_PER_RM,
} from '../../src/server/tc/limits.ts';
import { nodeMetric } from '../support/node-http.ts';
import { TestCluster, rawClient, waitFor, type RawClient, type TestNode } from './helpers.ts';

/** Transactions whose AT branch the silent RM must commit. */
const TRANSACTIONS = 300;
/** Each branch's application data: large, so a few calls fill the stream's window. */
const DATA = 'x'.repeat(16 * 1024);
const APP = 'slow';
const RESOURCE = 'slow-db';
const CLIENT_ID = `${APP}:rm:1`;

let cluster: TestCluster;
let raw: RawClient | null = null;
let tc: TcClient | null = null;

const metric = (n: TestNode, name: string, labels = '') => nodeMetric(n.http, name, labels);

beforeAll(async () => {
  cluster = await TestCluster.start('rm-backpressure', {
    phaseTwo: { retryBaseMs: 200, retryMaxBackoffMs: 1_000 },
  });
}, 90_000);

afterAll(async () => {
  await tc?.close();
  raw?.close();
  await cluster?.stop();
}, 30_000);

/** Transactions committed at once to an RM that reads: a burst of phase-two calls. */
const BURST = 200;

describe('an RM that reads its channel', () => {
  it('takes a burst of phase-two calls in one turn without a refused call (grpc-js buffers 16 messages)', async () => {
    const leader = await cluster.leader();
    const client = cluster.client();
    const rm = client.openRmChannel({
      applicationId: 'burst',
      transactionServiceGroup: 'default',
      clientId: 'burst:rm:1',
      resourceIds: () => ['burst-db'],
      handler: async (req) =>
        req.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked',
    });
    try {
      await rm.ready(15_000);
      const xids = await Promise.all(
        Array.from({ length: BURST }, async (_, i) => {
          const xid = await client.begin({
            applicationId: 'burst',
            transactionServiceGroup: 'default',
            name: 'burst',
            timeoutMs: 600_000,
          });
          await client.branchRegister({
            xid,
            branchType: 'AT',
            resourceId: 'burst-db',
            lockKey: `b:${i}`,
            clientId: 'burst:rm:1',
            applicationId: 'burst',
          });
          return xid;
        }),
      );
      const retriesBefore = await metric(leader, 'concord_tc_phase_two_retries_total');
      // One turn of commits: one entry, then the driver's passes call the RM all at once.
      await Promise.all(xids.map((xid) => client.commit(xid)));
      await waitFor(
        'every burst transaction finished',
        async () => ((await client.listSessions()).totalLive === 0 ? true : undefined),
        60_000,
        100,
      );
      // Every call was written and answered the first time: none was refused as congested
      // (an RmUnavailableError: outcome "error", and a retry scheduled).
      const calls = await metric(
        leader,
        'concord_tc_branch_phase_two_total',
        'resource="burst-db"',
      );
      expect(calls).toBe(BURST);
      expect(await metric(leader, 'concord_tc_phase_two_retries_total')).toBe(retriesBefore);
    } finally {
      await rm.close();
      await client.close();
    }
  }, 120_000);
});

describe('an RM that stops reading its channel', () => {
  it('gets no more calls queued behind the unread ones; once it reads, every branch commits', async () => {
    const leader = await cluster.leader();
    raw = rawClient(leader.tc);
    const channel = raw.RmChannel();
    const requests: Array<{ requestId: string }> = [];
    let registered = false;
    channel.on('data', (m: { registered?: unknown; branchCommit?: { requestId: string } }) => {
      if (m.registered) registered = true;
      if (m.branchCommit) requests.push(m.branchCommit);
    });
    channel.on('error', () => undefined);
    channel.write({
      register: {
        applicationId: APP,
        transactionServiceGroup: 'default',
        resourceIds: [RESOURCE],
        clientId: CLIENT_ID,
      },
    });
    await waitFor('the RM registered', () => (registered ? true : undefined), 10_000);
    // From here the RM reads nothing: its calls pile up in the channel. It is alive, though:
    // it pings, as an RM's own timer would, so the hub does not drop it as silent (3
    // heartbeats, 15 s) while the test waits past a call timeout — under load that wait
    // outlasted the silence bound and the RM was gone when it read again.
    channel.pause();
    const alive = setInterval(() => channel.write({ ping: { sentAtMs: Date.now() } }), 1_000);

    tc = cluster.client();
    const client = tc;
    const xids: string[] = [];
    for (let b = 0; b < TRANSACTIONS; b += 20) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const xid = await client.begin({
            applicationId: APP,
            transactionServiceGroup: 'default',
            name: 'slow-rm',
            timeoutMs: 600_000,
          });
          await client.branchRegister({
            xid,
            branchType: 'AT',
            resourceId: RESOURCE,
            lockKey: `t:${b + i}`,
            applicationData: DATA,
            clientId: CLIENT_ID,
            applicationId: APP,
          });
          await client.commit(xid);
          xids.push(xid);
        }),
      );
    }

    // The channel is congested: the leader sends it nothing more, whatever is pending.
    await waitFor(
      'the RM channel congested',
      async () =>
        (await metric(leader, 'concord_tc_rm_channels_congested')) === 1 ? true : undefined,
      30_000,
    );
    // Past one phase-two call timeout: the calls it does not answer time out and free their
    // slots, and the driver retries their branches — none is written to the unread channel.
    const sentAtCongestion = await metric(leader, 'concord_tc_rm_phase_two_sent');
    const inflight = await metric(leader, 'concord_tc_rm_phase_two_inflight');
    await sleep(DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS + 3_000);
    const sentAfterTimeout = await metric(leader, 'concord_tc_rm_phase_two_sent');
    process.stdout.write(
      `rm-backpressure: ${TRANSACTIONS} branches pending; in flight on the unread channel ${inflight} (bound ${MAX_INFLIGHT_PHASE_TWO_PER_RM}); calls written to it ${sentAtCongestion}, after a call timeout ${sentAfterTimeout}\n`,
    );
    expect(inflight).toBeGreaterThan(0);
    expect(inflight).toBeLessThanOrEqual(MAX_INFLIGHT_PHASE_TWO_PER_RM);
    // What the leader holds for it is what its stream's buffers held when it stopped reading.
    expect(sentAfterTimeout).toBe(sentAtCongestion);
    expect(sentAtCongestion).toBeLessThan(TRANSACTIONS);
    expect((await tc.listSessions()).totalLive).toBeGreaterThanOrEqual(TRANSACTIONS);

    // The RM reads again and answers every call (old and new): every transaction finishes.
    channel.resume();
    const answered = new Set<string>();
    const answer = () => {
      for (const r of requests) {
        if (answered.has(r.requestId)) continue;
        answered.add(r.requestId);
        channel.write({
          branchResult: {
            requestId: r.requestId,
            branchStatus: branchStatusToCode('PhaseTwo_Committed'),
          },
        });
      }
    };
    await waitFor(
      'every transaction finished',
      async () => {
        answer();
        return (await client.listSessions()).totalLive === 0 ? true : undefined;
      },
      120_000,
      200,
    );
    clearInterval(alive);
    channel.cancel();
  }, 240_000);
});
