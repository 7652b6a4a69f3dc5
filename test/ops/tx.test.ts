/**
 * `concord tx` against a real three-node cluster (three `concord start` processes): a test
 * RM whose commits fail leaves transactions retrying; the CLI (a real child process) lists
 * them with each filter, shows one in full, refuses without a token or a confirmation,
 * stops and resolves one (audited on the node and printed), retries another; the
 * read-only HTTP routes refuse bad queries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TcClient } from '../../src/client/tc-client.ts';
import { TestCluster, TestRm, waitForStatus, type TestNode } from '../tc/helpers.ts';
import { http, runCli } from './helpers.ts';
import { credentialFiles } from '../../src/server/security/pki-dir.ts';
import { testPkiDir } from '../support/tls.ts';
import { nodeBase } from '../support/node-http.ts';

const TOKEN = 'tc-test-token-0123456789';
const APP = { transactionServiceGroup: 'default' };

let cluster: TestCluster;
let tc: TcClient;
let rm: TestRm;
let retrying: string; // CommitRetrying, its RM keeps failing
let retrying2: string; // another one, for retry
let open: string; // Begin, of another application

/** The run's pki (test/support/tls.ts): its admin.pem holds the operator role. */
const PKI = testPkiDir();

const addr = (n: TestNode) => `127.0.0.1:${n.http}`;

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return runCli(args, { env: { CONCORD_HTTP_AUTH_TOKEN: '', ...env }, timeoutMs: 60_000 });
}

async function commitFailing(name: string, lockKey: string): Promise<string> {
  const xid = await tc.begin({ ...APP, applicationId: 'shop', name, timeoutMs: 600_000 });
  await tc.branchRegister({
    xid,
    branchType: 'TCC',
    resourceId: 'stock',
    lockKey,
    clientId: rm.clientId,
    applicationId: 'shop',
  });
  expect(await tc.commit(xid)).toBe('CommitRetrying');
  return xid;
}

beforeAll(async () => {
  cluster = await TestCluster.start('tx-cli', { tickMs: 50 });
  tc = cluster.client();
  rm = new TestRm(tc, ['stock'], { clientId: 'rm-failing', applicationId: 'shop' });
  rm.behave = (call) =>
    call.kind === 'commit' ? 'PhaseTwo_CommitFailed_Retryable' : 'PhaseTwo_Rollbacked';
  await rm.connect();
  retrying = await commitFailing('buy', 'stock_tbl:1,2');
  retrying2 = await commitFailing('buy-again', 'stock_tbl:7');
  open = await tc.begin({ ...APP, applicationId: 'billing', name: 'bill', timeoutMs: 600_000 });
}, 120_000);

afterAll(async () => {
  await rm?.disconnect();
  await tc?.close();
  await cluster?.stop();
}, 60_000);

describe('concord tx list', () => {
  it('lists live transactions through a follower, with every filter', async () => {
    const leader = await cluster.leader();
    const follower = cluster.followers(leader)[0]!;
    const all = await cli(['tx', 'list', '--server', addr(follower), '--token', TOKEN]);
    expect(all.code, all.out).toBe(0);
    expect(all.out).toContain('is not the leader');
    for (const xid of [retrying, retrying2, open]) expect(all.out).toContain(xid);
    expect(all.out).toMatch(/XID\s+STATUS\s+APPLICATION/);

    const byStatus = await cli(
      ['tx', 'list', '-s', addr(leader), '--status', 'CommitRetrying', '--json'],
      { CONCORD_HTTP_AUTH_TOKEN: TOKEN },
    );
    expect(byStatus.code, byStatus.out).toBe(0);
    const listed = JSON.parse(byStatus.out) as { sessions: Array<{ xid: string }> };
    expect(listed.sessions.map((s) => s.xid).sort()).toEqual([retrying, retrying2].sort());

    const byApp = await cli(['tx', 'list', '-s', addr(leader), '-t', TOKEN, '--app', 'billing']);
    expect(byApp.code, byApp.out).toBe(0);
    expect(byApp.out).toContain(open);
    expect(byApp.out).not.toContain(retrying);

    const old = await cli(['tx', 'list', '-s', addr(leader), '-t', TOKEN, '--older-than', '1h']);
    expect(old.code, old.out).toBe(0);
    expect(old.out).toContain('No transaction matches.');
  });

  it('--stuck lists only transactions retrying longer than the threshold', async () => {
    const leader = await cluster.leader();
    // Under the default threshold (5 min) nothing has been retrying long enough.
    const none = await cli(['tx', 'list', '-s', addr(leader), '-t', TOKEN, '--stuck']);
    expect(none.code, none.out).toBe(0);
    expect(none.out).toContain('No transaction matches.');
    await sleep(1_200);
    const stuck = await cli([
      'tx',
      'list',
      '-s',
      addr(leader),
      '-t',
      TOKEN,
      '--stuck',
      '--stuck-after',
      '1s',
      '--json',
    ]);
    expect(stuck.code, stuck.out).toBe(0);
    const body = JSON.parse(stuck.out) as {
      sessions: Array<{ xid: string; stuck: boolean }>;
      stuckAfterMs: number;
    };
    expect(body.stuckAfterMs).toBe(1_000);
    expect(body.sessions.map((s) => s.xid).sort()).toEqual([retrying, retrying2].sort());
    expect(body.sessions.every((s) => s.stuck)).toBe(true);
  });

  it('needs the token, and refuses bad flags before asking the node', async () => {
    const leader = await cluster.leader();
    const noToken = await cli(['tx', 'list', '-s', addr(leader)]);
    expect(noToken.code).toBe(2);
    expect(noToken.out).toContain('a token is required');
    const wrong = await cli(['tx', 'list', '-s', addr(leader), '-t', 'wrong-token-0123456789']);
    expect(wrong.code).toBe(1);
    const badStatus = await cli([
      'tx',
      'list',
      '-s',
      addr(leader),
      '-t',
      TOKEN,
      '--status',
      'Nope',
    ]);
    expect(badStatus.code).toBe(2);
    expect(badStatus.out).toContain('is not a global status');
    const badAge = await cli(['tx', 'list', '-s', addr(leader), '-t', TOKEN, '--older-than', '5']);
    expect(badAge.code).toBe(2);
  });
});

describe('GET /tx/v1/sessions and /tx/v1/session', () => {
  it('answer 401 without the token and 400 to a bad query; a follower answers 421', async () => {
    const leader = await cluster.leader();
    const base = nodeBase(leader.http);
    expect((await http('GET', `${base}/tx/v1/sessions`)).status).toBe(401);
    expect((await http('GET', `${base}/tx/v1/session?xid=${retrying}`)).status).toBe(401);
    for (const q of [
      'status=Bogus',
      'stuck=maybe',
      'olderThanMs=-1',
      'pageSize=0',
      'pageSize=100000',
      'typo=1',
      'status=Begin&status=Begin',
      'pageToken=%%%',
    ]) {
      const r = await http('GET', `${base}/tx/v1/sessions?${q}`, { token: TOKEN });
      expect([r.status, q]).toEqual([400, q]);
      expect(r.body.error.code).toBe('BAD_REQUEST');
    }
    const badXid = await http('GET', `${base}/tx/v1/session?xid=nope`, { token: TOKEN });
    expect(badXid.status).toBe(400);
    const unknown = await http('GET', `${base}/tx/v1/session?xid=127.0.0.1:1:1`, {
      token: TOKEN,
    });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'UNKNOWN_XID']);
    const follower = cluster.followers(leader)[0]!;
    const r = await http('GET', `${nodeBase(follower.http)}/tx/v1/sessions`, { token: TOKEN });
    expect(r.status).toBe(421);
    expect(r.body.leader.nodeId).toBe(leader.id);
    // Pages: one at a time, all of them, each xid once.
    const seen: string[] = [];
    let token = '';
    for (let i = 0; i < 10; i++) {
      const page = await http(
        'GET',
        `${base}/tx/v1/sessions?pageSize=1${token ? `&pageToken=${token}` : ''}`,
        { token: TOKEN },
      );
      expect(page.status).toBe(200);
      seen.push(...page.body.sessions.map((s: { xid: string }) => s.xid));
      if (page.body.nextPageToken === null) break;
      token = page.body.nextPageToken;
    }
    expect(seen.sort()).toEqual([retrying, retrying2, open].sort());
  });
});

describe('concord tx show', () => {
  it('shows branches, locked rows and the retry state', async () => {
    const leader = await cluster.leader();
    const text = await cli(['tx', 'show', retrying, '-s', addr(leader), '-t', TOKEN]);
    expect(text.code, text.out).toBe(0);
    expect(text.out).toContain('CommitRetrying');
    expect(text.out).toContain('stock_tbl^^^1');
    expect(text.out).toMatch(/retries: \d+ failed pass/);
    const json = await cli(['tx', 'show', retrying, '-s', addr(leader), '-t', TOKEN, '--json']);
    expect(json.code, json.out).toBe(0);
    const s = JSON.parse(json.out);
    expect(s.live).toBe(true);
    expect(s.status).toBe('CommitRetrying');
    expect(s.applicationId).toBe('shop');
    expect(s.retry.attempts).toBeGreaterThanOrEqual(1);
    expect(s.retry.retryingSince).toBeGreaterThan(0);
    expect(s.branches).toHaveLength(1);
    expect(s.branches[0].resourceId).toBe('stock');
    expect(s.branches[0].status).toBe('PhaseTwo_CommitFailed_Retryable');
    expect(s.branches[0].lockedRowCount).toBe(2);
    expect(s.lockedRows).toBe(2);
  });
});

describe('concord tx stop | resolve | retry', () => {
  it('asks first: without --yes and without a terminal nothing is done', async () => {
    const leader = await cluster.leader();
    const r = await cli(['tx', 'resolve', retrying, '-s', addr(leader)]);
    expect(r.code).toBe(2);
    expect(r.out).toContain('pass --yes');
    expect(r.out).not.toContain('audit:');
    expect(await tc.getStatus(retrying as never)).toBe('CommitRetrying');
  });

  it('resolve is refused while retries run; stop then resolve ends it, audited on both sides', async () => {
    const leader = await cluster.leader();
    const early = await cli(['tx', 'resolve', retrying, '-s', addr(leader), '--yes']);
    expect(early.code).toBe(1);
    expect(early.out).toContain('ILLEGAL_STATUS');
    expect(await tc.getStatus(retrying as never)).toBe('CommitRetrying');

    const stop = await cli([
      'tx',
      'stop',
      retrying,
      '-s',
      addr(leader),
      '--yes',
      '--operator',
      'alice',
    ]);
    expect(stop.code, stop.out).toBe(0);
    expect(stop.out).toMatch(new RegExp(`audit: \\S+Z alice stop ${retrying} → ok`));
    expect(await tc.getStatus(retrying as never)).toBe('StopCommitOrCommitRetry');

    const resolve = await cli([
      'tx',
      'resolve',
      retrying,
      '-s',
      addr(leader),
      '--yes',
      '--operator',
      'alice',
    ]);
    expect(resolve.code, resolve.out).toBe(0);
    expect(resolve.out).toContain(`alice resolve ${retrying} → ok, ended CommitFailed`);
    // Its locks are released.
    expect(await tc.lockQuery({ resourceId: 'stock', lockKey: 'stock_tbl:1,2' })).toBe(true);

    const shown = await cli(['tx', 'show', retrying, '-s', addr(leader), '-t', TOKEN]);
    expect(shown.code, shown.out).toBe(0);
    expect(shown.out).toContain('has ended: CommitFailed');
    expect(shown.out).toContain('resolved by an operator: alice');

    // The node's audit lines: who, what, when, outcome.
    const audits = readFileSync(leader.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"audit":true'))
      .map((l) => JSON.parse(l));
    const mine = audits.filter((a) => a.xid === retrying);
    expect(mine.map((a) => [a.action, a.operator, a.outcome])).toEqual([
      ['markResolved', expect.any(String), 'ERROR_CODE_ILLEGAL_STATUS'],
      ['stopRetry', 'alice', 'OK'],
      ['markResolved', 'alice', 'OK'],
    ]);
    for (const a of mine) {
      expect(a.level).toBe(30);
      expect(Date.parse(a.at)).toBeGreaterThan(Date.now() - 120_000);
      expect(a.peer).toMatch(/127\.0\.0\.1|::1|localhost/);
    }
  });

  it('the actions present the admin credential of --pki; an application credential is refused', async () => {
    const leader = await cluster.leader();
    // No credential from the environment: only the flag's.
    const noEnv = { CONCORD_TLS_CA: '', CONCORD_TLS_CERT: '', CONCORD_TLS_KEY: '' };
    const r = await cli(['tx', 'retry', retrying2, '-s', addr(leader), '-y', '--pki', PKI], noEnv);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`retry ${retrying2} → ok`);

    const dev = credentialFiles(PKI, 'client-dev');
    const refused = await cli(['tx', 'stop', retrying2, '-s', addr(leader), '-y'], {
      CONCORD_TLS_CA: dev.ca,
      CONCORD_TLS_CERT: dev.cert,
      CONCORD_TLS_KEY: dev.key,
    });
    expect(refused.code, refused.out).toBe(1);
    expect(refused.out).toMatch(/belongs to application shop, not to application dev/);
    expect(await tc.getStatus(retrying2 as never)).toBe('CommitRetrying');
  });

  it('retry runs a pass now; stop and resume switch the retries off and on', async () => {
    const leader = await cluster.leader();
    const before = rm.callsFor(retrying2).length;
    const retry = await cli(['tx', 'retry', retrying2, '-s', addr(leader), '-y']);
    expect(retry.code, retry.out).toBe(0);
    expect(retry.out).toContain(`retry ${retrying2} → ok, status CommitRetrying`);
    expect(rm.callsFor(retrying2).length).toBeGreaterThan(before);

    expect((await cli(['tx', 'stop', retrying2, '-s', addr(leader), '-y'])).code).toBe(0);
    expect(await tc.getStatus(retrying2 as never)).toBe('StopCommitOrCommitRetry');
    rm.behave = null; // the RM works again
    const resume = await cli(['tx', 'resume', retrying2, '-s', addr(leader), '-y']);
    expect(resume.code, resume.out).toBe(0);
    expect(resume.out).toContain(`resume ${retrying2} → ok, resumed, status CommitRetrying`);
    await waitForStatus(tc, retrying2 as never, (s) => s === 'Committed' || s === 'UnknownXid');
  });

  it('resume takes a CommitFailed transaction back to phase two: only its unfinished confirm is sent again', async () => {
    const leader = await cluster.leader();
    const xid = await tc.begin({ ...APP, applicationId: 'shop', name: 'fail', timeoutMs: 600_000 });
    const branch = (resourceId: string) =>
      tc.branchRegister({
        xid,
        branchType: 'TCC',
        resourceId,
        clientId: rm.clientId,
        applicationId: 'shop',
      });
    const done = await branch('stock');
    const broken = await branch('stock');
    let fixed = false;
    rm.behave = (call) =>
      call.kind !== 'commit'
        ? 'PhaseTwo_Rollbacked'
        : call.branchId === broken && !fixed
          ? 'PhaseTwo_CommitFailed_Unretryable'
          : 'PhaseTwo_Committed';
    expect(await tc.commit(xid)).toBe('CommitFailed');

    fixed = true;
    const r = await cli(['tx', 'resume', xid, '-s', addr(leader), '-y', '--force']);
    expect(r.code, r.out).toBe(0);
    // --force warns first; before the retry horizon the TC ignores it.
    expect(r.out).toContain('FORCE: if its retry horizon passed');
    expect(r.out).toContain(`resume ${xid} → ok, resumed, status Committing`);
    expect(await waitForStatus(tc, xid as never, (s) => s === 'Committed')).toBe('Committed');
    const confirms = rm.callsFor(xid).map((c) => c.branchId);
    expect(confirms.filter((b) => b === done)).toHaveLength(1);
    expect(confirms.filter((b) => b === broken)).toHaveLength(2);
  });
});
