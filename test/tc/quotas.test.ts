/**
 * Per-application quotas on the TC port (issue 14 item 4, docs/security.md): a Begin beyond
 * its application's maximum timeout, an RM channel beyond its application's quota, and a
 * unary call beyond a connection's in-flight bound are refused with a typed, definite
 * CapacityError, and nothing is proposed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TcClient } from '../../src/client/tc-client.ts';
import { rawCall, rawClient, TestCluster, TestRm, type RawClient } from './helpers.ts';

let cluster: TestCluster;
let tc: TcClient;
const rms: TestRm[] = [];
const raws: RawClient[] = [];

beforeAll(async () => {
  cluster = await TestCluster.start('quotas', {
    tickMs: 30,
    quotas: {
      maxTransactionTimeoutMs: 120_000,
      maxRmChannelsPerApplication: 2,
      maxInflightUnaryPerConnection: 4,
      applications: { batch: { maxTransactionTimeoutMs: 600_000, maxRmChannels: 1 } },
    },
  });
  tc = cluster.client();
}, 90_000);

afterAll(async () => {
  for (const r of rms) await r.disconnect();
  for (const r of raws) r.close();
  await tc?.close();
  await cluster?.stop();
}, 60_000);

describe('quotas', () => {
  it("a Begin beyond its application's maximum timeout is refused, typed, and proposes nothing", async () => {
    const leader = await cluster.leader();
    const before = await cluster.metadata(leader);
    const err = await tc
      .begin({
        applicationId: 'shop',
        transactionServiceGroup: 'default',
        name: 'long',
        timeoutMs: 120_001,
      })
      .catch((e: Error) => e);
    expect(err).toMatchObject({ name: 'CapacityError', code: 'CAPACITY' });
    expect((await cluster.metadata(leader)).lastIndex).toBe(before.lastIndex);
    // Within the default, and an application with a larger maximum of its own.
    await tc.begin({
      applicationId: 'shop',
      transactionServiceGroup: 'default',
      timeoutMs: 120_000,
    });
    await tc.begin({
      applicationId: 'batch',
      transactionServiceGroup: 'default',
      timeoutMs: 600_000,
    });
  });

  it("RM channels beyond an application's quota are refused; other applications are not affected", async () => {
    const open = async (app: string, id: string) => {
      const rm = new TestRm(tc, ['r1'], { clientId: id, applicationId: app });
      rms.push(rm);
      await rm.connect(5_000);
      return rm;
    };
    await open('shop', 'shop-1');
    await open('shop', 'shop-2');
    await expect(open('shop', 'shop-3')).rejects.toMatchObject({ name: 'CapacityError' });
    await open('batch', 'batch-1');
    await expect(open('batch', 'batch-2')).rejects.toMatchObject({ name: 'CapacityError' });
    await open('other', 'other-1');
  });

  it('unary calls in flight on one connection are bounded', async () => {
    const leader = await cluster.leader();
    const raw = rawClient(leader.tc);
    raws.push(raw);
    const xid = await tc.begin({
      applicationId: 'shop',
      transactionServiceGroup: 'default',
      timeoutMs: 60_000,
    });
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => rawCall(raw, 'GetStatus', { xid })),
    );
    const codes = answers.map((a) => a.response?.error?.code ?? a.response?.resultCode);
    expect(codes).toContain('ERROR_CODE_CAPACITY');
    expect(codes.filter((c) => c === 'RESULT_CODE_OK').length).toBeGreaterThanOrEqual(4);
  });
});
