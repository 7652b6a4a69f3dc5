/**
 * The web console (issue 17) in a real browser — Debian's chromium driven by playwright-core —
 * against a real three-node cluster of `concord start` processes (TLS on every port, the
 * console over HTTPS; the suite's PKI): sign-in refused and accepted (the cookie Secure); a
 * transaction stuck on a failing RM shown stuck, its row lock shown with its holder, and
 * retry-now after the RM heals finishing it with the page updating; a viewer sees no actions
 * and is refused one; killing the leader with the page open shows the new leader within
 * seconds, and an action (leadership transfer) still works through the follower the page is
 * on.
 *
 * CONSOLE_SCREENSHOTS=<dir> also saves a screenshot of each view there
 * (`npm run console:screenshots` writes docs/console/).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TcClient } from '../../src/client/tc-client.ts';
import { nodeBase } from '../support/node-http.ts';
import { failingUntilHealed, startClusterWithRm, stopClusterWithRm } from '../tc/helpers.ts';
import type { TestCluster, TestNode, TestRm } from '../tc/helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const ADMIN_TOKEN = 'tc-test-token-0123456789';
const VIEWER_TOKEN = 'console-viewer-token-0123456789';
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? null;
/** Live transactions of the load test. */
const LIVE = 10_000;
/** UI waits: generous, the box is loaded. */
const UI_MS = 20_000;

let cluster: TestCluster;
let ops: TcClient;
let rm: TestRm;
let failing = true;
let browser: Browser;
/** Script errors in any page: none is expected. */
const pageErrors: string[] = [];
/** The follower the page is opened on (it must survive the leader's death). */
let home: TestNode;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)`);
  ({
    cluster,
    tc: ops,
    rm,
  } = await startClusterWithRm(
    'console',
    {
      tickMs: 50,
      viewerToken: VIEWER_TOKEN,
      // One failure every 0.5, 1, 2, 4, 8 s...: stuck after the second, then long waits, so
      // the operator's retry-now (not a scheduled retry) is what finishes it.
      phaseTwo: { stuckAfterMs: 1_000, retryBaseMs: 500, retryMaxBackoffMs: 60_000 },
    },
    ['stock'],
    { applicationId: 'shop', behave: failingUntilHealed(() => failing) },
  ));
  home = cluster.followers(await cluster.leader())[0]!;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A fresh profile: playwright makes a new temporary --user-data-dir per launch.
    ],
  });
}, 90_000);

afterAll(async () => {
  expect(pageErrors).toEqual([]);
  await browser?.close();
  await stopClusterWithRm({ cluster, tc: ops, rm });
});

function consoleUrl(n: TestNode, hash = ''): string {
  return `${nodeBase(n.http)}/console/${hash}`;
}

/**
 * A browser context on the nodes' HTTPS port: their certificates are of the suite's own CA,
 * which this chromium does not know (a user would trust data/pki/ca.pem once).
 */
function newContext(o: { viewport?: { width: number; height: number } } = {}) {
  return browser.newContext({ ...o, ignoreHTTPSErrors: true });
}

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS === null) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** A new browser context (its own cookies) signed in with `token`. */
async function signedIn(token: string, name: string): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(consoleUrl(home));
  await page.fill('input[name=name]', name);
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.getByTestId('role').waitFor({ timeout: UI_MS });
  return { ctx, page };
}

/**
 * A transaction whose AT branch locks stock.orders:42 and whose rollback the RM keeps failing
 * (a dirty AT rollback: the row stays locked until it is undone).
 */
async function stuckTransaction(pk: number): Promise<string> {
  const xid = await ops.begin({
    applicationId: 'shop',
    transactionServiceGroup: 'default',
    timeoutMs: 60_000,
    name: 'place-order',
  });
  await ops.branchRegister({
    xid,
    branchType: 'AT',
    resourceId: 'stock',
    lockKey: `orders:${pk}`,
    applicationData: `{"order":${pk}}`,
    clientId: rm.clientId,
    applicationId: 'shop',
  });
  expect(await ops.rollback(xid)).toBe('RollbackRetrying');
  return xid;
}

describe('the web console in a real browser', () => {
  it('refuses a bad password and accepts a good one', async () => {
    const ctx = await newContext();
    const page = await ctx.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(consoleUrl(home));
    // Without credentials: the sign-in page and nothing else.
    await page.locator('input[name=token]').waitFor({ timeout: UI_MS });
    expect(await page.getByTestId('members').count()).toBe(0);
    const api = await page.evaluate(async () => (await fetch('/console/api/cluster')).status);
    expect(api).toBe(401);
    await shot(page, 'sign-in');
    await page.fill('input[name=token]', 'not-the-token-at-all');
    await page.click('button[type=submit]');
    await expect
      .poll(() => page.getByTestId('signin-error').textContent(), { timeout: UI_MS })
      .toContain('refused');
    await page.fill('input[name=token]', ADMIN_TOKEN);
    await page.click('button[type=submit]');
    await page.getByTestId('role').waitFor({ timeout: UI_MS });
    expect(await page.getByTestId('role').textContent()).toBe('admin');
    const cookies = await ctx.cookies();
    const session = cookies.find((c) => c.name === 'concord_console');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    // Served over HTTPS: the cookie never travels on plain HTTP.
    expect(page.url().startsWith('https://')).toBe(true);
    expect(session?.secure).toBe(true);
    // A change without the session's CSRF token is refused, signed in or not.
    const forged = await page.evaluate(async () => {
      const res = await fetch('/console/api/action', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'transferLeader', nodeId: 'node1' }),
      });
      return { status: res.status, body: await res.text() };
    });
    expect(forged.status).toBe(403);
    expect(forged.body).toContain('CSRF');
    // Hostile input gets a typed error and changes nothing.
    const bad = await page.evaluate(async () => {
      const me = (await (await fetch('/console/api/me')).json()) as { csrf: string };
      const post = (body: string) =>
        fetch('/console/api/action', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-concord-csrf': me.csrf },
          body,
        }).then(
          async (r) =>
            `${r.status} ${((await r.json()) as { error: { code: string } }).error.code}`,
        );
      return [
        await fetch('/console/api/transactions?bogus=1').then((r) => r.status),
        await fetch('/console/api/transactions?pageSize=100000').then((r) => r.status),
        await fetch('/console/api/transaction?xid=%00').then((r) => r.status),
        await post('{not json'),
        await post(JSON.stringify({ action: 'dropEverything' })),
        await post(JSON.stringify({ action: 'markResolved', xid: 'a:1:2', confirmXid: 'a:1:3' })),
        await post('x'.repeat(100_000)),
      ];
    });
    expect(bad).toEqual([
      400,
      400,
      400,
      '400 BAD_REQUEST',
      '400 BAD_REQUEST',
      '400 BAD_REQUEST',
      '413 PAYLOAD_TOO_LARGE',
    ]);
    await ctx.close();
  }, 60_000);

  it('shows a stuck transaction and its row lock; retry-now after the RM heals ends it', async () => {
    const xid = await stuckTransaction(42);
    const { ctx, page } = await signedIn(ADMIN_TOKEN, 'alice');
    await page.goto(consoleUrl(home, '#/transactions'));
    const row = page.getByTestId(`tx-${xid}`);
    await expect
      .poll(() => row.textContent(), { timeout: UI_MS, interval: 250 })
      .toContain('stuck');
    expect(await row.getAttribute('class')).toContain('stuck');
    await shot(page, 'transactions');

    // The lock view: who holds stock.orders:42.
    await page.goto(consoleUrl(home, '#/locks?table=orders'));
    const lock = page.getByTestId('lock-orders-42');
    await expect.poll(() => lock.textContent(), { timeout: UI_MS }).toContain(xid);
    expect(await lock.textContent()).toContain('stock');
    await shot(page, 'locks');

    // One transaction: timeline with the failures, branches with application data (admin).
    await page.goto(consoleUrl(home, `#/tx/${encodeURIComponent(xid)}`));
    await page.getByTestId('tx-stuck').waitFor({ timeout: UI_MS });
    const timeline = page.getByTestId('timeline');
    await expect
      .poll(() => timeline.textContent(), { timeout: UI_MS })
      .toContain('decision: rollback');
    expect(await timeline.textContent()).toContain('PhaseTwo_RollbackFailed_Retryable');
    expect(await page.getByTestId('appdata').textContent()).toContain('"order":42');
    await shot(page, 'transaction');

    // Stop retrying, then resume: each confirmed, each shown.
    await page.getByTestId('stop').click();
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('tx-status').textContent(), { timeout: UI_MS })
      .toBe('StopRollbackOrRollbackRetry');
    await page.getByTestId('resume').click();
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('tx-status').textContent(), { timeout: UI_MS })
      .toBe('RollbackRetrying');

    // The RM heals; the operator retries now (the next scheduled retry is seconds away).
    failing = false;
    await page.getByTestId('retry-now').click();
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('action-result').textContent(), { timeout: UI_MS })
      .toContain('Rollbacked');
    await expect
      .poll(() => page.getByTestId('tx-status').textContent(), { timeout: UI_MS })
      .toBe('Rollbacked');
    const leader = await cluster.leader();
    const audit = cluster
      .tail(leader, 400)
      .split('\n')
      .filter((l) => l.includes('"audit":true') && l.includes(xid));
    expect(audit.join('\n')).toContain('"operator":"console:alice"');
    expect(audit.join('\n')).toContain('"globalStatus":"Rollbacked"');
    await ctx.close();
  }, 90_000);

  it('lets a viewer look but not act', async () => {
    failing = true;
    const xid = await stuckTransaction(43);
    const { ctx, page } = await signedIn(VIEWER_TOKEN, 'victor');
    expect(await page.getByTestId('role').textContent()).toBe('viewer');
    await page.goto(consoleUrl(home, `#/tx/${encodeURIComponent(xid)}`));
    await page.getByTestId('tx-status').waitFor({ timeout: UI_MS });
    expect(await page.getByTestId('retry-now').count()).toBe(0);
    expect(await page.getByTestId('appdata').count()).toBe(0);
    // Asking anyway (with the session's own CSRF token) is refused.
    const refused = await page.evaluate(async (x) => {
      const me = (await (await fetch('/console/api/me')).json()) as { csrf: string };
      const res = await fetch('/console/api/action', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-concord-csrf': me.csrf },
        body: JSON.stringify({ action: 'retryNow', xid: x }),
      });
      return { status: res.status, body: await res.text() };
    }, xid);
    expect(refused.status).toBe(403);
    expect(refused.body).toContain('FORBIDDEN');
    failing = false;
    await ctx.close();
  }, 60_000);

  it('loads its pages in under a second with 10,000 live transactions, stuck ones first', async () => {
    failing = true;
    const stuck = await stuckTransaction(44);
    const began = Date.now();
    for (let i = 0; i < LIVE; i += 500)
      await Promise.all(
        Array.from({ length: Math.min(500, LIVE - i) }, (_, j) =>
          ops.begin({
            applicationId: 'bulk',
            transactionServiceGroup: 'default',
            timeoutMs: 600_000,
            name: `bulk-${i + j}`,
          }),
        ),
      );
    process.stdout.write(`console: ${LIVE} transactions begun in ${Date.now() - began} ms\n`);
    const { ctx, page } = await signedIn(ADMIN_TOKEN, 'alice');
    await page.goto(consoleUrl(home, '#/transactions?xid=nothing-matches'));
    await page.getByTestId('transactions').waitFor({ timeout: UI_MS });
    // Measured from the follower the page is on (each read is forwarded to the leader).
    const timings: Record<string, number> = {};
    for (const [view, ready] of [
      ['#/transactions', `tx-${stuck}`],
      ['#/locks', 'lock-orders-44'],
      [`#/tx/${encodeURIComponent(stuck)}`, 'timeline'],
    ] as const) {
      const t0 = Date.now();
      await page.goto(consoleUrl(home, view));
      await page.getByTestId(ready).waitFor({ timeout: UI_MS });
      timings[view.split('/')[1]!] = Date.now() - t0;
    }
    process.stdout.write(`console: page loads with ${LIVE} live: ${JSON.stringify(timings)}\n`);
    // The goal (under a second) is a figure, printed above and in docs/console.md; the test
    // bounds only a collapse (an unpaged list or a scan per row), so a loaded CI box passes.
    for (const ms of Object.values(timings)) expect(ms).toBeLessThan(5_000);
    // The first row of the first page is the stuck one, and the page counts every live one.
    await page.goto(consoleUrl(home, '#/transactions'));
    const first = page.locator('[data-testid=transactions] tbody tr').first();
    await expect
      .poll(() => first.getAttribute('data-testid'), { timeout: UI_MS })
      .toBe(`tx-${stuck}`);
    expect(await page.locator('main').textContent()).toMatch(/1000[0-9] live/);
    await shot(page, 'transactions-10k');
    // Stopped and marked resolved by hand (the xid typed to confirm): it ends, its lock goes.
    await page.goto(consoleUrl(home, `#/tx/${encodeURIComponent(stuck)}`));
    await page.getByTestId('stop').click();
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('tx-status').textContent(), { timeout: UI_MS })
      .toBe('StopRollbackOrRollbackRetry');
    await page.getByTestId('resolve').click();
    expect(await page.getByTestId('confirm').isDisabled()).toBe(true);
    await page.getByTestId('confirm-typed').fill(stuck);
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('tx-status').textContent(), { timeout: UI_MS })
      .toBe('RollbackFailed');
    expect(await page.locator('main').textContent()).toContain('resolved by console:alice');
    failing = false;
    await ctx.close();
  }, 120_000);

  it('follows a leader change with the page open, and actions still work', async () => {
    const { ctx, page } = await signedIn(ADMIN_TOKEN, 'alice');
    const old = await cluster.leader();
    await expect
      .poll(() => page.getByTestId('leader').textContent(), { timeout: UI_MS })
      .toBe(old.id);
    await shot(page, 'cluster');
    const killedAt = Date.now();
    await cluster.kill(old);
    await expect
      .poll(() => page.getByTestId('leader').textContent(), { timeout: UI_MS, interval: 100 })
      .not.toMatch(new RegExp(`^(${old.id}|none.*)$`));
    const shownAfterMs = Date.now() - killedAt;
    const fresh = await cluster.leader();
    expect(await page.getByTestId('leader').textContent()).toBe(fresh.id);
    expect(await page.getByTestId('leader-changes').textContent()).toContain(fresh.id);
    // Hand leadership to the other live node, through the page on `home`.
    const target = cluster.live().find((n) => n.id !== fresh.id)!;
    await page.getByTestId('transfer-target').selectOption(target.id);
    await page.getByTestId('transfer').click();
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId('leader').textContent(), { timeout: UI_MS, interval: 100 })
      .toBe(target.id);
    expect(await page.getByTestId('transfer-result').textContent()).toContain('done');
    // Change the membership: the dead member out.
    await page.getByTestId('transfer-target').selectOption(old.id);
    await page.getByTestId('remove-member').click();
    await page.getByTestId('confirm-typed').fill(old.id);
    await page.getByTestId('confirm').click();
    await expect
      .poll(() => page.getByTestId(`member-${old.id}`).count(), { timeout: UI_MS })
      .toBe(0);
    expect(await page.getByTestId('members').locator('tbody tr').count()).toBe(2);
    process.stdout.write(`console: new leader shown ${shownAfterMs} ms after the kill\n`);
    await ctx.close();
  }, 90_000);
});
