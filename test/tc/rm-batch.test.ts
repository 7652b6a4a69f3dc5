/**
 * Phase-two batches on the RM channel (proto/tc.proto PhaseTwoBatch, BranchResultBatch), on a
 * real three-node cluster over real gRPC: the phase-two calls to one RM that are ready in one
 * turn travel in one message, each result goes back to its own call (whatever order the RM
 * answers in), an RM that did not announce batches (an older SDK) is sent one request per
 * message, and a malformed result batch from an RM is refused whole — the channel ends with
 * BAD_REQUEST and no branch takes a status from it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { branchStatusToCode } from '../../src/shared/tc-codes.ts';
import { MAX_RM_BATCH_ENTRIES } from '../../src/shared/rm-batch.ts';
import type { TcClient } from '../../src/client/tc-client.ts';
import type { Xid } from '../../src/shared/ids.ts';
import { nodeMetric } from '../support/node-http.ts';
import {
  TestCluster,
  rawClient,
  waitFor,
  waitForStatus,
  type RawClient,
  type TestNode,
} from './helpers.ts';

let cluster: TestCluster;
let tc: TcClient;
const raws: RawClient[] = [];

beforeAll(async () => {
  cluster = await TestCluster.start('rm-batch', {
    phaseTwo: { retryBaseMs: 200, retryMaxBackoffMs: 500 },
  });
  tc = cluster.client();
}, 90_000);

afterAll(async () => {
  await tc?.close();
  for (const r of raws) r.close();
  await cluster?.stop();
}, 30_000);

const metric = (n: TestNode, name: string) => nodeMetric(n.http, name);

interface Request {
  requestId: string;
  xid: string;
  branchId: string;
}
interface TcMessage {
  registered?: { resultCode: string; batches: boolean };
  branchCommit?: Request;
  phaseTwoBatch?: { commits: Request[]; rollbacks: Request[] };
  goAway?: { error: { code: string; message: string } };
}

/**
 * A raw RM on the leader's RmChannel: records what the TC sends it; with `answer`, answers
 * each message at once as the SDK would — a batch with one batch of results (in reverse
 * order), a single request with a single result.
 */
async function rawRm(
  app: string,
  resource: string,
  batches: boolean,
  answer?: (r: Request) => { requestId: string; branchStatus: number; message?: string },
) {
  const leader = await cluster.leader();
  const raw = rawClient(leader.tc);
  raws.push(raw);
  const stream = raw.RmChannel();
  const messages: TcMessage[] = [];
  const requests: Request[] = [];
  let ended = false;
  stream.on('data', (m: TcMessage) => {
    messages.push(m);
    if (m.branchCommit) {
      requests.push(m.branchCommit);
      if (answer) stream.write({ branchResult: answer(m.branchCommit) });
    }
    if (m.phaseTwoBatch) {
      const batch = [...m.phaseTwoBatch.commits, ...m.phaseTwoBatch.rollbacks];
      requests.push(...batch);
      if (answer) stream.write({ branchResults: { results: batch.reverse().map(answer) } });
    }
  });
  stream.on('error', () => (ended = true));
  stream.on('end', () => (ended = true));
  stream.write({
    register: {
      applicationId: app,
      transactionServiceGroup: 'default',
      resourceIds: [resource],
      clientId: `${app}:rm`,
      batches,
    },
  });
  const registered = await waitFor('registered', () => messages.find((m) => m.registered), 10_000);
  return {
    leader,
    registered: registered.registered!,
    stream,
    messages,
    requests,
    ended: () => ended,
    /** Messages that carried phase-two requests. */
    callMessages: () => messages.filter((m) => m.branchCommit || m.phaseTwoBatch),
  };
}

/** `n` transactions with one AT branch each for `app`/`resource`, committed in one turn. */
async function commitMany(
  app: string,
  resource: string,
  n: number,
  begun: (xid: string, i: number) => void = () => {},
): Promise<Xid[]> {
  const xids = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const xid = await tc.begin({
        applicationId: app,
        transactionServiceGroup: 'default',
        name: 'batch',
        timeoutMs: 600_000,
      });
      await tc.branchRegister({
        xid,
        branchType: 'AT',
        resourceId: resource,
        lockKey: `t:${app}:${i}`,
        clientId: `${app}:rm`,
        applicationId: app,
      });
      begun(xid, i);
      return xid;
    }),
  );
  await Promise.all(xids.map((xid) => tc.commit(xid)));
  return xids;
}

describe('an RM that announced batches', () => {
  it('gets many phase-two calls in few messages, and each result in a batch ends its own branch', async () => {
    const N = 120;
    // Every third branch fails unretryably, with its xid as the RM's message; the others
    // commit: each result of a batch (answered in reverse order) must land on its own call.
    const fails = new Set<string>();
    const rm = await rawRm('batched', 'batched-db', true, (r) => resultFor(r, fails));
    expect(rm.registered.resultCode).toBe('RESULT_CODE_OK');
    // The TC says it reads result batches.
    expect(rm.registered.batches).toBe(true);
    const [sent0, msgs0, results0, resultMsgs0] = await leaderCounts(rm.leader);
    const xids = await commitMany('batched', 'batched-db', N, (xid, i) => {
      if (i % 3 === 0) fails.add(xid);
    });
    const want = xids.map((_, i) => (i % 3 === 0 ? 'CommitFailed' : 'Committed'));
    let seen: string[] = [];
    await waitFor(
      'every transaction at the status its result said',
      async () => {
        seen = await Promise.all(xids.map((x) => tc.getStatus(x).catch((e: Error) => e.name)));
        return seen.every((st, i) => st === want[i]) ? true : undefined;
      },
      60_000,
      200,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(seen.filter((st, i) => st !== want[i]))}`);
    });
    const failed = await tc.getSession(xids[0]!);
    expect(failed.branches[0]!.status).toBe('PhaseTwo_CommitFailed_Unretryable');

    const callMessages = rm.callMessages();
    const batches = callMessages.filter((m) => m.phaseTwoBatch);
    process.stdout.write(
      `rm-batch: ${rm.requests.length} phase-two calls in ${callMessages.length} messages ` +
        `(${batches.length} batches, largest ${Math.max(...batches.map((b) => b.phaseTwoBatch!.commits.length))})\n`,
    );
    expect(new Set(rm.requests.map((r) => r.xid)).size).toBe(N);
    expect(batches.length).toBeGreaterThan(0);
    expect(callMessages.length).toBeLessThan(rm.requests.length);
    for (const b of batches) {
      const size = b.phaseTwoBatch!.commits.length + b.phaseTwoBatch!.rollbacks.length;
      expect(size).toBeGreaterThan(1);
      expect(size).toBeLessThanOrEqual(MAX_RM_BATCH_ENTRIES);
    }
    // The leader counts what the RM saw: calls and the messages they took, results and theirs.
    const [sent, msgs, results, resultMsgs] = await leaderCounts(rm.leader);
    expect(sent - sent0).toBe(rm.requests.length);
    expect(msgs - msgs0).toBe(callMessages.length);
    expect(results - results0).toBe(rm.requests.length);
    expect(resultMsgs - resultMsgs0).toBe(callMessages.length);
    expect(rm.ended()).toBe(false);
    rm.stream.end();
  }, 120_000);
});

/** The leader's phase-two counters: calls sent, their messages, results, their messages. */
async function leaderCounts(leader: TestNode): Promise<[number, number, number, number]> {
  const [a, b, c, d] = await Promise.all(
    [
      'concord_tc_rm_phase_two_sent',
      'concord_tc_rm_phase_two_messages',
      'concord_tc_rm_results',
      'concord_tc_rm_result_messages',
    ].map((name) => metric(leader, name)),
  );
  return [a!, b!, c!, d!];
}

describe('an RM that did not announce batches (an SDK from before them)', () => {
  it('gets one phase-two request per message and answers singly', async () => {
    const N = 60;
    const rm = await rawRm('single', 'single-db', false, (r) => committed(r.requestId));
    expect(rm.registered.resultCode).toBe('RESULT_CODE_OK');
    // A TC that reads batches says so; an RM from before batches ignores the field.
    expect(rm.registered.batches).toBe(true);
    const xids = await commitMany('single', 'single-db', N);
    for (const xid of xids)
      await waitForStatus(tc, xid, (s) => s === 'Committed' || s === 'UnknownXid', 30_000);
    expect(rm.messages.some((m) => m.phaseTwoBatch)).toBe(false);
    expect(rm.callMessages().length).toBe(rm.requests.length);
    rm.stream.end();
  }, 120_000);
});

describe('a malformed result batch from an RM', () => {
  const cases: Array<[string, (rs: Request[]) => unknown[]]> = [
    [
      'a request id twice',
      (rs) => [...rs.map((r) => committed(r.requestId)), committed(rs[0]!.requestId)],
    ],
    [
      'a result without a request id',
      (rs) => [...rs.map((r) => committed(r.requestId)), committed('')],
    ],
    [
      `more than ${MAX_RM_BATCH_ENTRIES} results`,
      (rs) => [
        ...rs.map((r) => committed(r.requestId)),
        ...Array.from({ length: MAX_RM_BATCH_ENTRIES }, (_, i) => committed(`x-${i}`)),
      ],
    ],
    ['no result at all', () => []],
  ];

  it.each(cases)(
    'is refused whole (%s): BAD_REQUEST, the channel ends, and no branch takes its result',
    async (name, make) => {
      const app = `bad-${name.replace(/[^a-z]/g, '')}`.slice(0, 40);
      const resource = `${app}-db`;
      const rm = await rawRm(app, resource, true);
      const xids = await commitMany(app, resource, 8);
      await waitFor(
        'every call arrived',
        () => (rm.requests.length >= 8 ? true : undefined),
        30_000,
      );
      // Valid results for every call, plus the defect, in one batch.
      rm.stream.write({ branchResults: { results: make(rm.requests.slice(0, 8)) } });
      const goAway = await waitFor('the TC refused the batch', () =>
        rm.messages.find((m) => m.goAway),
      );
      expect(goAway.goAway!.error.code).toBe('ERROR_CODE_BAD_REQUEST');
      await waitFor('the channel ended', () => (rm.ended() ? true : undefined));
      // Nothing of the batch was taken: every branch is still waiting for its phase two.
      for (const xid of xids) {
        const s = await tc.getSession(xid);
        expect(s.live).toBe(true);
        expect(s.branches[0]!.status).not.toBe('PhaseTwo_Committed');
      }
      // A well-behaved RM of the application takes over: every transaction commits.
      const good = tc.openRmChannel({
        applicationId: app,
        transactionServiceGroup: 'default',
        clientId: `${app}:rm`,
        resourceIds: () => [resource],
        handler: async () => 'PhaseTwo_Committed',
      });
      try {
        await good.ready(15_000);
        for (const xid of xids)
          await waitForStatus(tc, xid, (s) => s === 'Committed' || s === 'UnknownXid', 30_000);
      } finally {
        await good.close();
      }
    },
    120_000,
  );
});

function resultFor(r: Request, fails: Set<string>) {
  return fails.has(r.xid)
    ? {
        requestId: r.requestId,
        branchStatus: branchStatusToCode('PhaseTwo_CommitFailed_Unretryable'),
        message: `failed ${r.xid}`,
      }
    : committed(r.requestId);
}

function committed(requestId: string) {
  return { requestId, branchStatus: branchStatusToCode('PhaseTwo_Committed') };
}

describe('the SDK RM', () => {
  it('reads batches and answers in batches: fewer messages than calls both ways', async () => {
    const N = 150;
    const leader = await cluster.leader();
    const rm = tc.openRmChannel({
      applicationId: 'sdk',
      transactionServiceGroup: 'default',
      clientId: 'sdk:rm',
      resourceIds: () => ['sdk-db'],
      handler: async () => 'PhaseTwo_Committed',
    });
    try {
      await rm.ready(15_000);
      const results0 = await metric(leader, 'concord_tc_rm_results');
      const resultMsgs0 = await metric(leader, 'concord_tc_rm_result_messages');
      const xids = await commitMany('sdk', 'sdk-db', N);
      for (const xid of xids)
        await waitForStatus(tc, xid, (s) => s === 'Committed' || s === 'UnknownXid', 30_000);
      const st = rm.stats();
      process.stdout.write(`rm-batch: SDK RM ${JSON.stringify(st)}\n`);
      expect(st.requests).toBeGreaterThanOrEqual(N);
      expect(st.results).toBe(st.requests);
      expect(st.requestMessages).toBeLessThan(st.requests);
      expect(st.resultMessages).toBeLessThan(st.results);
      expect(st.refusedBatches).toBe(0);
      const results = (await metric(leader, 'concord_tc_rm_results')) - results0;
      const resultMsgs = (await metric(leader, 'concord_tc_rm_result_messages')) - resultMsgs0;
      expect(results).toBe(st.results);
      expect(resultMsgs).toBe(st.resultMessages);
    } finally {
      await rm.close();
    }
  }, 120_000);
});
