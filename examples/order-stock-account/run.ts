/**
 * The order → stock + account example, end to end (`npm run example`):
 *
 * 1. starts the stock, account and order services as child processes (each with its own
 *    PostgreSQL schema and Concord client) against the running cluster — `npm start`'s on
 *    127.0.0.1:7091..7093, or CONCORD_SERVERS;
 * 2. places an order that succeeds (alice buys 2 × P-1 at 50) and one that the account
 *    service refuses (bob, balance 30, buys 1 × P-1) and is rolled back;
 * 3. prints stock and balances before and after each order, and checks that the first
 *    order moved exactly its amounts and the failed one left no trace (stock, balances,
 *    reservations, frozen amounts, the order row);
 * 4. calls the stock service without a transaction header: its joinTransaction refuses
 *    (400) and nothing is reserved. Exits 1 if anything does not match.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SERVERS } from './shared.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** How long a service may take to start (connect to the database and the cluster), ms. */
const START_TIMEOUT_MS = 30_000;
/** How long phase two may take to settle after an order answered, ms. */
const SETTLE_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 10_000;

const servers = process.env.CONCORD_SERVERS ?? DEFAULT_SERVERS;
/** `npm run example -- at`: stock and account as AT services (plain SQL, undo logs). */
const AT = process.argv.slice(2).includes('at');
const children: ChildProcess[] = [];

function startService(file: string, env: Record<string, string>): Promise<string> {
  const child = spawn(process.execPath, ['--import', 'tsx', `${HERE}${file}`], {
    env: { ...process.env, CONCORD_SERVERS: servers, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`${file} did not start within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /READY (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`http://127.0.0.1:${m[1]}`);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new Error(
          `${file} exited with code ${code} before it was ready (is the cluster up at ${servers}, and PostgreSQL reachable?)`,
        ),
      );
    });
  });
}

async function stopServices(): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
          child.once('exit', () => (clearTimeout(timer), resolve()));
          child.kill('SIGTERM');
        }),
    ),
  );
}

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.json() };
}

async function postJson(url: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  return { status: res.status, body: await res.json() };
}

interface Snapshot {
  stock: { available: number; reserved: number };
  alice: { balance: number; frozen: number };
  bob: { balance: number; frozen: number };
}

async function snapshot(stockUrl: string, accountUrl: string): Promise<Snapshot> {
  const [stock, alice, bob] = await Promise.all([
    getJson(`${stockUrl}/stock/P-1`),
    getJson(`${accountUrl}/accounts/alice`),
    getJson(`${accountUrl}/accounts/bob`),
  ]);
  return {
    stock: { available: stock.body.available, reserved: stock.body.reserved },
    alice: { balance: alice.body.balance, frozen: alice.body.frozen },
    bob: { balance: bob.body.balance, frozen: bob.body.frozen },
  };
}

/**
 * Phase two runs after the commit/rollback decision: wait until nothing is reserved or frozen any
 * more.
 */
async function settled(stockUrl: string, accountUrl: string): Promise<Snapshot> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const s = await snapshot(stockUrl, accountUrl);
    if (
      (s.stock.reserved === 0 && s.alice.frozen === 0 && s.bob.frozen === 0) ||
      Date.now() > deadline
    )
      return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const row = (label: string, s: Snapshot) =>
  `  ${label.padEnd(18)} P-1 available ${String(s.stock.available).padStart(4)} (reserved ${s.stock.reserved})   ` +
  `alice ${String(s.alice.balance).padStart(5)} (frozen ${s.alice.frozen})   bob ${String(s.bob.balance).padStart(4)} (frozen ${s.bob.frozen})`;

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

async function main(): Promise<boolean> {
  const mode = AT ? 'AT' : 'TCC';
  console.log(
    `Concord example: order → stock (${mode}) + account (${mode}), TC cluster at ${servers}`,
  );
  const [stockUrl, accountUrl] = await Promise.all([
    startService(AT ? 'stock-at.ts' : 'stock.ts', {}),
    startService(AT ? 'account-at.ts' : 'account.ts', {}),
  ]);
  const orderUrl = await startService('order.ts', { STOCK_URL: stockUrl, ACCOUNT_URL: accountUrl });
  console.log(`services: order ${orderUrl}, stock ${stockUrl}, account ${accountUrl}\n`);

  const checks: [string, boolean][] = [];
  const before = await snapshot(stockUrl, accountUrl);
  console.log(row('before', before));

  // 1. alice buys 2 × P-1 at 50: every branch confirmed.
  const ok = await postJson(`${orderUrl}/orders`, { userId: 'alice', productId: 'P-1', count: 2 });
  console.log(`\norder 1: alice buys 2 × P-1 → HTTP ${ok.status} ${JSON.stringify(ok.body)}`);
  const afterOk = await settled(stockUrl, accountUrl);
  console.log(row('after order 1', afterOk));
  const okOrder = ok.status === 201 ? await getJson(`${orderUrl}/orders/${ok.body.orderId}`) : null;
  checks.push(['order 1 committed (201)', ok.status === 201]);
  checks.push(['order 1 row is CREATED', okOrder?.body.status === 'CREATED']);
  checks.push([
    'order 1 took exactly 2 × P-1 and 100 from alice',
    same(afterOk, {
      stock: { available: before.stock.available - 2, reserved: 0 },
      alice: { balance: before.alice.balance - 100, frozen: 0 },
      bob: before.bob,
    }),
  ]);

  // 2. bob (balance 30) buys 1 × P-1 at 50: the account service refuses, everything rolls back.
  const bad = await postJson(`${orderUrl}/orders`, { userId: 'bob', productId: 'P-1', count: 1 });
  console.log(`\norder 2: bob buys 1 × P-1 → HTTP ${bad.status} ${JSON.stringify(bad.body)}`);
  const afterBad = await settled(stockUrl, accountUrl);
  console.log(row('after order 2', afterBad));
  const badOrder = bad.body.orderId
    ? await getJson(`${orderUrl}/orders/${bad.body.orderId}`)
    : null;
  checks.push([
    'order 2 refused (409, insufficient balance)',
    bad.status === 409 && /insufficient balance/.test(String(bad.body.error)),
  ]);
  checks.push(['order 2 left no order row', badOrder?.status === 404]);
  checks.push(['order 2 left stock and balances exactly as before it', same(afterBad, afterOk)]);

  // 3. A callee reached without the caller's transaction (no TX_XID): joinTransaction refuses
  // (400) and nothing is reserved — a callee never runs its work in a transaction of its own.
  const stray = await postJson(`${stockUrl}/stock/reserve`, { productId: 'P-1', count: 1 });
  console.log(`\nno TX_XID: stock/reserve → HTTP ${stray.status} ${JSON.stringify(stray.body)}`);
  const afterStray = await snapshot(stockUrl, accountUrl);
  checks.push(['a call without TX_XID is refused (400)', stray.status === 400]);
  checks.push(['and reserves nothing', same(afterStray, afterBad)]);

  console.log('');
  for (const [what, passed] of checks) console.log(`  ${passed ? 'ok  ' : 'FAIL'} ${what}`);
  const allPassed = checks.every(([, passed]) => passed);
  console.log(allPassed ? '\nall checks passed' : '\nSOME CHECKS FAILED');
  return allPassed;
}

let exitCode = 1;
try {
  exitCode = (await main()) ? 0 : 1;
} catch (err) {
  console.error(`example failed: ${(err as Error).message}`);
} finally {
  await stopServices();
}
process.exit(exitCode);
