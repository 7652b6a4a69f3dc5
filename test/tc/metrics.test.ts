/**
 * Transaction metrics on /metrics, on a real three-node cluster (real node processes, the
 * real TC client and an RM over the RM channel): TM calls, branch phase-two outcomes,
 * retries, ends and lock conflicts move on the leader; live transactions by status and
 * locked rows show on every node (each counts from its applied state); Node's process
 * metrics keep their standard names. Plus the stuck gauge's rule on a real state machine.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { TcClient } from '../../src/client/tc-client.ts';
import {
  CoordinatorStateMachine,
  type RetryScheduledCommand,
} from '../../src/coordinator/index.ts';
import { TcMetrics, summarize } from '../../src/server/tc/tc-metrics.ts';
import {
  GlobalStatus,
  T0,
  applyOk,
  beginCmd,
  changeCmd,
  registerCmd,
} from '../coordinator/commands-fixtures.ts';
import {
  REPO_ROOT,
  TestCluster,
  TestRm,
  waitFor,
  waitForStatus,
  type TestNode,
  startClusterWithRm,
  stopClusterWithRm,
} from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const APP = { transactionServiceGroup: 'default' };

let cluster: TestCluster;
let tc: TcClient;
let rm: TestRm;

async function scrape(n: TestNode): Promise<string> {
  const res = await fetchNode(`${nodeBase(n.http)}/metrics`, {
    signal: AbortSignal.timeout(5_000),
  });
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one series: `name` with every label of `labels` (others may follow), or NaN. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return NaN;
}

beforeAll(async () => {
  ({ cluster, tc, rm } = await startClusterWithRm(
    'metrics',
    { tickMs: 30 },
    ['inventory', 'orders'],
    { clientId: 'rm-metrics', applicationId: 'shop' },
  ));
}, 90_000);

afterAll(() => stopClusterWithRm({ cluster, tc, rm }), 60_000);

describe('transaction metrics', () => {
  it('a committed transaction with a retried branch, a conflict and a rollback move the counters and histograms', async () => {
    const leader = await cluster.leader();
    const register = (xid: Parameters<TcClient['commit']>[0], resourceId: string, lockKey = '') =>
      tc.branchRegister({
        xid,
        branchType: lockKey ? 'AT' : 'TCC',
        resourceId,
        lockKey,
        clientId: rm.clientId,
        applicationId: rm.applicationId,
      });

    // 1: committed; its inventory branch answers retryable once, then commits.
    const xid = await tc.begin({ ...APP, applicationId: 'shop', name: 'order', timeoutMs: 60_000 });
    const branch = await register(xid, 'inventory');
    await register(xid, 'orders');
    rm.behave = (call, attempt) =>
      call.branchId === branch && attempt === 1
        ? 'PhaseTwo_CommitFailed_Retryable'
        : call.kind === 'commit'
          ? 'PhaseTwo_Committed'
          : 'PhaseTwo_Rollbacked';
    await tc.commit(xid);
    await waitForStatus(tc, xid, (s) => s === 'Committed' || s === 'UnknownXid');

    // 2: holds a row lock; 3 conflicts on it, then both roll back.
    const holder = await tc.begin({
      ...APP,
      applicationId: 'shop',
      name: 'hold',
      timeoutMs: 60_000,
    });
    await register(holder, 'orders', 'orders:1');
    const other = await tc.begin({
      ...APP,
      applicationId: 'shop',
      name: 'other',
      timeoutMs: 60_000,
    });
    await expect(register(other, 'orders', 'orders:1')).rejects.toThrow();
    expect(await tc.lockQuery({ xid: other, resourceId: 'orders', lockKey: 'orders:1' })).toBe(
      false,
    );

    // Live now: two Begin transactions and one locked row — on every node, from its applied state.
    for (const n of cluster.nodes)
      await waitFor(`${n.id} to count the live transactions`, async () => {
        const text = await scrape(n);
        return value(text, 'concord_tc_global_sessions', { status: 'Begin' }) === 2 &&
          value(text, 'concord_tc_locked_rows') === 1
          ? true
          : undefined;
      });

    await tc.rollback(other);
    await tc.rollback(holder);
    await waitForStatus(tc, holder, (s) => s === 'Rollbacked' || s === 'UnknownXid');

    const text = await waitFor('the leader to count both ends', async () => {
      const t = await scrape(leader);
      return value(t, 'concord_tc_global_ended_total', { status: 'Rollbacked' }) >= 2
        ? t
        : undefined;
    });
    expect(value(text, 'concord_tc_global_begin_total', { result: 'OK' })).toBe(3);
    expect(value(text, 'concord_tc_global_begin_duration_seconds_count')).toBe(3);
    expect(value(text, 'concord_tc_global_commit_total')).toBe(1);
    expect(value(text, 'concord_tc_global_commit_duration_seconds_count')).toBe(1);
    expect(value(text, 'concord_tc_global_rollback_duration_seconds_count')).toBe(2);
    expect(value(text, 'concord_tc_global_ended_total', { status: 'Committed' })).toBe(1);
    expect(value(text, 'concord_tc_phase_two_retries_total')).toBeGreaterThanOrEqual(1);
    expect(
      value(text, 'concord_tc_branch_phase_two_total', {
        action: 'commit',
        branch_type: 'TCC',
        resource: 'inventory',
        outcome: 'retryable',
      }),
    ).toBe(1);
    expect(
      value(text, 'concord_tc_branch_phase_two_total', {
        action: 'commit',
        branch_type: 'TCC',
        resource: 'inventory',
        outcome: 'done',
      }),
    ).toBe(1);
    expect(
      value(text, 'concord_tc_branch_phase_two_total', {
        action: 'rollback',
        branch_type: 'AT',
        resource: 'orders',
        outcome: 'done',
      }),
    ).toBe(1);
    expect(
      value(text, 'concord_tc_branch_phase_two_duration_seconds_count', { action: 'commit' }),
    ).toBeGreaterThanOrEqual(3);
    expect(value(text, 'concord_tc_lock_conflicts_total', { source: 'register' })).toBe(1);
    expect(value(text, 'concord_tc_lock_conflicts_total', { source: 'query' })).toBe(1);
    expect(value(text, 'concord_tc_global_stuck')).toBe(0);
    expect(value(text, 'concord_tc_stuck_alarm_seconds')).toBe(600);
    expect(value(text, 'concord_tc_locked_rows')).toBe(0);
    // The Raft latency histograms are fed.
    expect(value(text, 'concord_raft_persist_duration_seconds_count')).toBeGreaterThan(0);
    // Node's process metrics under their standard names.
    expect(value(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds\{/m);
    expect(text).not.toMatch(/^concord_(process|nodejs)_/m);

    // Every metric the shipped dashboard and the operations guide name is served.
    const declared = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const named = (file: string) =>
      new Set(
        [
          ...readFileSync(join(REPO_ROOT, file), 'utf8').matchAll(
            /\b((?:concord|process|nodejs)_[a-z0-9_]+)/g,
          ),
        ]
          .map((m) => m[1]!.replace(/_(bucket|count|sum)$/, ''))
          .filter((name) => !name.endsWith('_')),
      );
    const dashboard = named('docs/grafana-dashboard.json');
    expect(dashboard.size).toBeGreaterThan(20);
    expect([...dashboard].filter((name) => !declared.has(name))).toEqual([]);
    const guide = [...named('docs/operations.md')].filter((n) => n.startsWith('concord_tc_'));
    expect(guide.filter((name) => !declared.has(name))).toEqual([]);

    // The nodes' log lines carry each binding once (`node` was written twice by the driver).
    for (const n of cluster.nodes) {
      const lines = readFileSync(n.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'));
      expect(lines.length).toBeGreaterThan(0);
      const twice = lines.filter((l) =>
        ['"node":', '"component":', '"name":', '"pid":', '"msg":'].some(
          (key) => l.split(key).length > 2,
        ),
      );
      expect(twice.slice(0, 3)).toEqual([]);
    }
  });
});

describe('the stuck gauge', () => {
  it("counts the coordinator's stuck transactions (a retry scheduled past the alarm time), from a real state machine", async () => {
    const machine = new CoordinatorStateMachine();
    for (const n of [1, 2, 3]) applyOk(machine, beginCmd(n));
    const xid = (n: number) => `10.0.0.1:8091:${n}`;
    applyOk(machine, registerCmd(xid(1), '11', ''));
    applyOk(machine, registerCmd(xid(2), '21', 'orders:7'));
    // 1 and 2 retry phase two with the alarm time at T0+10s; 3 stays Begin.
    for (const n of [1, 2]) {
      applyOk(machine, changeCmd(xid(n), GlobalStatus.Begin, GlobalStatus.Committing));
      applyOk(machine, changeCmd(xid(n), GlobalStatus.Committing, GlobalStatus.CommitRetrying));
      applyOk(machine, retryCmd(xid(n), 1, T0 + 1_000, T0 + 10_000));
    }
    const before = summarize(machine);
    expect(before.stuck).toBe(0);
    expect(before.byStatus.get(GlobalStatus.CommitRetrying)).toBe(2);
    expect(before.byStatus.get(GlobalStatus.Begin)).toBe(1);
    expect(before.lockedRows).toBe(1);
    // 1's next retry is scheduled past its alarm time: stuck.
    applyOk(machine, retryCmd(xid(1), 2, T0 + 14_000, T0 + 10_000));
    expect(summarize(machine).stuck).toBe(1);

    // Through the registry, as a scrape reads it.
    const registry = new Registry();
    new TcMetrics(registry, { stuckAfterMs: 10_000, liveSummary: () => summarize(machine) });
    const text = await registry.metrics();
    expect(value(text, 'concord_tc_global_stuck')).toBe(1);
    expect(value(text, 'concord_tc_stuck_alarm_seconds')).toBe(10);
    expect(value(text, 'concord_tc_global_sessions', { status: 'CommitRetrying' })).toBe(2);
    expect(value(text, 'concord_tc_global_sessions', { status: 'Committing' })).toBe(0);
    expect(value(text, 'concord_tc_locked_rows')).toBe(1);
  });
});

function retryCmd(
  xid: string,
  attempt: number,
  nextRetryAt: number,
  retryDeadline: number,
): RetryScheduledCommand {
  return { kind: 'RetryScheduled', xid, attempt, nextRetryAt, retryDeadline, term: 1 };
}
