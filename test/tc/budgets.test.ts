/**
 * Node-wide budgets and the per-application live quota on a real three-node cluster (issue
 * 14, "no global budget"): a branch registration that would take the node past its live
 * branches, locked rows or bytes of application data, and a Begin beyond its application's
 * live quota, are refused with a typed, definite CapacityError; nothing is proposed; room
 * comes back as transactions end; other applications are not affected by one's quota.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CapacityError, type TcClient } from '../../src/client/tc-client.ts';
import type { Xid } from '../../src/shared/ids.ts';
import {
  TestCluster,
  TestRm,
  waitForStatus,
  startClusterWithRm,
  stopClusterWithRm,
} from './helpers.ts';

const BUDGETS = { maxLiveBranches: 4, maxLockedRows: 6, maxApplicationDataBytes: 1_000 };
const SHOP = { applicationId: 'shop', transactionServiceGroup: 'default', timeoutMs: 120_000 };

let cluster: TestCluster;
let tc: TcClient;
/** Answers every phase two, so that a rollback ends its transaction (and frees its budget). */
let rm: TestRm;

beforeAll(async () => {
  ({ cluster, tc, rm } = await startClusterWithRm(
    'budgets',
    {
      tickMs: 30,
      limits: BUDGETS,
      quotas: { applications: { batch: { maxLiveTransactions: 2 } } },
    },
    ['jdbc:stock'],
    { clientId: 'budgets-rm', applicationId: 'shop' },
  ));
}, 90_000);

afterAll(() => stopClusterWithRm({ cluster, tc, rm }), 60_000);

function branch(xid: Xid, rows: string[], data = '') {
  return tc.branchRegister({
    xid,
    branchType: 'AT',
    resourceId: 'jdbc:stock',
    lockKey: rows.length === 0 ? '' : `stock:${rows.join(',')}`,
    applicationData: data,
    clientId: 'budgets-rm',
    applicationId: 'shop',
  });
}

/** Rolls `xid` back and waits until it has ended: what it held is free again. */
async function end(xid: Xid): Promise<void> {
  await tc.rollback(xid);
  await waitForStatus(tc, xid, (s) => s === 'Rollbacked' || s === 'Finished');
}

/** The refusal, and that the leader's log did not grow for it. */
async function refusedWithoutProposal(call: () => Promise<unknown>): Promise<CapacityError> {
  const leader = await cluster.leader();
  const before = (await cluster.metadata(leader)).lastIndex;
  const err = await call().then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CapacityError);
  expect((await cluster.metadata(leader)).lastIndex).toBe(before);
  return err as CapacityError;
}

describe('node-wide budgets', () => {
  it('locked rows: a registration that would lock past the budget is refused; room comes back', async () => {
    const a = await tc.begin(SHOP);
    await branch(a, ['1', '2', '3', '4']);
    const b = await tc.begin(SHOP);
    const err = await refusedWithoutProposal(() => branch(b, ['5', '6', '7']));
    expect(err.message).toMatch(/4 rows are locked and 3 more are asked.*limits\.maxLockedRows/);
    await branch(b, ['5', '6']); // within the budget exactly
    await end(a);
    await branch(b, ['7', '8', '9']); // a's rows are free again
    await end(b);
  }, 60_000);

  it('live branches: the branch past the budget is refused, whatever transaction asks', async () => {
    const a = await tc.begin(SHOP);
    for (let i = 0; i < 3; i++) await branch(a, []);
    const b = await tc.begin(SHOP);
    await branch(b, []);
    const err = await refusedWithoutProposal(() => branch(b, []));
    expect(err.message).toMatch(/4 branches are live.*limits\.maxLiveBranches/);
    await end(a);
    await branch(b, []);
    await end(b);
  }, 60_000);

  it('application data: registration and report are held to the byte budget (UTF-8 bytes)', async () => {
    const a = await tc.begin(SHOP);
    // 300 characters of 3 bytes each: 900 bytes.
    await branch(a, [], '€'.repeat(300));
    const err = await refusedWithoutProposal(() => branch(a, [], 'x'.repeat(101)));
    expect(err.message).toMatch(
      /900 B of application data and 101 B more.*maxApplicationDataBytes/,
    );
    const small = await branch(a, [], 'x'.repeat(100));
    await refusedWithoutProposal(() =>
      tc.branchReport({
        xid: a,
        branchId: small,
        status: 'PhaseOne_Done',
        applicationData: 'y'.repeat(200),
      }),
    );
    await end(a);
  }, 60_000);
});

describe('the per-application live quota', () => {
  it("a Begin beyond its application's quota is refused; other applications still begin", async () => {
    const batch = { ...SHOP, applicationId: 'batch' };
    const open = [await tc.begin(batch), await tc.begin(batch)];
    const err = await refusedWithoutProposal(() => tc.begin(batch));
    expect(err.message).toMatch(
      /application batch has 2 live global transactions, its quota \(2\)/,
    );
    const other = await tc.begin(SHOP);
    await tc.rollback(open.shift()!);
    open.push(await tc.begin(batch));
    for (const xid of [...open, other]) await tc.rollback(xid);
  }, 60_000);
});
