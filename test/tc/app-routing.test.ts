/**
 * Phase two reaches only the branch's own application, on a real three-node cluster (three
 * `concord start` processes) with real RM processes.
 *
 * Two applications, team-a and team-b, both name a TCC action `debit` and a Saga action
 * `ship`. team-a's RM runs its phase one and is SIGKILLed; team-b's RMs (an SDK client, and
 * a raw RM channel that records every request it is sent) stay up. The decided phase two
 * must never reach team-b: the branch waits — shown in GetSession / ListSessions, counted
 * in the leader's metrics, logged once per backoff step — and once a new team-a process
 * comes up, it runs exactly once there. The same with the leader SIGKILLed between phase
 * one and the decision (the new leader's hub has never seen team-a's RM), and for a Saga
 * compensation.
 */
import type { Xid } from '../../src/shared/ids.ts';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TcClient } from '../../src/client/tc-client.ts';
import { createClient, currentXid, xidFetch, type ConcordClient } from '../../src/index.ts';
import {
  REPO_ROOT,
  TestCluster,
  TestRm,
  waitFor,
  waitForStatus,
  type TestNode,
} from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';
import { killAll, killHard, startFixture, type FixtureProcess } from '../support/process.ts';

const FIXTURE = resolve(REPO_ROOT, 'test/tc/fixtures/app-rm.ts');
/** How long phase two gets to finish once the right RM is back (it is driven at once). */
const PHASE_TWO_WAIT_MS = 30_000;

interface StepEvent {
  op: string;
  xid: string;
  branchId: string;
  app: string;
}

/** A service process of one application (test/tc/fixtures/app-rm.ts). */
class AppProcess {
  private constructor(
    readonly app: string,
    private readonly fixture: FixtureProcess,
  ) {}

  static async start(
    cluster: TestCluster,
    app: string,
  ): Promise<{ proc: AppProcess; port: number }> {
    const fixture = await startFixture(FIXTURE, {
      env: { CONCORD_SERVERS: cluster.seeds().join(','), APP_ID: app },
      readyTimeoutMs: 30_000,
      label: `the ${app} process`,
      children,
    });
    return { proc: new AppProcess(app, fixture), port: fixture.port };
  }

  kill(): Promise<void> {
    return killHard(this.fixture.child);
  }

  /** The steps it has run so far: its complete `EVENT <json>` lines on stdout. */
  get events(): StepEvent[] {
    const lines = this.fixture.stdout().split('\n');
    lines.pop(); // the line still being written, or ''
    return lines
      .filter((line) => line.startsWith('EVENT '))
      .map((line) => JSON.parse(line.slice(6)) as StepEvent);
  }

  ops(xid: string): string[] {
    return this.events.filter((e) => e.xid === xid).map((e) => e.op);
  }
}

const children = new Set<ChildProcess>();
let cluster: TestCluster;
let ops: TcClient;
/** team-a's TM: begins and decides; it serves no resource. */
let tm: ConcordClient;
/** team-b's service: the same action names, its own RM. */
let teamB: ConcordClient;
let teamBRuns: StepEvent[];
/** A raw team-b RM channel serving the same names: records every request it is sent. */
let teamBWire: TestRm;

beforeAll(async () => {
  cluster = await TestCluster.start('app-routing', { tickMs: 50 });
  ops = cluster.client();
  tm = createClient({ servers: cluster.seeds(), applicationId: 'team-a', closeTimeoutMs: 1_000 });
  teamB = createClient({
    servers: cluster.seeds(),
    applicationId: 'team-b',
    closeTimeoutMs: 1_000,
  });
  teamBRuns = [];
  const record = (op: string) => (_: unknown, ctx: { xid: string; branchId: string }) =>
    void teamBRuns.push({ op, xid: ctx.xid, branchId: ctx.branchId, app: 'team-b' });
  const debitB = teamB.tcc.register({
    name: 'debit',
    try: record('try'),
    confirm: record('confirm'),
    cancel: record('cancel'),
  });
  teamB.saga.register({ name: 'ship', action: record('action'), compensate: record('compensate') });
  teamBWire = new TestRm(ops, ['debit', 'ship'], { applicationId: 'team-b' });
  await teamBWire.connect();
  // team-b's own transaction: its branch comes back to team-b (and its RM channel is up).
  let own: Xid | undefined;
  await teamB.transaction({}, async () => {
    own = currentXid()!;
    await debitB({});
  });
  await waitForStatus(ops, own!, (s) => s === 'Committed');
  expect(teamBRuns.map((e) => e.op)).toEqual(['try', 'confirm']);
  teamBRuns.length = 0;
}, 120_000);

afterAll(async () => {
  killAll(children);
  await Promise.allSettled([tm?.close(), teamB?.close(), teamBWire?.disconnect()]);
  await ops?.close();
  await cluster?.stop();
}, 60_000);

/** Begins a team-a transaction and runs team-a's phase one in `proc`; answers xid and branch. */
async function phaseOne(
  proc: { port: number },
  path: '/tcc' | '/saga',
): Promise<{ tx: Awaited<ReturnType<ConcordClient['begin']>>; branchId: string }> {
  const tx = await tm.begin({ name: `routing${path}`, timeoutMs: 120_000 });
  const res = await tx.run(() =>
    xidFetch(`http://127.0.0.1:${proc.port}${path}`, { method: 'POST' }),
  );
  expect(res.status).toBe(200);
  const body = (await res.json()) as { xid: string; branchId: string };
  expect(body.xid).toBe(tx.xid);
  return { tx, branchId: body.branchId };
}

/** The leader's value of a metric without labels other than the node's defaults. */
async function gauge(node: TestNode, name: string): Promise<number> {
  const res = await fetchNode(`${nodeBase(node.http)}/metrics`, {
    signal: AbortSignal.timeout(2_000),
  });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name}{`));
  if (line === undefined) throw new Error(`no ${name} in the metrics of ${node.id}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The leader's log lines about this transaction's wait (JSON lines of pino). */
function waitLogs(node: TestNode, xid: string): { attempt: number; reason: string }[] {
  return readFileSync(node.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes(xid) && l.includes('phase two waits'))
    .map((l) => JSON.parse(l) as { attempt: number; reason: string; xid: string })
    .filter((l) => l.xid === xid);
}

/**
 * The branch is decided but team-a has no RM: it waits for one (session listing, metric,
 * one log line per backoff step) and team-b is never sent it. Waits for `steps` backoff
 * steps to pass first, so a misrouting would have had its chances.
 */
async function expectWaiting(xid: Xid, branchId: string, resourceId: string, steps: number) {
  const leader = await cluster.leader();
  const session = await waitFor(
    `${xid} to have waited ${steps} backoff steps`,
    async () => {
      const s = await ops.getSession(xid);
      return s.retry.attempts >= steps ? s : undefined;
    },
    30_000,
    100,
  );
  expect(session.rmWaits).toEqual([
    { branchId, applicationId: 'team-a', resourceId, since: expect.any(Number) },
  ]);
  expect(session.branches.map((b) => [b.branchId, b.applicationId])).toEqual([
    [branchId, 'team-a'],
  ]);
  const listed = (await ops.listSessions({ pageSize: 500 })).sessions.find((s) => s.xid === xid);
  expect(listed?.rmWaits.map((w) => [w.branchId, w.applicationId])).toEqual([[branchId, 'team-a']]);
  expect(await gauge(leader, 'concord_tc_phase_two_waiting_for_rm')).toBeGreaterThanOrEqual(1);
  // One line per backoff step, naming the application and the resource it waits for.
  const logged = await waitFor(
    'a wait log line for every backoff step so far',
    () => {
      const lines = waitLogs(leader, xid);
      return lines.length >= session.retry.attempts ? lines : undefined;
    },
    10_000,
    100,
  );
  const attempts = logged.map((l) => l.attempt);
  expect(new Set(attempts).size).toBe(attempts.length);
  for (const l of logged)
    expect(l.reason).toContain(`application "team-a" serving resource "${resourceId}"`);
  // Never the other application, on the wire or in its actions.
  expect(teamBWire.callsFor(xid)).toEqual([]);
  expect(teamBRuns.filter((e) => e.xid === xid)).toEqual([]);
}

async function expectNoWaitsLeft(): Promise<void> {
  const leader = await cluster.leader();
  await waitFor(
    'the wait gauge to drop to 0',
    async () =>
      (await gauge(leader, 'concord_tc_phase_two_waiting_for_rm')) === 0 ? true : undefined,
    10_000,
    100,
  );
}

describe('phase two reaches only the branch’s own application', () => {
  it('TCC: team-a’s RM dies after its try; the confirm never reaches team-b and runs once when team-a is back', async () => {
    const first = await AppProcess.start(cluster, 'team-a');
    const { tx, branchId } = await phaseOne(first, '/tcc');
    expect(first.proc.ops(tx.xid)).toEqual(['try']);
    await first.proc.kill();

    expect(['Committing', 'CommitRetrying']).toContain(await tx.commit());
    await expectWaiting(tx.xid, branchId, 'debit', 3);

    const second = await AppProcess.start(cluster, 'team-a');
    await waitForStatus(ops, tx.xid, (s) => s === 'Committed', PHASE_TWO_WAIT_MS);
    expect(second.proc.events.filter((e) => e.xid === tx.xid)).toEqual([
      { op: 'confirm', xid: tx.xid, branchId, app: 'team-a' },
    ]);
    expect(first.proc.ops(tx.xid)).toEqual(['try']);
    expect(teamBWire.callsFor(tx.xid)).toEqual([]);
    expect(teamBRuns.filter((e) => e.xid === tx.xid)).toEqual([]);
    await expectNoWaitsLeft();
    await second.proc.kill();
  }, 120_000);

  it('TCC with the leader SIGKILLed between the try and the commit: the new leader never saw team-a’s RM and still routes inside team-a', async () => {
    const first = await AppProcess.start(cluster, 'team-a');
    const { tx, branchId } = await phaseOne(first, '/tcc');
    await first.proc.kill();
    const oldLeader = await cluster.leader();
    await cluster.kill(oldLeader);
    const newLeader = await cluster.leader(30_000);
    expect(newLeader.id).not.toBe(oldLeader.id);
    // team-b's RMs are on the new leader before the decision (its hub knows only them).
    await waitFor(
      'team-b’s RM channels on the new leader',
      async () =>
        teamBWire.channel?.registeredWith === newLeader.id &&
        (await gauge(newLeader, 'concord_tc_rm_channels')) >= 2
          ? true
          : undefined,
      30_000,
      100,
    );

    expect(['Committing', 'CommitRetrying']).toContain(await tx.commit());
    await expectWaiting(tx.xid, branchId, 'debit', 2);

    const second = await AppProcess.start(cluster, 'team-a');
    await waitForStatus(ops, tx.xid, (s) => s === 'Committed', PHASE_TWO_WAIT_MS);
    expect(second.proc.events.filter((e) => e.xid === tx.xid)).toEqual([
      { op: 'confirm', xid: tx.xid, branchId, app: 'team-a' },
    ]);
    expect(teamBWire.callsFor(tx.xid)).toEqual([]);
    expect(teamBRuns.filter((e) => e.xid === tx.xid)).toEqual([]);
    await expectNoWaitsLeft();
    await second.proc.kill();
    cluster.restart(oldLeader);
  }, 150_000);

  it('Saga: team-a’s RM dies after its action; the compensation never reaches team-b and runs once when team-a is back', async () => {
    const first = await AppProcess.start(cluster, 'team-a');
    const { tx, branchId } = await phaseOne(first, '/saga');
    expect(first.proc.ops(tx.xid)).toEqual(['action']);
    await first.proc.kill();

    expect(['Rollbacking', 'RollbackRetrying']).toContain(await tx.rollback());
    await expectWaiting(tx.xid, branchId, 'ship', 2);

    const second = await AppProcess.start(cluster, 'team-a');
    await waitForStatus(ops, tx.xid, (s) => s === 'Rollbacked', PHASE_TWO_WAIT_MS);
    expect(second.proc.events.filter((e) => e.xid === tx.xid)).toEqual([
      { op: 'compensate', xid: tx.xid, branchId, app: 'team-a' },
    ]);
    expect(teamBWire.callsFor(tx.xid)).toEqual([]);
    expect(teamBRuns.filter((e) => e.xid === tx.xid)).toEqual([]);
    await expectNoWaitsLeft();
    await second.proc.kill();
  }, 120_000);
});
