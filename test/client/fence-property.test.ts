/**
 * Property: for any sequence of deliveries of a branch's operations — repeated, reordered,
 * failing, and some delivered concurrently — the real fence (PostgreSQL and MariaDB, under
 * READ COMMITTED and REPEATABLE READ) behaves like a small sequential model:
 *
 *   - each business op runs at most once, and only when it failed no earlier time it ran;
 *   - a cancel/compensate whose try/action has not run is an empty rollback, and from then on
 *     the try/action is refused (no hanging);
 *   - a confirm whose try has not run (no try row, or the row of an empty rollback) is
 *     refused with ConfirmWithoutTryError and leaves no trace;
 *   - a business failure leaves no trace (fence row and business write both rolled back);
 *   - concurrent deliveries behave as if they ran one after another in SOME order.
 *
 * The model is the specification; each concurrent group is checked against every order of
 * its deliveries, and the one that matches both the outcomes and the database is kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type pg from 'pg';
import type mysql from 'mysql2/promise';
import { connectMysql, connectPg, newBranchId, newXid, sleep, uniquePrefix } from './helpers/db.ts';
import { mysqlDriver, pgDriver, type FenceDriver } from './helpers/drivers.ts';
import {
  ConfirmWithoutTryError,
  type FenceOp,
  type FenceOutcome,
  type IsolationLevel,
} from '../../src/client/fence/index.ts';

/** fast-check runs per database. Each run is a fresh branch, so runs never interfere. */
const RUNS_PER_DATABASE = 100;
/** Concurrent deliveries in one group (connections in flight at once). */
const MAX_GROUP = 3;
const MAX_GROUPS = 7;

type Family = 'tcc' | 'saga';
const OPS: Record<Family, readonly FenceOp[]> = {
  tcc: ['try', 'confirm', 'cancel'],
  saga: ['action', 'compensate'],
};
const ORIGIN: Partial<Record<FenceOp, FenceOp>> = { cancel: 'try', compensate: 'action' };
const COMPENSATOR: Partial<Record<FenceOp, FenceOp>> = { try: 'cancel', action: 'compensate' };
/** The op that must have run before this one may: a confirm needs its try. */
const REQUIRED: Partial<Record<FenceOp, FenceOp>> = { confirm: 'try' };

interface Delivery {
  op: FenceOp;
  /** The business callback throws (after writing). */
  fails: boolean;
  /** ms the callback lingers inside the transaction, widening race windows. */
  linger: number;
}
/** error: the business callback failed. refused: ConfirmWithoutTryError. */
type Observed = FenceOutcome | 'error' | 'refused';

/**
 * The fence's state for one branch: its rows (op → reason) and the business ops that ran, in order.
 */
interface ModelState {
  rows: Record<string, string>;
  ledger: string[];
}

/** One sequential delivery against the model: the specification of the fence. */
function step(state: ModelState, d: Delivery): { state: ModelState; outcome: Observed } {
  const rows = { ...state.rows };
  const origin = ORIGIN[d.op];
  let decision: FenceOutcome;
  if (origin !== undefined) {
    if (rows[d.op] !== undefined) decision = 'duplicate';
    else if (rows[origin] === undefined) decision = 'emptyRollback';
    else decision = 'executed';
  } else if (rows[d.op] !== undefined) {
    decision = rows[d.op] === COMPENSATOR[d.op] ? 'hangingRefused' : 'duplicate';
  } else {
    const required = REQUIRED[d.op];
    if (required !== undefined && rows[required] !== required) return { state, outcome: 'refused' };
    decision = 'executed';
  }
  if (decision === 'duplicate' || decision === 'hangingRefused')
    return { state, outcome: decision };
  if (decision === 'emptyRollback') {
    rows[d.op] = d.op;
    rows[origin as FenceOp] = d.op;
    return { state: { rows, ledger: state.ledger }, outcome: 'emptyRollback' };
  }
  if (d.fails) return { state, outcome: 'error' };
  rows[d.op] = d.op;
  return { state: { rows, ledger: [...state.ledger, d.op] }, outcome: 'executed' };
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}

const sameState = (a: ModelState, b: ModelState) =>
  JSON.stringify(Object.entries(a.rows).sort()) === JSON.stringify(Object.entries(b.rows).sort()) &&
  JSON.stringify(a.ledger) === JSON.stringify(b.ledger);

const scenario = fc.constantFrom<Family>('tcc', 'saga').chain((family) =>
  fc.record({
    family: fc.constant(family),
    isolation: fc.constantFrom<IsolationLevel>('READ COMMITTED', 'REPEATABLE READ'),
    groups: fc.array(
      fc.array(
        fc.record({
          op: fc.constantFrom(...OPS[family]),
          fails: fc.integer({ min: 0, max: 4 }).map((n) => n === 0), // one delivery in five fails
          linger: fc.constantFrom(0, 0, 1, 3),
        }),
        { minLength: 1, maxLength: MAX_GROUP },
      ),
      { minLength: 1, maxLength: MAX_GROUPS },
    ),
  }),
);

async function checkScenario<Tx>(
  d: FenceDriver<Tx>,
  s: { family: Family; isolation: IsolationLevel; groups: Delivery[][] },
): Promise<void> {
  const fence = d.newFence({ isolationLevel: s.isolation });
  const xid = newXid();
  const branchId = newBranchId();
  let model: ModelState = { rows: {}, ledger: [] };

  for (const [g, group] of s.groups.entries()) {
    const results = await Promise.all(
      group.map((delivery) =>
        fence
          .run({ xid, branchId, op: delivery.op }, async (tx) => {
            await d.txSql(
              tx,
              `INSERT INTO ${d.names.ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`,
              [xid, branchId, delivery.op],
            );
            if (delivery.linger > 0) await sleep(delivery.linger);
            if (delivery.fails) throw new Error('business failure');
          })
          .then(
            (outcome): Observed => outcome,
            (err: unknown): Observed => {
              // Only the business's own error and a refused confirm may surface: any other
              // FenceError (a deadlock that outlived the retries, a schema problem) fails the
              // property.
              if (err instanceof Error && err.message === 'business failure') return 'error';
              if (err instanceof ConfirmWithoutTryError) return 'refused';
              throw err;
            },
          ),
      ),
    );

    const rows = Object.fromEntries(
      (
        await d.sql(`SELECT op, reason FROM ${d.names.fence} WHERE xid = $1 AND branch_id = $2`, [
          xid,
          branchId,
        ])
      ).rows.map((r) => [String(r.op), String(r.reason)]),
    );
    const ledger = (
      await d.sql(
        `SELECT kind FROM ${d.names.ledger} WHERE xid = $1 AND branch_id = $2 ORDER BY seq`,
        [xid, branchId],
      )
    ).rows.map((r) => String(r.kind));
    const actual: ModelState = { rows, ledger };

    // Some serial order of this group must explain both what each delivery saw and where the
    // database ended up.
    const indexed = group.map((delivery, i) => ({ delivery, i }));
    const explained = permutations(indexed)
      .map((order) => {
        let state = model;
        const outcomes: Observed[] = new Array<Observed>(group.length);
        for (const { delivery, i } of order) {
          const r = step(state, delivery);
          state = r.state;
          outcomes[i] = r.outcome;
        }
        return { state, outcomes };
      })
      .find(
        (c) => JSON.stringify(c.outcomes) === JSON.stringify(results) && sameState(c.state, actual),
      );
    if (explained === undefined) {
      expect.fail(
        `group ${g} ${JSON.stringify(group)} from model ${JSON.stringify(model)}: observed ${JSON.stringify(results)} with database ${JSON.stringify(actual)}, which no serial order explains`,
      );
    }
    model = explained.state;

    // The named invariants, checked directly as well.
    const origin = s.family === 'tcc' ? 'try' : 'action';
    const compensate = s.family === 'tcc' ? 'cancel' : 'compensate';
    for (const op of OPS[s.family])
      expect(ledger.filter((k) => k === op).length).toBeLessThanOrEqual(1);
    // no hanging try after an empty rollback
    if (rows[origin] === compensate) expect(ledger).not.toContain(origin);
    // a business cancel only undoes a try that ran
    if (ledger.includes(compensate)) expect(ledger.indexOf(origin)).toBeGreaterThanOrEqual(0);
    if (ledger.includes(compensate))
      expect(ledger.indexOf(origin)).toBeLessThan(ledger.indexOf(compensate));
    // a business confirm only uses a try that ran, before it
    if (ledger.includes('confirm')) expect(ledger.indexOf('try')).toBeGreaterThanOrEqual(0);
    if (ledger.includes('confirm'))
      expect(ledger.indexOf('try')).toBeLessThan(ledger.indexOf('confirm'));
  }
}

let pgPool: pg.Pool | undefined;
let myPool: mysql.Pool | undefined;
let pgD: FenceDriver<unknown> | undefined;
let myD: FenceDriver<unknown> | undefined;

beforeAll(async () => {
  pgPool = await connectPg(MAX_GROUP + 2);
  myPool = await connectMysql(MAX_GROUP + 2);
  pgD = pgDriver(pgPool, uniquePrefix('pgprop')) as FenceDriver<unknown>;
  myD = mysqlDriver(myPool, uniquePrefix('myprop')) as FenceDriver<unknown>;
  for (const d of [pgD, myD]) {
    await d.createBusinessTables();
    await d.newFence().ensureSchema();
  }
});

afterAll(async () => {
  await pgD?.dropAll();
  await myD?.dropAll();
  await pgPool?.end();
  await myPool?.end();
});

describe('fence property: random deliveries and interleavings match the sequential model', () => {
  it('model sanity: the specification itself (no database)', () => {
    // A few hand-checked transcripts, so the model is not just trusted.
    const run = (ops: [FenceOp, boolean?][]) => {
      let st: ModelState = { rows: {}, ledger: [] };
      return ops.map(([op, fails]) => {
        const r = step(st, { op, fails: fails ?? false, linger: 0 });
        st = r.state;
        return r.outcome;
      });
    };
    expect(run([['confirm'], ['cancel'], ['confirm'], ['try'], ['confirm']])).toEqual([
      'refused',
      'emptyRollback',
      'refused',
      'hangingRefused',
      'refused',
    ]);
    expect(run([['try', true], ['confirm'], ['try'], ['confirm', true], ['confirm']])).toEqual([
      'error',
      'refused',
      'executed',
      'error',
      'executed',
    ]);
    expect(run([['try'], ['try'], ['confirm'], ['confirm']])).toEqual([
      'executed',
      'duplicate',
      'executed',
      'duplicate',
    ]);
    expect(run([['cancel'], ['try'], ['cancel']])).toEqual([
      'emptyRollback',
      'hangingRefused',
      'duplicate',
    ]);
    expect(run([['try', true], ['cancel'], ['try']])).toEqual([
      'error',
      'emptyRollback',
      'hangingRefused',
    ]);
    expect(run([['try'], ['cancel', true], ['cancel'], ['cancel']])).toEqual([
      'executed',
      'error',
      'executed',
      'duplicate',
    ]);
    expect(run([['compensate'], ['action']])).toEqual(['emptyRollback', 'hangingRefused']);
  });

  for (const [name, get] of [
    ['postgres', () => pgD],
    ['mysql', () => myD],
  ] as const) {
    it(`${name}: ${RUNS_PER_DATABASE} random scenarios`, async () => {
      const d = get();
      if (d === undefined) throw new Error(`${name} not initialised (beforeAll failed)`);
      await fc.assert(
        fc.asyncProperty(scenario, (s) => checkScenario(d, s)),
        { numRuns: RUNS_PER_DATABASE, endOnFailure: false },
      );
    });
  }
});
