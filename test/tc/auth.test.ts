/**
 * Who may call the TC (issue 14 item 3, docs/security.md): three real node processes with
 * TLS on every port; applications authenticated by their client certificates.
 * - a caller without a certificate of the cluster's CA gets no TC method at all;
 * - another application cannot commit, roll back, report on or read a transaction, report
 *   on a branch, begin or register for an application not its own, nor take over an RM
 *   client id — and nothing is proposed for the refused calls;
 * - operator methods refuse a non-admin.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientTls } from '../../src/client/tls.ts';
import type { TcClient } from '../../src/client/tc-client.ts';
import { ensureCa } from '../../src/server/security/pki-dir.ts';
import { createCa, issueAppCertificate } from '../../src/shared/pki.ts';
import { testPkiDir } from '../support/tls.ts';
import {
  rawCall,
  rawClient,
  TestCluster,
  TestRm,
  waitForStatus,
  type RawClient,
} from './helpers.ts';

let cluster: TestCluster;
let shop: TcClient;
let thief: TcClient;
let admin: TcClient;
let shopRm: TestRm;
const raws: RawClient[] = [];
const clients: TcClient[] = [];

function appTls(app: string, ca = ensureCa(testPkiDir())): ClientTls {
  const pem = issueAppCertificate(ca, app);
  return { ca: ensureCa(testPkiDir()).cert, cert: pem.cert, key: pem.key };
}

beforeAll(async () => {
  cluster = await TestCluster.start('auth', { tickMs: 30 });
  shop = cluster.client({ tls: appTls('shop') });
  thief = cluster.client({ tls: appTls('thief'), callDeadlineMs: 5_000 });
  admin = cluster.client();
  clients.push(shop, thief, admin);
  shopRm = new TestRm(shop, ['stock'], { clientId: 'shop:rm', applicationId: 'shop' });
  await shopRm.connect();
}, 90_000);

afterAll(async () => {
  for (const r of raws) r.close();
  await shopRm?.disconnect();
  for (const c of clients) await c.close();
  await cluster?.stop();
}, 60_000);

const APP = { applicationId: 'shop', transactionServiceGroup: 'default' };

async function refused(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: Error) => e,
  );
  expect(err, 'the call was allowed').not.toBeNull();
  return err!.name;
}

describe('TC authorization', () => {
  it('every TC method refuses a caller without a certificate of the cluster CA', async () => {
    const leader = await cluster.leader();
    const stranger = createCa('Not the cluster CA');
    const strangerCert = issueAppCertificate(stranger, 'shop');
    const callers: Record<string, RawClient> = {
      plaintext: rawClient(leader.tc, {}, null),
      otherCa: rawClient(
        leader.tc,
        {},
        {
          ca: ensureCa(testPkiDir()).cert,
          cert: strangerCert.cert,
          key: strangerCert.key,
        },
      ),
    };
    raws.push(...Object.values(callers));
    const methods = [
      'Begin',
      'Commit',
      'Rollback',
      'GetStatus',
      'GlobalReport',
      'BranchRegister',
      'BranchReport',
      'LockQuery',
      'GetSession',
      'ListSessions',
      'RetryNow',
      'StopRetry',
      'ResumeRetry',
      'MarkResolved',
    ];
    for (const [who, client] of Object.entries(callers)) {
      for (const m of methods) {
        const r = await rawCall(client, m, {}, 3_000);
        expect(r.error, `${who} ${m}`).toBeDefined();
        expect(r.response).toBeUndefined();
      }
    }
  });

  it("another application cannot end, report on, read or register into an application's transaction; nothing is proposed", async () => {
    const xid = await shop.begin({ ...APP, name: 'owned', timeoutMs: 60_000 });
    const branchId = await shop.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: 'shop:rm',
      applicationId: 'shop',
      lockKey: '',
      applicationData: '{"n":1}',
    });
    const leader = await cluster.leader();
    const before = await cluster.metadata(leader);

    const names = [
      await refused(thief.commit(xid)),
      await refused(thief.rollback(xid)),
      await refused(thief.getStatus(xid)),
      await refused(thief.globalReport(xid, 'Committed')),
      await refused(thief.getSession(xid)),
      await refused(
        thief.branchReport({
          xid,
          branchId,
          status: 'PhaseOne_Failed',
          applicationData: '{"n":2}',
        }),
      ),
      await refused(thief.begin({ ...APP, name: 'impostor', timeoutMs: 60_000 })),
      await refused(
        thief.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'stock',
          clientId: 'shop:rm',
          applicationId: 'shop',
          lockKey: '',
          applicationData: '',
        }),
      ),
      // Its own application, but the shop RM's client id: phase two would go to the shop's RM.
      await refused(
        thief.branchRegister({
          xid,
          branchType: 'TCC',
          resourceId: 'stock',
          clientId: 'shop:rm',
          applicationId: 'thief',
          lockKey: '',
          applicationData: '',
        }),
      ),
    ];
    expect(new Set(names)).toEqual(new Set(['UnauthorizedError']));
    const after = await cluster.metadata(leader);
    expect(after.lastIndex, 'a refused call proposed something').toBe(before.lastIndex);

    // The owner's transaction is untouched: its branch data is its own, and it commits
    // through its own RM.
    const session = await shop.getSession(xid);
    expect(session.status).toBe('Begin');
    expect(session.branches.map((b) => b.applicationData)).toEqual(['{"n":1}']);
    expect(await shop.commit(xid)).toMatch(/Commit/);
    await waitForStatus(shop, xid, (s) => s === 'Committed' || s === 'UnknownXid');
    expect(shopRm.callsFor(xid).map((c) => c.kind)).toEqual(['commit']);
  });

  it('another application cannot take over an RM client id, nor register for another application', async () => {
    const takeover = new TestRm(thief, ['stock'], { clientId: 'shop:rm', applicationId: 'thief' });
    await expect(takeover.connect(5_000)).rejects.toThrow(
      /another principal|Unauthorized|refused/i,
    );
    await takeover.disconnect();
    const posing = new TestRm(thief, ['stock'], { clientId: 'thief:rm', applicationId: 'shop' });
    await expect(posing.connect(5_000)).rejects.toThrow(
      /belongs to application shop|Unauthorized/i,
    );
    await posing.disconnect();

    // The real RM still holds its channel and gets its phase two.
    const xid = await shop.begin({ ...APP, name: 'after-takeover', timeoutMs: 60_000 });
    await shop.branchRegister({
      xid,
      branchType: 'TCC',
      resourceId: 'stock',
      clientId: 'shop:rm',
      applicationId: 'shop',
      lockKey: '',
      applicationData: '',
    });
    await shop.rollback(xid);
    await waitForStatus(shop, xid, (s) => s === 'Rollbacked' || s === 'UnknownXid');
    expect(shopRm.callsFor(xid).map((c) => c.kind)).toEqual(['rollback']);
  });

  it('no secret reaches the logs: not the bearer token, not a private key', async () => {
    for (const n of cluster.nodes) {
      const log = readFileSync(n.logFile, 'utf8');
      expect(log.length, n.id).toBeGreaterThan(0);
      expect(log, n.id).not.toContain('tc-test-token-0123456789');
      expect(log, n.id).not.toContain('PRIVATE KEY');
    }
  });

  it('operator methods refuse a non-admin application; the admin role may call them', async () => {
    const xid = await shop.begin({ ...APP, name: 'operated', timeoutMs: 60_000 });
    const names = [
      await refused(shop.listSessions()),
      await refused(shop.retryNow(xid)),
      await refused(shop.stopRetry(xid)),
      await refused(shop.resumeRetry(xid)),
      await refused(shop.markResolved({ xid, confirmXid: xid, resolution: 'Finished' } as never)),
    ];
    expect(new Set(names)).toEqual(new Set(['UnauthorizedError']));
    const page = await admin.listSessions();
    expect(page.sessions.map((s) => s.xid)).toContain(xid);
    // The admin reads and ends any application's transaction.
    expect((await admin.getSession(xid)).applicationId).toBe('shop');
    await admin.rollback(xid);
  });
});
