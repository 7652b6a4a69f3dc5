/**
 * The live-transaction limit on a real three-node cluster (issue 19's bug): a Begin beyond
 * `limits.maxLiveTransactions` is a definite, typed refusal (CapacityError), answered fast,
 * with nothing proposed — never an "outcome unknown" after a 30 s retry budget. Room comes
 * back as transactions end. The limit shows on /metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CapacityError, OutcomeUnknownError, type TcClient } from '../../src/client/tc-client.ts';
import type { Xid } from '../../src/shared/ids.ts';
import { TestCluster, waitFor } from './helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const LIMIT = 3;
const APP = { applicationId: 'shop', transactionServiceGroup: 'default', timeoutMs: 120_000 };

let cluster: TestCluster;
let tc: TcClient;

beforeAll(async () => {
  cluster = await TestCluster.start('capacity', {
    tickMs: 50,
    limits: { maxLiveTransactions: LIMIT },
  });
  tc = cluster.client();
}, 90_000);

afterAll(async () => {
  await tc?.close();
  await cluster?.stop();
}, 60_000);

async function metric(port: number, name: string): Promise<number | null> {
  const res = await fetchNode(`${nodeBase(port)}/metrics`, {
    signal: AbortSignal.timeout(2_000),
  });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name}{`));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('the live-transaction limit', () => {
  it('refuses a Begin beyond it at once, definitely, proposing nothing; room comes back as transactions end', async ({
    onTestFailed,
  }) => {
    // The nodes' own account, should this fail (their logs go with the cluster's tmp dir).
    onTestFailed(() => {
      for (const n of cluster.nodes) console.error(`--- ${n.id}\n${cluster.tail(n, 30)}`);
    });
    const open: Xid[] = [];
    for (let i = 0; i < LIMIT; i++) open.push(await tc.begin(APP));
    const leader = await cluster.leader();
    const before = await cluster.metadata(leader);

    const started = Date.now();
    const refused = await tc.begin(APP).then(
      () => null,
      (err: unknown) => err,
    );
    const tookMs = Date.now() - started;
    expect(refused).toBeInstanceOf(CapacityError);
    expect(refused).not.toBeInstanceOf(OutcomeUnknownError);
    expect((refused as CapacityError).code).toBe('CAPACITY');
    expect((refused as Error).message).toMatch(/3 global transactions are live, the limit/);
    // Not the client's 30 s retry budget: one answer (a load-proof bound, far below it).
    expect(tookMs).toBeLessThan(10_000);
    // Nothing was proposed: the leader's log did not grow.
    const after = await cluster.metadata(leader);
    expect(after.lastIndex).toBe(before.lastIndex);

    expect(await metric(leader.http, 'concord_tc_live_transactions_limit')).toBe(LIMIT);
    expect(await metric(leader.http, 'concord_tc_live_transactions')).toBe(LIMIT);

    // One ends: a Begin is admitted again.
    expect(await tc.commit(open.shift()!)).toBe('Committed');
    const again = await waitFor(
      'a Begin admitted once a transaction ended',
      () =>
        tc
          .begin(APP)
          .catch((err: unknown) =>
            err instanceof CapacityError ? undefined : Promise.reject(err),
          ),
      10_000,
    );
    open.push(again);
    for (const xid of open) await tc.rollback(xid);
  }, 60_000);
});
