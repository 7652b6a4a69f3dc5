/**
 * The TC protocol on a real three-node cluster (three `concord start` processes): bad
 * requests, not-leader answers, commit and rollback through the RM channel, locks, phase-two
 * retries, an RM that is away during phase two, the transaction timeout, and statuses that
 * never go backwards. One cluster for the file; a test RM in this process records every
 * phase-two call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { LockConflictError, type GlobalStatus, type TcClient } from '../../src/client/tc-client.ts';
import {
  TestCluster,
  TestRm,
  rawCall,
  rawClient,
  waitFor,
  waitForStatus,
  type RawClient,
  startClusterWithRm,
  statusRank,
  stopClusterWithRm,
} from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const TICK_MS = 50;
const APP = { applicationId: 'shop', transactionServiceGroup: 'default' };
const MAX_LOCK_KEY_CHARS = 64 * 1024;

let cluster: TestCluster;
let tc: TcClient;
let unary: TcClient;
let rm: TestRm;
const raws: RawClient[] = [];

function raw(port: number): RawClient {
  const c = rawClient(port);
  raws.push(c);
  return c;
}

/** The Raft entries a node proposed and the commands they carried, from its /metrics. */
async function proposedCounts(httpPort: number): Promise<{ entries: number; commands: number }> {
  const text = await (await fetchNode(`${nodeBase(httpPort)}/metrics`)).text();
  const value = (name: string) =>
    Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    entries: value('concord_raft_proposed_entries_total'),
    commands: value('concord_raft_proposed_commands_total'),
  };
}

beforeAll(async () => {
  ({ cluster, tc, rm } = await startClusterWithRm(
    'protocol',
    { tickMs: TICK_MS },
    ['stock', 'orders-db', 'payments'],
    { clientId: 'rm-main' },
  ));
  unary = cluster.client({ transport: 'unary' });
}, 90_000);

afterAll(async () => {
  for (const r of raws) r.close();
  await unary?.close();
  await stopClusterWithRm({ cluster, tc, rm });
}, 60_000);

describe('bad requests', () => {
  it('get BAD_REQUEST, change nothing, and leave the node serving', async () => {
    const leader = await cluster.leader();
    const client = raw(leader.tc);
    const xid = await tc.begin({ ...APP, name: 'bad-requests', timeoutMs: 60_000 });
    const before = await cluster.metadata(leader);
    const liveBefore = (await tc.listSessions()).totalLive;

    const bad: Array<[string, unknown]> = [
      ['Commit', { xid: 'not-an-xid' }],
      ['GetStatus', { xid: '127.0.0.1:99999:12' }],
      ['Rollback', { xid: `127.0.0.1:8091:${'9'.repeat(200)}` }],
      ['Begin', { ...APP, name: 'x', timeoutMs: 0 }],
      ['Begin', { applicationId: '', transactionServiceGroup: 'g', timeoutMs: 1000 }],
      ['Begin', { ...APP, timeoutMs: 1000, requestId: 'r'.repeat(129) }],
      [
        'BranchRegister',
        { xid, branchType: 9, resourceId: 'stock', clientId: 'c', applicationId: 'a' },
      ],
      [
        'BranchRegister',
        { xid, branchType: -1, resourceId: 'stock', clientId: 'c', applicationId: 'a' },
      ],
      [
        'BranchRegister',
        {
          xid,
          branchType: 0,
          resourceId: 'stock',
          lockKey: `t:${'k'.repeat(MAX_LOCK_KEY_CHARS)}`,
          clientId: 'c',
          applicationId: 'a',
        },
      ],
      [
        'BranchRegister',
        {
          xid,
          branchType: 0,
          resourceId: 'stock',
          lockKey: 'no-colon-here',
          clientId: 'c',
          applicationId: 'a',
        },
      ],
      ['BranchRegister', { xid, branchType: 1, resourceId: '', clientId: 'c', applicationId: 'a' }],
      // A branch must name its application (phase two goes only to RMs of it).
      ['BranchRegister', { xid, branchType: 1, resourceId: 'stock', clientId: 'c' }],
      // A client id whose RM channel registered another application.
      [
        'BranchRegister',
        { xid, branchType: 1, resourceId: 'stock', clientId: 'rm-main', applicationId: 'not-shop' },
      ],
      [
        'BranchRegister',
        {
          xid,
          branchType: 1,
          resourceId: 'stock',
          applicationData: 'x'.repeat(16 * 1024 + 1),
          clientId: 'c',
          applicationId: 'a',
        },
      ],
      ['BranchReport', { xid, branchId: 'abc', branchStatus: 2 }],
      ['BranchReport', { xid, branchId: '1', branchStatus: 77 }],
      ['GlobalReport', { xid, globalStatus: 99 }],
      ['LockQuery', { xid, resourceId: 'stock', lockKey: '' }],
      ['MarkResolved', { xid, confirmXid: xid, operator: '' }],
      ['ListSessions', { pageSize: 501 }],
      ['ListSessions', { pageToken: '***' }],
    ];
    for (const [method, request] of bad) {
      const { response, error } = await rawCall(client, method, request);
      expect(error, `${method} ${JSON.stringify(request).slice(0, 80)}`).toBeUndefined();
      expect(response.resultCode, `${method} ${JSON.stringify(request).slice(0, 80)}`).toBe(
        'RESULT_CODE_FAILED',
      );
      expect(
        response.error.code,
        `${method} ${JSON.stringify(request).slice(0, 80)}: ${response.error.message}`,
      ).toBe('ERROR_CODE_BAD_REQUEST');
      expect(response.error.retryable).toBe(false);
      expect(response.error.message.length).toBeGreaterThan(0);
    }

    // A message above the 8 MiB limit is refused by gRPC itself.
    const huge = await rawCall(client, 'Begin', {
      ...APP,
      timeoutMs: 1000,
      name: 'n'.repeat(9 * 1024 * 1024),
    });
    expect(huge.error?.code).toBe(8 /* RESOURCE_EXHAUSTED */);

    // Bytes that are no valid message (a length past the end) are refused by the codec
    // (WireDecodeError): gRPC ends that call with INTERNAL, unary or stream, and the node
    // goes on serving.
    const garbage = Buffer.from([0x0a, 0x7f, 0x08, 0x01]);
    const identity = (b: Buffer) => b;
    const malformedUnary = await new Promise<grpc.ServiceError | null>((res) => {
      client.makeUnaryRequest(
        '/concord.tc.v1.TransactionCoordinator/Begin',
        identity,
        identity,
        garbage,
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (err: grpc.ServiceError | null) => res(err),
      );
    });
    expect(malformedUnary?.code).toBe(grpc.status.INTERNAL);
    const malformedStream = client.makeBidiStreamRequest(
      '/concord.tc.v1.TransactionCoordinator/Calls',
      identity,
      identity,
    );
    const streamEnd = new Promise<grpc.StatusObject>((res) => malformedStream.on('status', res));
    malformedStream.on('error', () => {});
    malformedStream.on('data', () => {});
    malformedStream.write(garbage);
    expect((await streamEnd).code).toBe(grpc.status.INTERNAL);

    // The multiplexed stream: a call that sets no request, and a bad one, are answered one by one.
    const stream = client.Calls();
    const results: any[] = [];
    stream.on('data', (b: any) => results.push(...b.results));
    stream.write({
      calls: [{ id: 1 }, { id: 2, commit: { xid: 'nope' } }, { id: 3, getStatus: { xid } }],
    });
    await waitFor('three results', () => (results.length >= 3 ? true : undefined), 10_000);
    stream.end();
    const byId = new Map(results.map((r) => [r.id, r]));
    expect(byId.get(1).invalid.error.code).toBe('ERROR_CODE_BAD_REQUEST');
    expect(byId.get(2).commit.error.code).toBe('ERROR_CODE_BAD_REQUEST');
    expect(byId.get(3).getStatus.resultCode).toBe('RESULT_CODE_OK');
    expect(byId.get(3).getStatus.globalStatus).toBe(1 /* Begin */);

    // A batch above MAX_CALLS_PER_BATCH (1024) ends that stream with INVALID_ARGUMENT, nothing
    // else.
    const flood = client.Calls();
    const floodEnd = new Promise<any>((res) => {
      flood.on('error', res);
      flood.on('data', () => undefined);
    });
    flood.write({
      calls: Array.from({ length: 1025 }, (_, i) => ({
        id: i + 1,
        begin: { ...APP, timeoutMs: 1000 },
      })),
    });
    expect((await floodEnd).code).toBe(3 /* INVALID_ARGUMENT */);

    // An RM channel that registers garbage is told why and closed.
    const channel = client.RmChannel();
    const fromTc: any[] = [];
    channel.on('data', (m: any) => fromTc.push(m));
    channel.on('error', () => undefined);
    channel.write({ register: { applicationId: '', resourceIds: [], clientId: '' } });
    await waitFor('the goAway', () => (fromTc.some((m) => m.goAway) ? true : undefined), 10_000);
    expect(fromTc.find((m) => m.goAway).goAway.error.code).toBe('ERROR_CODE_BAD_REQUEST');
    channel.cancel();

    // Nothing was proposed for any of it (same term: no election in between), nothing changed.
    const after = await cluster.metadata(leader);
    if (after.term === before.term) expect(after.lastIndex).toBe(before.lastIndex);
    expect((await tc.listSessions()).totalLive).toBe(liveBefore);
    expect(await tc.getStatus(xid)).toBe('Begin');
    expect((await tc.getSession(xid)).branches).toEqual([]);
    await tc.rollback(xid);
  });
});

describe('not the leader', () => {
  it('a follower answers every TC call with NOT_LEADER carrying the leader’s TC address', async () => {
    const leader = await cluster.leader();
    const follower = cluster.followers(leader)[0]!;
    const client = raw(follower.tc);
    const xid = await tc.begin({ ...APP, timeoutMs: 60_000 });
    const calls: Array<[string, unknown]> = [
      ['Begin', { ...APP, timeoutMs: 1000 }],
      ['GetStatus', { xid }],
      ['Commit', { xid }],
      [
        'BranchRegister',
        { xid, branchType: 1, resourceId: 'stock', clientId: 'c', applicationId: 'a' },
      ],
      ['LockQuery', { xid, resourceId: 'stock', lockKey: 't:1' }],
      ['GetSession', { xid }],
      ['ListSessions', {}],
    ];
    for (const [method, request] of calls) {
      const { response } = await rawCall(client, method, request);
      expect(response.resultCode, method).toBe('RESULT_CODE_FAILED');
      expect(response.error.code, method).toBe('ERROR_CODE_NOT_LEADER');
      expect(response.error.retryable).toBe(true);
      expect(response.error.leader).toEqual({
        nodeId: leader.id,
        host: '127.0.0.1',
        port: leader.tc,
      });
    }
    // The RM channel too: registration is refused with the leader's address.
    const channel = client.RmChannel();
    const fromTc: any[] = [];
    channel.on('data', (m: any) => fromTc.push(m));
    channel.on('error', () => undefined);
    channel.write({ register: { ...APP, resourceIds: ['stock'], clientId: 'c-follower' } });
    await waitFor('the registration answer', () => (fromTc.length > 0 ? true : undefined), 10_000);
    expect(fromTc[0].registered.resultCode).toBe('RESULT_CODE_FAILED');
    expect(fromTc[0].registered.error.leader).toEqual({
      nodeId: leader.id,
      host: '127.0.0.1',
      port: leader.tc,
    });
    channel.cancel();
    // The follower's refusal changed nothing: the transaction is still open.
    expect(await tc.getStatus(xid)).toBe('Begin');
    await tc.rollback(xid);
  });
});

describe('commit and rollback', () => {
  it('commits a transaction with no branch', async () => {
    const xid = await tc.begin({ ...APP, name: 'empty', timeoutMs: 30_000 });
    expect(await tc.getStatus(xid)).toBe('Begin');
    expect(await tc.commit(xid)).toBe('Committed');
    expect(await tc.getStatus(xid)).toBe('Committed');
    expect(rm.callsFor(xid)).toEqual([]);
    // A retried commit of a decided transaction answers its status.
    expect(await tc.commit(xid)).toBe('Committed');
  });

  it("the leader's /metrics count the entries it proposed and the commands they carried", async () => {
    const leader = await cluster.leader();
    const read = () => proposedCounts(leader.http);
    const before = await read();
    // Ten begins in one event-loop turn, then their commits: at least 20 commands.
    const xids = await Promise.all(
      Array.from({ length: 10 }, () => tc.begin({ ...APP, name: 'counted', timeoutMs: 30_000 })),
    );
    await Promise.all(xids.map((x) => tc.commit(x)));
    const after = await read();
    expect(after.commands - before.commands).toBeGreaterThanOrEqual(20);
    expect(after.entries - before.entries).toBeGreaterThanOrEqual(1);
    // Batched: fewer entries than commands.
    expect(after.entries - before.entries).toBeLessThan(after.commands - before.commands);
  });

  it("a sync commit's last branch result travels in the session's end: one command, one entry", async () => {
    const leader = await cluster.leader();
    const xid = await tc.begin({ ...APP, name: 'one-entry-end', timeoutMs: 30_000 });
    await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    const before = await proposedCounts(leader.http);
    expect(await tc.commit(xid)).toBe('Committed');
    const after = await proposedCounts(leader.http);
    // CommitGlobal; then FinishGlobal carrying the branch's result (lastBranch). Were 3
    // entries, then 2 entries of 3 commands (the result and the end side by side).
    expect(after.commands - before.commands).toBe(2);
    expect(after.entries - before.entries).toBe(2);
  });

  it('commits a transaction with one branch: the RM is told once', async () => {
    const xid = await tc.begin({ ...APP, name: 'one', timeoutMs: 30_000 });
    const branchId = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
      applicationData: '{"n":1}',
    });
    expect(await tc.commit(xid)).toBe('Committed');
    const calls = rm.callsFor(xid);
    expect(
      calls.map((c) => [
        c.kind,
        c.branchId,
        c.branchType,
        c.resourceId,
        c.applicationData,
        c.applicationId,
      ]),
    ).toEqual([['commit', branchId, 'TCC', 'stock', '{"n":1}', rm.applicationId]]);
  });

  it('commits a transaction with many branches, in registration order (unary transport)', async () => {
    const xid = await unary.begin({ ...APP, name: 'many', timeoutMs: 30_000 });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      ids.push(
        await unary.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: i % 2 === 0 ? 'stock' : 'payments',
          lockKey: `acct:${i}`,
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        }),
      );
    }
    const session = await unary.getSession(xid);
    expect(session.branches.map((b) => b.branchId)).toEqual(ids);
    expect(session.branches.every((b) => b.lockedRows === 1)).toBe(true);
    expect(await unary.commit(xid)).toBe('Committed');
    expect(rm.callsFor(xid).map((c) => [c.kind, c.branchId])).toEqual(
      ids.map((id) => ['commit', id]),
    );
    // Its locks are gone with it.
    expect(await tc.lockQuery({ resourceId: 'stock', lockKey: 'acct:0,2,4' })).toBe(true);
  });

  it('rolls back in reverse registration order', async () => {
    const xid = await tc.begin({ ...APP, name: 'rollback', timeoutMs: 30_000 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(
        await tc.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'stock',
          clientId: rm.clientId,
          applicationId: rm.applicationId,
        }),
      );
    expect(await tc.rollback(xid)).toBe('Rollbacked');
    expect(rm.callsFor(xid).map((c) => [c.kind, c.branchId])).toEqual(
      [...ids].reverse().map((id) => ['rollback', id]),
    );
    expect(await tc.getStatus(xid)).toBe('Rollbacked');
  });
});

describe('locks', () => {
  it('a conflicting branch of another xid is refused naming the holder; it gets the rows once the first ends', async () => {
    const first = await tc.begin({ ...APP, name: 'holder', timeoutMs: 30_000 });
    const second = await tc.begin({ ...APP, name: 'waiter', timeoutMs: 30_000 });
    await tc.branchRegister({
      xid: first,
      branchType: 'AT',
      resourceId: 'orders-db',
      lockKey: 'orders:1,2;items:7',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    // The holder may lock its own rows again.
    expect(await tc.lockQuery({ xid: first, resourceId: 'orders-db', lockKey: 'orders:2' })).toBe(
      true,
    );
    expect(
      await tc.lockQuery({ xid: second, resourceId: 'orders-db', lockKey: 'orders:2,3' }),
    ).toBe(false);
    expect(await tc.lockQuery({ resourceId: 'orders-db', lockKey: 'orders:9' })).toBe(true);

    const err = await tc
      .branchRegister({
        xid: second,
        branchType: 'AT',
        resourceId: 'orders-db',
        lockKey: 'orders:2,3',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockConflictError);
    const conflict = err as LockConflictError;
    expect(conflict.holdingXid).toBe(first);
    expect(conflict.rows).toEqual(['orders-db^^^orders^^^2']);
    // All or nothing: row 3 was not taken by the refused branch.
    expect(await tc.lockQuery({ resourceId: 'orders-db', lockKey: 'orders:3' })).toBe(true);
    expect((await tc.getSession(second)).branches).toEqual([]);

    // AT commits asynchronously: the TM hears AsyncCommitting, the rows are free once the branch
    // committed.
    expect(await tc.commit(first)).toBe('AsyncCommitting');
    await waitForStatus(tc, first, (s) => s === 'Committed');
    expect(
      await tc.lockQuery({ xid: second, resourceId: 'orders-db', lockKey: 'orders:2,3' }),
    ).toBe(true);
    await tc.branchRegister({
      xid: second,
      branchType: 'AT',
      resourceId: 'orders-db',
      lockKey: 'orders:2,3',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    expect(await tc.rollback(second)).toBe('Rollbacked');
  });
});

describe('phase-two failures', () => {
  it('a branch that fails commit twice then succeeds is retried until committed', async () => {
    const xid = await tc.begin({ ...APP, name: 'flaky', timeoutMs: 30_000 });
    const ok = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    const flaky = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'payments',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    rm.behave = (call, attempt) =>
      call.branchId === flaky && attempt <= 2
        ? 'PhaseTwo_CommitFailed_Retryable'
        : 'PhaseTwo_Committed';
    try {
      expect(await tc.commit(xid)).toBe('CommitRetrying');
      await waitForStatus(tc, xid, (s) => s === 'Committed', 20_000);
    } finally {
      rm.behave = null;
    }
    const calls = rm.callsFor(xid).map((c) => [c.kind, c.branchId]);
    // The committed branch is not told again; the flaky one three times.
    expect(calls).toEqual([
      ['commit', ok],
      ['commit', flaky],
      ['commit', flaky],
      ['commit', flaky],
    ]);
  });

  it('an RM that is down during phase two gets the call when it comes back', async () => {
    const away = new TestRm(tc, ['ledger'], { clientId: 'rm-away' });
    await away.connect();
    const xid = await tc.begin({ ...APP, name: 'rm-away', timeoutMs: 30_000 });
    const branchId = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'ledger',
      clientId: away.clientId,
      applicationId: away.applicationId,
    });
    await away.disconnect();
    // No RM serves the resource: phase two fails retryably, the decision stands.
    expect(await tc.commit(xid)).toBe('CommitRetrying');
    await sleep(1_500);
    expect(await tc.getStatus(xid)).toBe('CommitRetrying');
    expect(away.callsFor(xid)).toEqual([]);
    await away.connect();
    await waitForStatus(tc, xid, (s) => s === 'Committed', 20_000);
    expect(away.callsFor(xid).map((c) => [c.kind, c.branchId])).toEqual([['commit', branchId]]);
    await away.disconnect();
  });

  it('a transaction that outlives its timeout is rolled back by the TC', async () => {
    const xid = await tc.begin({ ...APP, name: 'slow', timeoutMs: 400 });
    const branchId = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    await waitForStatus(tc, xid, (s) => s === 'TimeoutRollbacked', 15_000);
    expect(rm.callsFor(xid).map((c) => [c.kind, c.branchId])).toEqual([['rollback', branchId]]);
    // A late commit cannot change the decision.
    expect(await tc.commit(xid)).toBe('TimeoutRollbacked');
    // Nor can a branch join it.
    await expect(
      tc.branchRegister({ xid, branchType: 'TCC', resourceId: 'stock', clientId: rm.clientId }),
    ).rejects.toThrow();
  });
});

describe('operator calls', () => {
  it('stop, resume and run retries now; mark a stuck transaction resolved', async () => {
    const failing = new Set<string>();
    rm.behave = (call) =>
      failing.has(call.branchId)
        ? 'PhaseTwo_CommitFailed_Retryable'
        : call.kind === 'commit'
          ? 'PhaseTwo_Committed'
          : 'PhaseTwo_Rollbacked';
    try {
      // Stop and resume, then a manual retry once the RM is healthy.
      const a = await tc.begin({ ...APP, name: 'ops-a', timeoutMs: 30_000 });
      const branchA = await tc.branchRegister({
        xid: a,
        branchType: 'TCC',
        resourceId: 'stock',
        lockKey: 'ops:1',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      failing.add(branchA);
      expect(await tc.commit(a)).toBe('CommitRetrying');
      await tc.stopRetry(a);
      expect(await tc.getStatus(a)).toBe('StopCommitOrCommitRetry');
      await expect(tc.retryNow(a)).rejects.toMatchObject({
        name: 'IllegalStatusError',
        globalStatus: 'StopCommitOrCommitRetry',
      });
      await tc.resumeRetry(a);
      failing.delete(branchA);
      expect(await tc.retryNow(a)).toBe('Committed');

      // A stuck one is resolved by hand: its locks go, its failed status stays, with who did it.
      const b = await tc.begin({ ...APP, name: 'ops-b', timeoutMs: 30_000 });
      const branchB = await tc.branchRegister({
        xid: b,
        branchType: 'TCC',
        resourceId: 'stock',
        lockKey: 'ops:2',
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });
      failing.add(branchB);
      expect(await tc.commit(b)).toBe('CommitRetrying');
      await tc.stopRetry(b);
      expect(await tc.lockQuery({ resourceId: 'stock', lockKey: 'ops:2' })).toBe(false);
      const page = await tc.listSessions({ status: 'StopCommitOrCommitRetry' });
      expect(page.sessions.map((s) => s.xid)).toContain(b);
      await expect(
        tc.markResolved({ xid: b, confirmXid: a, operator: 'alice' }),
      ).rejects.toMatchObject({ name: 'BadRequestError' });
      expect(await tc.markResolved({ xid: b, confirmXid: b, operator: 'alice' })).toBe(
        'CommitFailed',
      );
      expect(await tc.lockQuery({ resourceId: 'stock', lockKey: 'ops:2' })).toBe(true);
      const session = await tc.getSession(b);
      expect(session).toMatchObject({ live: false, status: 'CommitFailed', resolvedBy: 'alice' });
    } finally {
      rm.behave = null;
    }
  });
});

describe('status queries', () => {
  it('never go backwards while phase two runs and retries', async () => {
    const xid = await tc.begin({ ...APP, name: 'watched', timeoutMs: 30_000 });
    const a = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    const b = await tc.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'payments',
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    rm.behave = async (call, attempt) => {
      await sleep(100);
      return call.branchId === b && attempt === 1
        ? 'PhaseTwo_CommitFailed_Retryable'
        : 'PhaseTwo_Committed';
    };
    // Seen before the commit: the commit no longer reads first, so a poll started with it
    // may already see the decision.
    const seen: GlobalStatus[] = [await tc.getStatus(xid)];
    let stop = false;
    const poller = (async () => {
      while (!stop) {
        seen.push(await tc.getStatus(xid));
        await sleep(15);
      }
    })();
    try {
      await tc.commit(xid);
      await waitForStatus(tc, xid, (s) => s === 'Committed', 20_000);
    } finally {
      stop = true;
      rm.behave = null;
      await poller;
    }
    seen.push(await tc.getStatus(xid));
    for (let i = 1; i < seen.length; i++)
      expect(statusRank(seen[i]!), `${seen[i - 1]} → ${seen[i]}`).toBeGreaterThanOrEqual(
        statusRank(seen[i - 1]!),
      );
    expect(seen).toContain('Begin');
    expect(seen).toContain('CommitRetrying');
    expect(seen.at(-1)).toBe('Committed');
    expect(rm.callsFor(xid).map((c) => c.branchId)).toEqual([a, b, b]);
  });
});
