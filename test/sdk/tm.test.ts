/**
 * The TM and RM logic against an in-memory TC (FakeTc): outcome rules, propagation in
 * action, noRollbackFor, error mapping, and phase-two dispatch. The same behaviours run
 * against a real cluster in cluster.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  BranchRefusedError,
  ClientClosedError,
  createClient,
  GlobalTimeoutError,
  currentXid,
  NoGlobalTransactionError,
  runWithXid,
  TimeoutError,
  TransactionFailedError,
  TransactionOutcomeUnknownError,
  TransactionPropagationError,
  TransactionRolledBackError,
  TransactionTimeoutError,
  UnretryableBranchError,
  type Fence,
  type FenceKey,
} from '../../src/index.ts';
import { LockConflictError, OutcomeUnknownError } from '../../src/client/tc/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { FakeTc } from './helpers/fake-tc.ts';

function setup() {
  const tc = new FakeTc();
  const client = createClient({
    servers: 'unused:1',
    applicationId: 'unit',
    tc,
    logger: silentLogger(),
  });
  return { tc, client };
}

class Declined extends Error {}

describe('client.transaction', () => {
  it('commits when fn returns, with the xid bound inside and unbound after', async () => {
    const { tc, client } = setup();
    let inside: string | undefined;
    const result = await client.transaction({ name: 'ok' }, async (scope) => {
      inside = currentXid();
      expect(scope).toMatchObject({ xid: inside, role: 'launcher' });
      expect(scope.signal).toBeInstanceOf(AbortSignal);
      expect(scope.signal.aborted).toBe(false);
      return 7;
    });
    expect(result).toBe(7);
    expect(inside).toBeDefined();
    expect(currentXid()).toBeUndefined();
    expect(tc.sessions.get(inside!)?.status).toBe('Committed');
    expect(tc.calls).toEqual(['begin', 'commit']);
  });

  it('rolls back when fn throws, and rethrows the same error', async () => {
    const { tc, client } = setup();
    const boom = new Error('boom');
    let xid: string | undefined;
    await expect(
      client.transaction({}, () => {
        xid = currentXid();
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(tc.sessions.get(xid!)?.status).toBe('Rollbacked');
  });

  it('rethrows the business error even when the rollback call fails', async () => {
    const { tc, client } = setup();
    tc.failNext.rollback = new TimeoutError('slow');
    const boom = new Error('boom');
    await expect(client.transaction({}, () => Promise.reject(boom))).rejects.toBe(boom);
  });

  it('noRollbackFor (classes): commits, then rethrows', async () => {
    const { tc, client } = setup();
    let xid: string | undefined;
    const err = new Declined('declined');
    await expect(
      client.transaction({ noRollbackFor: [Declined] }, () => {
        xid = currentXid();
        throw err;
      }),
    ).rejects.toBe(err);
    expect(tc.sessions.get(xid!)?.status).toBe('Committed');
  });

  it('noRollbackFor (predicate): commits only for errors it accepts', async () => {
    const { tc, client } = setup();
    const xids: string[] = [];
    const rule = (e: unknown) => e instanceof Error && e.message.startsWith('soft');
    await expect(
      client.transaction(
        { noRollbackFor: rule },
        () => (xids.push(currentXid()!), Promise.reject(new Error('soft: ok'))),
      ),
    ).rejects.toThrow('soft');
    await expect(
      client.transaction(
        { noRollbackFor: rule },
        () => (xids.push(currentXid()!), Promise.reject(new Error('hard'))),
      ),
    ).rejects.toThrow('hard');
    expect(xids.map((x) => tc.sessions.get(x)?.status)).toEqual(['Committed', 'Rollbacked']);
  });

  it('a commit the TC answers with a timeout rollback throws GlobalTimeoutError (a TransactionRolledBackError, code TIMEOUT), another rollback TransactionRolledBackError', async () => {
    const { tc, client } = setup();
    tc.commitAnswer = 'TimeoutRollbacked';
    const err = await client.transaction({ timeoutMs: 30_000 }, () => 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlobalTimeoutError);
    expect(err).toBeInstanceOf(TransactionRolledBackError);
    expect(err).not.toBeInstanceOf(TransactionTimeoutError);
    expect(err).toMatchObject({ status: 'TimeoutRollbacked', code: 'TIMEOUT', timeoutMs: 30_000 });
    tc.commitAnswer = 'Rollbacked';
    const other = await client.transaction({}, () => 1).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(TransactionRolledBackError);
    expect(other).not.toBeInstanceOf(GlobalTimeoutError);
  });

  it('CommitFailed throws TransactionFailedError; CommitRetrying is a success', async () => {
    const { tc, client } = setup();
    tc.commitAnswer = 'CommitFailed';
    await expect(client.transaction({}, () => 1)).rejects.toBeInstanceOf(TransactionFailedError);
    tc.commitAnswer = 'CommitRetrying';
    await expect(client.transaction({}, () => 2)).resolves.toBe(2);
  });

  it('timeouts name their phase: begin, commit', async () => {
    const { tc, client } = setup();
    tc.failNext.begin = new TimeoutError('no answer');
    const begin = await client.transaction({}, () => 1).catch((e: unknown) => e);
    expect(begin).toBeInstanceOf(TransactionTimeoutError);
    expect(begin).toMatchObject({ phase: 'begin', xid: null, code: 'TIMEOUT', retryable: true });
    tc.failNext.commit = new TimeoutError('no answer');
    const commit = await client.transaction({}, () => 1).catch((e: unknown) => e);
    expect(commit).toMatchObject({ name: 'TransactionTimeoutError', phase: 'commit' });
    expect((commit as TransactionTimeoutError).xid).toMatch(/^127\.0\.0\.1:8091:\d+$/);
  });

  it('a commit whose outcome stays unknown says so once: TransactionOutcomeUnknownError with the attempts and the last failure, no repeated sentence', async () => {
    const { tc, client } = setup();
    tc.failNext.commit = new OutcomeUnknownError('Commit', 3, 30_000, new Error('no leader'));
    tc.failNext.getStatus = new TimeoutError('still no leader');
    const err = await client.transaction({}, () => 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionOutcomeUnknownError);
    const message = (err as Error).message;
    expect(message).toMatch(
      /^commit of \S+: outcome unknown after 3 attempt\(s\) in 30000 ms, and it may or may not have taken effect \(last failure: no leader\)$/,
    );
    expect(message.match(/outcome unknown/g)).toHaveLength(1);
  });

  it('a lock conflict reaches the caller typed, naming the holder', async () => {
    const { tc, client } = setup();
    const action = client.tcc.register({
      name: 'locky',
      try: () => 1,
      confirm: () => {},
      cancel: () => {},
    });
    tc.failNext.branchRegister = new LockConflictError('127.0.0.1:8091:1', ['r^^^t^^^1'], {
      message: 'held',
    });
    const err = await client.transaction({}, () => action()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockConflictError);
    expect(err).toMatchObject({ holdingXid: '127.0.0.1:8091:1', code: 'LOCK_CONFLICT' });
  });

  it('a branch-register timeout says phase "branch" and rolls the transaction back', async () => {
    const { tc, client } = setup();
    const action = client.tcc.register({
      name: 'slow',
      try: () => 1,
      confirm: () => {},
      cancel: () => {},
    });
    tc.failNext.branchRegister = new TimeoutError('late');
    let xid: string | undefined;
    const err = await client
      .transaction({}, () => ((xid = currentXid()), action()))
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'TransactionTimeoutError', phase: 'branch' });
    expect(tc.sessions.get(xid!)?.status).toBe('Rollbacked');
  });

  it('bad options are refused before any TC call', async () => {
    const { tc, client } = setup();
    await expect(client.transaction({ timeoutMs: 0 }, () => 1)).rejects.toThrow(/timeoutMs/);
    await expect(client.transaction({ propagation: 'X' as never }, () => 1)).rejects.toThrow(
      /propagation/,
    );
    await expect(client.transaction({ noRollbackFor: 'Error' as never }, () => 1)).rejects.toThrow(
      /noRollbackFor/,
    );
    expect(() => client.globalTransaction('not-an-xid')).toThrow(/xid/);
    expect(tc.calls).toEqual([]);
  });
});

describe('propagation in action', () => {
  it('REQUIRED joins, REQUIRES_NEW suspends and begins, NOT_SUPPORTED suspends, SUPPORTS follows', async () => {
    const { tc, client } = setup();
    const seen: Record<string, unknown> = {};
    await client.transaction({}, async (launcherScope) => {
      seen.outer = launcherScope.xid;
      seen.launcherScope = launcherScope;
      await client.transaction({ propagation: 'REQUIRED' }, (s) => void (seen.required = s));
      await client.transaction({ propagation: 'SUPPORTS' }, (s) => void (seen.supports = s));
      await client.transaction({ propagation: 'MANDATORY' }, (s) => void (seen.mandatory = s));
      await client.transaction({ propagation: 'REQUIRES_NEW' }, (s) => void (seen.requiresNew = s));
      await client.transaction(
        { propagation: 'NOT_SUPPORTED' },
        (s) => void (seen.notSupported = { ...s, bound: currentXid() }),
      );
      seen.after = currentXid();
      await expect(client.transaction({ propagation: 'NEVER' }, () => 1)).rejects.toBeInstanceOf(
        TransactionPropagationError,
      );
    });
    const outer = seen.outer as string;
    expect(seen.required).toMatchObject({ xid: outer, role: 'participant' });
    expect(seen.supports).toMatchObject({ xid: outer, role: 'participant' });
    expect(seen.mandatory).toMatchObject({ xid: outer, role: 'participant' });
    // A participant in the launcher's process shares its signal.
    expect((seen.required as { signal: AbortSignal }).signal).toBe(
      (seen.launcherScope as { signal: AbortSignal }).signal,
    );
    const inner = (seen.requiresNew as { xid: string }).xid;
    expect(inner).not.toBe(outer);
    expect(seen.requiresNew).toMatchObject({ xid: inner, role: 'launcher' });
    expect(seen.notSupported).toMatchObject({ xid: undefined, role: 'none', bound: undefined });
    expect(seen.after).toBe(outer);
    expect(tc.sessions.get(inner)?.status).toBe('Committed');
    expect(tc.sessions.get(outer)?.status).toBe('Committed');
    expect(tc.sessions.size).toBe(2);
  });

  it('a participant does not roll back: its error goes to the launcher, which does', async () => {
    const { tc, client } = setup();
    let outer: string | undefined;
    await expect(
      client.transaction({}, async ({ xid }) => {
        outer = xid;
        await client.transaction({}, () => Promise.reject(new Error('inner')));
      }),
    ).rejects.toThrow('inner');
    expect(tc.calls.filter((c) => c === 'rollback')).toHaveLength(1);
    expect(tc.sessions.get(outer!)?.status).toBe('Rollbacked');
  });

  it('REQUIRES_NEW commits independently of an outer rollback', async () => {
    const { tc, client } = setup();
    let inner: string | undefined;
    let outer: string | undefined;
    await expect(
      client.transaction({}, async ({ xid }) => {
        outer = xid;
        await client.transaction({ propagation: 'REQUIRES_NEW' }, ({ xid: x }) => void (inner = x));
        throw new Error('outer fails');
      }),
    ).rejects.toThrow('outer fails');
    expect(tc.sessions.get(inner!)?.status).toBe('Committed');
    expect(tc.sessions.get(outer!)?.status).toBe('Rollbacked');
  });

  it('REQUIRED joins an xid that arrived from elsewhere (an HTTP header, bound by the middleware)', async () => {
    const { tc, client } = setup();
    const remote = await tc.begin({ name: 'remote', timeoutMs: 1000 });
    const scope = await runWithXid(remote, () => client.transaction({}, (s) => s));
    expect(scope).toMatchObject({ xid: remote, role: 'participant' });
    expect(tc.calls).toEqual(['begin']);
  });

  it('SUPPORTS and NEVER outside a transaction run without one; MANDATORY throws', async () => {
    const { client } = setup();
    await expect(client.transaction({ propagation: 'SUPPORTS' }, (s) => s)).resolves.toMatchObject({
      xid: undefined,
      role: 'none',
    });
    await expect(client.transaction({ propagation: 'NEVER' }, (s) => s)).resolves.toMatchObject({
      xid: undefined,
      role: 'none',
    });
    await expect(client.transaction({ propagation: 'MANDATORY' }, () => 1)).rejects.toMatchObject({
      name: 'TransactionPropagationError',
      xid: null,
    });
  });
});

describe('TCC and Saga actions (fake TC)', () => {
  it('a TCC action registers a branch with its arguments, runs try bound to the xid, and is confirmed on commit', async () => {
    const { tc, client } = setup();
    const log: string[] = [];
    const reserve = client.tcc.register({
      name: 'stock.reserve',
      try: (args: { sku: string; n: number }, ctx) => {
        log.push(`try ${args.sku} ${args.n} ${ctx.branchType} bound=${currentXid() === ctx.xid}`);
        return `r-${ctx.branchId}`;
      },
      confirm: (args, ctx) =>
        void log.push(
          `confirm ${args.sku} ${args.n} bound=${currentXid() !== undefined} ${ctx.branchId}`,
        ),
      cancel: () => void log.push('cancel'),
    });
    expect(reserve.resourceId).toBe('stock.reserve');
    const r = await client.transaction({}, () => reserve({ sku: 'A', n: 2 }));
    const [session] = tc.sessions.values();
    const branch = session!.branches[0]!;
    expect(r).toBe(`r-${branch.branchId}`);
    expect(branch).toMatchObject({
      branchType: 'TCC',
      resourceId: 'stock.reserve',
      clientId: client.clientId,
      status: 'PhaseTwo_Committed',
    });
    expect(JSON.parse(branch.applicationData)).toEqual({ concord: 1, args: { sku: 'A', n: 2 } });
    // Phase two runs unbound: a call it makes must not join the decided transaction.
    expect(log).toEqual(['try A 2 TCC bound=true', `confirm A 2 bound=false ${branch.branchId}`]);
  });

  it('failure in a try cancels every tried branch, newest first, the failed one included', async () => {
    const { client } = setup();
    const log: string[] = [];
    const mk = (name: string, fail = false) =>
      client.tcc.register({
        name,
        try: () => {
          log.push(`try ${name}`);
          if (fail) throw new Error(`${name} failed`);
        },
        confirm: () => void log.push(`confirm ${name}`),
        cancel: () => void log.push(`cancel ${name}`),
      });
    const a = mk('a');
    const b = mk('b');
    const c = mk('c', true);
    await expect(
      client.transaction({}, async () => (await a(), await b(), await c())),
    ).rejects.toThrow('c failed');
    expect(log).toEqual(['try a', 'try b', 'try c', 'cancel c', 'cancel b', 'cancel a']);
  });

  it('a try that fails inside its fence is reported PhaseOne_Failed: no cancel on rollback, no confirm under noRollbackFor', async () => {
    const { tc, client } = setup();
    const log: string[] = [];
    const fence = {
      async run(key: FenceKey, fn: (tx: undefined) => Promise<unknown>) {
        // a throw here is the callback's: the fence rolled its transaction back
        await fn(undefined);
        return 'executed' as const;
      },
    } as unknown as Fence<undefined>;
    class Soft extends Error {}
    const a = client.tcc.register({
      name: 'fenced.fail',
      fence,
      try: (fail: boolean) => {
        if (fail) throw new Soft('try failed');
      },
      confirm: (fail) => void log.push(`confirm ${fail}`),
      cancel: (fail) => void log.push(`cancel ${fail}`),
    });
    await expect(
      client.transaction({}, async () => (await a(false), await a(true))),
    ).rejects.toBeInstanceOf(Soft);
    expect(log).toEqual(['cancel false']);
    log.length = 0;
    await expect(
      client.transaction({ noRollbackFor: [Soft] }, async () => (await a(false), await a(true))),
    ).rejects.toBeInstanceOf(Soft);
    expect(log).toEqual(['confirm false']);
    const statuses = [...tc.sessions.values()].map((s) => s.branches.map((b) => b.status));
    expect(statuses).toEqual([
      ['PhaseTwo_Rollbacked', 'PhaseOne_Failed'],
      ['PhaseTwo_Committed', 'PhaseOne_Failed'],
    ]);
  });

  it('Saga: forward actions; on rollback compensations newest first; commit calls nothing', async () => {
    const { tc, client } = setup();
    const log: string[] = [];
    const step = (name: string) =>
      client.saga.register({
        name,
        action: (n: number) => void log.push(`${name}(${n})`),
        compensate: (n: number) => void log.push(`undo ${name}(${n})`),
      });
    const s1 = step('s1');
    const s2 = step('s2');
    await client.transaction({}, async () => (await s1(1), await s2(2)));
    expect(log).toEqual(['s1(1)', 's2(2)']);
    expect([...tc.sessions.values()][0]!.status).toBe('Committed');
    log.length = 0;
    await expect(
      client.transaction(
        {},
        async () => (await s1(3), await s2(4), Promise.reject(new Error('later step failed'))),
      ),
    ).rejects.toThrow('later');
    expect(log).toEqual(['s1(3)', 's2(4)', 'undo s2(4)', 'undo s1(3)']);
  });

  it('an action outside any transaction is refused before anything is registered', async () => {
    const { tc, client } = setup();
    const a = client.tcc.register({ name: 'a', try: () => 1, confirm: () => {}, cancel: () => {} });
    await expect(a()).rejects.toBeInstanceOf(NoGlobalTransactionError);
    expect(tc.calls).toEqual([]);
  });

  it('arguments that are not JSON, or too large, are refused before registering', async () => {
    const { tc, client } = setup();
    const a = client.tcc.register({
      name: 'a',
      try: (_: unknown) => 1,
      confirm: () => {},
      cancel: () => {},
    });
    await expect(client.transaction({}, () => a({ n: 1n }))).rejects.toThrow(/JSON/);
    await expect(client.transaction({}, () => a('x'.repeat(20_000)))).rejects.toThrow(/bytes/);
    expect(tc.calls.filter((c) => c === 'branchRegister')).toEqual([]);
  });

  it('registration is validated: duplicate ids, bad names, missing steps', () => {
    const { client } = setup();
    client.tcc.register({ name: 'dup', try: () => 1, confirm: () => {}, cancel: () => {} });
    expect(() =>
      client.tcc.register({ name: 'dup', try: () => 1, confirm: () => {}, cancel: () => {} }),
    ).toThrow(/already registered/);
    expect(() =>
      client.tcc.register({ name: 'has space', try: () => 1, confirm: () => {}, cancel: () => {} }),
    ).toThrow(/resource id/);
    expect(() =>
      client.tcc.register({ name: 'x', try: () => 1, confirm: () => {} } as never),
    ).toThrow(/cancel/);
    expect(() =>
      client.saga.register({ name: 'y', resourceId: 'z', action: () => 1, compensate: () => {} }),
    ).toThrow(/name or resourceId/);
  });
});

describe('phase-two dispatch', () => {
  it('maps results: done → PhaseTwo_*, UnretryableBranchError → *_Unretryable, anything else → *_Retryable', async () => {
    const { tc, client } = setup();
    let mode: 'ok' | 'retry' | 'never' = 'ok';
    const act = (): void => {
      if (mode === 'retry') throw new Error('db down');
      if (mode === 'never') throw new UnretryableBranchError('gone for good');
    };
    client.tcc.register({ name: 'r', try: () => 1, confirm: act, cancel: act });
    const req = (kind: 'commit' | 'rollback') => ({
      kind,
      xid: '127.0.0.1:8091:1',
      branchId: '5',
      branchType: 'TCC' as const,
      resourceId: 'r',
      applicationData: '{"concord":1}',
      applicationId: 'unit',
    });
    expect(await tc.deliver(req('commit'))).toBe('PhaseTwo_Committed');
    expect(await tc.deliver(req('rollback'))).toBe('PhaseTwo_Rollbacked');
    mode = 'retry';
    expect(await tc.deliver(req('commit'))).toBe('PhaseTwo_CommitFailed_Retryable');
    expect(await tc.deliver(req('rollback'))).toBe('PhaseTwo_RollbackFailed_Retryable');
    mode = 'never';
    expect(await tc.deliver(req('commit'))).toBe('PhaseTwo_CommitFailed_Unretryable');
    // Application data that is not ours can never be phase-two'd: unretryable.
    mode = 'ok';
    expect(await tc.deliver({ ...req('commit'), applicationData: 'not json' })).toBe(
      'PhaseTwo_CommitFailed_Unretryable',
    );
    // A branch type that does not match the resource: retryable (a deploy mix-up, fixed by
    // redeploying).
    expect(await tc.deliver({ ...req('commit'), branchType: 'SAGA' })).toBe(
      'PhaseTwo_CommitFailed_Retryable',
    );
  });

  it('a confirm that fails twice then succeeds: Retrying, Retrying, Committed', async () => {
    const { tc, client } = setup();
    let calls = 0;
    const a = client.tcc.register({
      name: 'flaky',
      try: () => 1,
      confirm: () => {
        calls++;
        if (calls <= 2) throw new Error(`transient ${calls}`);
      },
      cancel: () => {},
    });
    let xid = '';
    await client.transaction({}, () => ((xid = currentXid()!), a()));
    expect(tc.sessions.get(xid)?.status).toBe('CommitRetrying');
    expect(await tc.redeliver(xid)).toBe('CommitRetrying');
    expect(await tc.redeliver(xid)).toBe('Committed');
    expect(calls).toBe(3);
  });

  it('overlapping deliveries of one branch share a single run', async () => {
    const { tc, client } = setup();
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    client.tcc.register({
      name: 'slow',
      try: () => 1,
      confirm: async () => (runs++, await gate),
      cancel: () => {},
    });
    const req = {
      kind: 'commit' as const,
      xid: '127.0.0.1:8091:1',
      branchId: '9',
      branchType: 'TCC' as const,
      resourceId: 'slow',
      applicationData: '{"concord":1}',
      applicationId: 'unit',
    };
    const first = tc.deliver(req);
    const second = tc.deliver(req);
    release();
    expect(await Promise.all([first, second])).toEqual([
      'PhaseTwo_Committed',
      'PhaseTwo_Committed',
    ]);
    expect(runs).toBe(1);
  });

  it('an unknown resource is answered retryable (another replica, or this one after a deploy, will serve it)', async () => {
    const { tc, client } = setup();
    client.tcc.register({ name: 'known', try: () => 1, confirm: () => {}, cancel: () => {} });
    const handler = tc.channels[0]!.handler;
    expect(
      await handler({
        kind: 'rollback',
        xid: '127.0.0.1:8091:1',
        branchId: '1',
        branchType: 'TCC',
        resourceId: 'unknown',
        applicationData: '',
        applicationId: 'unit',
      }),
    ).toBe('PhaseTwo_RollbackFailed_Retryable');
  });

  it('with a fence, phase two runs inside it and a refused try throws BranchRefusedError', async () => {
    const { tc, client } = setup();
    const ran: string[] = [];
    // A scripted fence: the try is refused as hanging; confirm/cancel run.
    const fence = {
      async run(key: FenceKey, fn: (tx: string) => Promise<unknown>) {
        ran.push(key.op);
        if (key.op === 'try') return 'hangingRefused' as const;
        await fn(`tx-${key.op}`);
        return 'executed' as const;
      },
    } as unknown as Fence<string>;
    const txs: string[] = [];
    const a = client.tcc.register({
      name: 'fenced',
      fence,
      try: () => 1,
      confirm: () => {},
      cancel: (_args, ctx) => void txs.push(ctx.tx),
    });
    const err = await client.transaction({}, () => a()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BranchRefusedError);
    expect(ran).toEqual(['try', 'cancel']);
    expect(txs).toEqual(['tx-cancel']);
    expect([...tc.sessions.values()][0]!.status).toBe('Rollbacked');
  });
});

describe('close', () => {
  it('waits for a transaction in flight, then refuses new ones and closes the TC port', async () => {
    const { tc, client } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const running = client.transaction({}, () => gate.then(() => 'done'));
    await new Promise((r) => setTimeout(r, 10));
    const closed = client.close();
    await expect(client.transaction({}, () => 1)).rejects.toBeInstanceOf(ClientClosedError);
    expect(tc.closed).toBe(false);
    release();
    await expect(running).resolves.toBe('done');
    await closed;
    expect(tc.closed).toBe(true);
    expect([...tc.sessions.values()][0]!.status).toBe('Committed');
  });
});
