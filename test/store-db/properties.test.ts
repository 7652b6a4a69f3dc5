/**
 * Property tests of the db store against the coordinator's own state machine.
 *
 * 1. Differential: random command histories (mostly plausible, many illegal) are applied
 *    to a CoordinatorStateMachine and, through submit, to the db store. Every outcome must
 *    be the same value, and at the end the database must hold the same state (sessions,
 *    branches, lock rows, finished records) — the store adds no rule and loses none.
 * 2. The coordinator world of test/coordinator/properties.test.ts on the db store: three
 *    coordinators sharing one database, random TM/RM calls, RM failures, clock steps and
 *    driver changes (deposed drivers that have not heard yet keep working and meet the
 *    fence); then recovery: every transaction ends as decided, with no lock left.
 *
 * Runs: CONCORD_DB_PROPERTY_RUNS (default 12: 36 histories for 1, 6 for 2). fast-check prints the seed on failure.
 */
import { requireXid, type Xid } from '../../src/shared/ids.ts';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command, Outcome, ResultOf } from '../../src/coordinator/commands.ts';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import type { BranchGateway, LeadershipEvent, SessionStore } from '../../src/coordinator/ports.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/coordinator/snapshot-codec.ts';
import {
  CoordinatorStateMachine,
  type CoordinatorStateView,
} from '../../src/coordinator/state-machine.ts';
import {
  BranchStatus,
  GLOBAL_TRANSITIONS,
  GlobalStatus,
  SESSION_STATUSES,
  decisionOf,
  isFailedEnd,
  isPhaseTwoInFlight,
  successfulEndOf,
  type BranchSession,
  type BranchType,
} from '../../src/coordinator/types.ts';
import { ConcordError } from '../../src/shared/errors.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import { FakeClock, FakeGateway, SequentialIds } from '../coordinator/fakes.ts';
import { InvariantChecker } from '../coordinator/invariants.ts';
import { DIALECTS, connectAdmin, openStore, uniquePrefix, type Admin } from './helpers.ts';

const RUNS = Number(process.env.CONCORD_DB_PROPERTY_RUNS ?? 12);
const T0 = 1_700_000_000_000;
const BRANCH_STATUSES = Object.values(BranchStatus);
const GLOBAL_STATUSES = [...SESSION_STATUSES, GlobalStatus.Unknown];
const TYPES: BranchType[] = ['AT', 'TCC', 'SAGA', 'XA'];
const LOCK_KEYS = [
  '',
  't:1',
  't:2',
  't:1,2',
  'u:1;t:3',
  't:3',
  'u:1',
  't:4',
  't:5,6',
  'u:2',
  't:',
  'x:,',
];

/** Empties the store's session tables between runs (the schema and lease rows stay). */
async function truncate(admin: Admin, prefix: string): Promise<void> {
  for (const t of ['lock_table', 'branch_table', 'global_table', 'finished_table', 'request_dedup'])
    await admin.query(`DELETE FROM ${prefix}${t}`);
}

// ---------------------------------------------------------------------------------------
// 1. Differential
// ---------------------------------------------------------------------------------------

const OPS = [
  'begin',
  'register',
  'register',
  'report',
  'change',
  'change',
  'result',
  'result',
  'remove',
  'retry',
  'stop',
  'resume',
  'resolve',
  'greport',
  'finish',
  'finish',
  'acquire',
  'commit',
  'commit',
  'rollback',
] as const;
type Op = (typeof OPS)[number];
interface Intent {
  op: Op;
  a: number;
  b: number;
  c: number;
  dt: number;
  term: number;
}
const DB_PROPERTY_SEED = Number(process.env.CONCORD_DB_PROPERTY_SEED ?? 20261207);

const intentArb: fc.Arbitrary<Intent> = fc.record({
  op: fc.constantFrom(...OPS),
  a: fc.nat(1000),
  b: fc.nat(1000),
  c: fc.nat(1000),
  dt: fc.integer({ min: 0, max: 400 }),
  term: fc.integer({ min: 0, max: 9 }),
});

/** Commands aimed at the reference machine's current state, so many of them are legal. */
class CommandMaker {
  private now = T0;
  private nextId = 1;
  private term = 1;
  private readonly xids: Xid[] = [];
  constructor(private readonly machine: CoordinatorStateMachine) {}

  make(i: Intent): Command {
    this.now += i.dt;
    const at = this.now;
    if (i.term === 9) this.term += 1;
    const term = i.term === 0 ? this.term - 1 : this.term;
    const live = this.machine.liveXids();
    const xid =
      i.a % 5 !== 0 && live.length > 0
        ? live[i.a % live.length]!
        : (this.xids[i.a % (this.xids.length + 1)] ?? requireXid('10.0.0.1:8091:424242'));
    const session = this.machine.getSession(xid);
    const branches = session?.branches ?? [];
    const open = branches.filter(
      (b) =>
        b.status !== BranchStatus.PhaseTwo_Committed &&
        b.status !== BranchStatus.PhaseTwo_Rollbacked,
    );
    const branchId =
      i.b % 4 !== 0 && open.length > 0
        ? open[i.b % open.length]!.branchId
        : (branches[i.b % (branches.length + 1)]?.branchId ?? '777777');
    const current = session?.status ?? GlobalStatus.Begin;
    const decision = decisionOf(current);
    switch (i.op) {
      case 'begin': {
        const n = this.nextId++;
        const x = requireXid(`10.0.0.1:8091:${n}`);
        this.xids.push(x);
        return {
          kind: 'Begin',
          xid: x,
          transactionId: String(n),
          applicationId: 'app',
          transactionServiceGroup: 'g',
          name: 'p',
          timeoutMs: 1_000 + (i.b % 10) * 1_000,
          beginTime: at,
          requestId: i.b % 4 === 0 ? `req-${i.c % 3}` : null,
        };
      }
      case 'register':
        return {
          kind: 'RegisterBranch',
          xid,
          branchId: String(100_000 + this.nextId++),
          type: TYPES[i.c % 4]!,
          resourceId: 'db',
          lockKey: LOCK_KEYS[i.b % LOCK_KEYS.length]!,
          applicationData: i.c % 7 === 0 ? 'd' : '',
          clientId: 'rm',
          applicationId: 'app',
          at,
          requestId: i.c % 5 === 0 ? `reg-${i.b % 3}` : null,
        };
      case 'report':
        return {
          kind: 'BranchReport',
          xid,
          branchId,
          status: BRANCH_STATUSES[i.c % BRANCH_STATUSES.length]!,
          applicationData: i.c % 3 === 0 ? 'r' : null,
        };
      case 'change': {
        // Mostly a legal next status (so phase two is reached), now and then any.
        const legal = GLOBAL_TRANSITIONS.get(current) ?? [];
        const to =
          i.b % 3 !== 0 && legal.length > 0
            ? legal[i.b % legal.length]!
            : GLOBAL_STATUSES[i.b % GLOBAL_STATUSES.length]!;
        return {
          kind: 'ChangeGlobalStatus',
          xid,
          from: i.c % 6 === 0 ? GLOBAL_STATUSES[i.c % GLOBAL_STATUSES.length]! : current,
          to,
          at,
          term,
        };
      }
      case 'result': {
        const status =
          i.c % 4 === 0 || decision === null
            ? BRANCH_STATUSES[i.c % BRANCH_STATUSES.length]!
            : i.c % 4 === 1
              ? decision === 'commit'
                ? BranchStatus.PhaseTwo_CommitFailed_Retryable
                : BranchStatus.PhaseTwo_RollbackFailed_Retryable
              : decision === 'commit'
                ? BranchStatus.PhaseTwo_Committed
                : BranchStatus.PhaseTwo_Rollbacked;
        return { kind: 'BranchPhaseTwoResult', xid, branchId, status, term };
      }
      case 'remove':
        return { kind: 'RemoveBranch', xid, branchId, term };
      case 'retry':
        return {
          kind: 'RetryScheduled',
          xid,
          attempt: 1 + (i.c % 4),
          nextRetryAt: at + 1_000,
          retryDeadline: at + 60_000,
          term,
        };
      case 'stop':
        return { kind: 'RetryStopped', xid, at, term };
      case 'resume':
        return { kind: 'RetryResumed', xid, at, retryDeadline: at + 60_000, term };
      case 'resolve':
        return { kind: 'MarkResolved', xid, at, operator: 'ops', term };
      case 'greport':
        return {
          kind: 'GlobalReport',
          xid,
          status: GLOBAL_STATUSES[i.b % GLOBAL_STATUSES.length]!,
          at,
          term,
        };
      case 'finish':
        return {
          kind: 'FinishGlobal',
          xid,
          status:
            i.c % 3 === 0
              ? GLOBAL_STATUSES[i.b % GLOBAL_STATUSES.length]!
              : successfulEndOf(current),
          at,
          term,
        };
      case 'acquire':
        return { kind: 'AcquireDriver', xid, term };
      case 'commit':
        return { kind: 'CommitGlobal', xid, at, term };
      case 'rollback':
        return { kind: 'RollbackGlobal', xid, timeout: i.c % 3 === 0, at, term };
    }
  }
}

/** A comparable picture of a state: live sessions, lock rows, finished records. */
function picture(machine: CoordinatorStateMachine, finishedXids: readonly string[]) {
  return {
    sessions: machine
      .liveXids()
      .sort()
      .map((xid) => machine.getSession(xid)),
    locks: machine.lockEntries().sort((x, y) => (x.row < y.row ? -1 : 1)),
    finished: [...finishedXids].sort().map((xid) => machine.getFinished(xid) ?? null),
  };
}

describe.each(DIALECTS)(
  'db store ≡ the coordinator state machine on %s',
  (dialect: DialectName) => {
    const prefix = uniquePrefix(dialect === 'postgres' ? 'pgp' : 'myp');
    let admin: Admin;
    let store: DbSessionStore;

    beforeAll(async () => {
      admin = await connectAdmin(dialect);
      store = await openStore(dialect, prefix, { lease: false });
    });

    afterAll(async () => {
      await store?.close();
      await admin?.dropTables(prefix);
      await admin?.close();
    });

    it('random command histories: the same outcome for every command, the same state at the end', async () => {
      const accepted = new Set<string>();
      await fc.assert(
        fc.asyncProperty(
          fc.array(intentArb, { minLength: 1, maxLength: 120, size: 'max' }),
          async (intents) => {
            await truncate(admin, prefix);
            const reference = new CoordinatorStateMachine();
            const maker = new CommandMaker(reference);
            const finishedXids = new Set<string>();
            for (const intent of intents) {
              const command = maker.make(intent);
              const want = reference.apply(structuredClone(command));
              const got = await store.submit(command);
              expect(got, `${command.kind} ${JSON.stringify(command)}`).toEqual(want);
              if (want.ok) accepted.add(command.kind);
              finishedXids.add(command.xid);
            }
            const exported = await store.exportState();
            expect(picture(exported, [...finishedXids])).toEqual(
              picture(reference, [...finishedXids]),
            );
          },
        ),
        { numRuns: RUNS * 3 },
      );
      // Guards the generator: most kinds were accepted at least once.
      if (process.env.CONCORD_TEST_LOG)
        process.stderr.write(`accepted: ${[...accepted].sort().join(',')}\n`);
      if (RUNS >= 12) expect(accepted.size).toBeGreaterThanOrEqual(11);
      // Guards the comparison: the one-statement forms were taken, and declined, many times.
      const fast = store.fastPathStats;
      if (process.env.CONCORD_TEST_LOG)
        process.stderr.write(`fast paths: ${JSON.stringify(fast)}\n`);
      if (RUNS >= 12) {
        for (const kind of [
          'Begin',
          'ChangeGlobalStatus',
          'AcquireDriver',
          'FinishGlobal',
          'CommitGlobal',
          'RollbackGlobal',
        ])
          expect(fast.takenByKind[kind as Command['kind']] ?? 0, kind).toBeGreaterThan(5);
        expect(fast.declined).toBeGreaterThan(50);
      }
    }, 180_000);
  },
);

// ---------------------------------------------------------------------------------------
// 2. Coordinators, RMs, clock and driver changes over one database
// ---------------------------------------------------------------------------------------

type Action =
  | { t: 'begin'; node: number; timeout: number }
  | { t: 'register'; node: number; x: number; lock: number; type: number }
  | { t: 'report'; node: number; x: number; b: number; failed: boolean }
  | { t: 'commit' | 'rollback' | 'status'; node: number; x: number }
  | { t: 'answer'; call: number; answer: 'success' | 'retryable' | 'unretryable' | 'throw' }
  | { t: 'tick'; ms: number }
  | { t: 'elect'; node: number; tellOld: boolean }
  | { t: 'tell' }
  | { t: 'stop' | 'resume' | 'resolve'; node: number; x: number };

const NODES = 3;
const nodeArb = fc.oneof(
  { arbitrary: fc.constant(-1), weight: 3 },
  { arbitrary: fc.nat(NODES - 1), weight: 2 },
);
const pick = fc.nat(50);
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  {
    arbitrary: fc.record({
      t: fc.constant('begin' as const),
      node: nodeArb,
      timeout: fc.constantFrom(3_000, 30_000, 120_000),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('register' as const),
      node: nodeArb,
      x: pick,
      lock: pick,
      type: pick,
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('report' as const),
      node: nodeArb,
      x: pick,
      b: pick,
      failed: fc.boolean(),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      t: fc.constantFrom('commit' as const, 'rollback' as const),
      node: nodeArb,
      x: pick,
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({ t: fc.constant('status' as const), node: nodeArb, x: pick }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('answer' as const),
      call: pick,
      answer: fc.constantFrom(
        'success' as const,
        'success' as const,
        'retryable' as const,
        'unretryable' as const,
        'throw' as const,
      ),
    }),
    weight: 6,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('tick' as const),
      ms: fc.integer({ min: 1, max: 6_000 }),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('elect' as const),
      node: nodeArb,
      tellOld: fc.boolean(),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ t: fc.constant('tell' as const) }), weight: 1 },
  {
    arbitrary: fc.record({
      t: fc.constantFrom('stop' as const, 'resume' as const, 'resolve' as const),
      node: nodeArb,
      x: pick,
    }),
    weight: 1,
  },
);

const EXPECTED_ERRORS = new Set([
  'BAD_REQUEST',
  'NOT_LEADER',
  'UNKNOWN_XID',
  'ILLEGAL_STATUS',
  'LOCK_CONFLICT',
]);

/**
 * A db store behind a gate the test can close: submits wait at the gate, so the test can
 * let the ones in flight land and look at a state that is exactly "after these commands".
 */
class GatedStore implements SessionStore {
  readonly concurrentWriters = true;
  private inFlight = 0;
  private gate: Promise<void> | null = null;
  private openGate: (() => void) | null = null;
  private drained: (() => void) | null = null;

  constructor(readonly inner: DbSessionStore) {}

  async submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>> {
    while (this.gate) await this.gate;
    this.inFlight += 1;
    try {
      return await this.inner.submit(command);
    } finally {
      this.inFlight -= 1;
      if (this.inFlight === 0) this.drained?.();
    }
  }

  read<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    return this.inner.read(fn);
  }

  isLeader(): boolean {
    return this.inner.isLeader();
  }

  drivesPhaseTwo(): boolean {
    return this.inner.drivesPhaseTwo();
  }

  term(): number {
    return this.inner.term();
  }

  onLeadershipChange(listener: (event: LeadershipEvent) => void): () => void {
    return this.inner.onLeadershipChange(listener);
  }

  /** Closes the gate and waits until no submit is in flight. */
  async close(): Promise<void> {
    this.gate ??= new Promise<void>((resolve) => (this.openGate = resolve));
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.drained = null;
  }

  open(): void {
    const release = this.openGate;
    this.gate = null;
    this.openGate = null;
    release?.();
  }
}

/** Three coordinators on three db stores (lease off: the test moves the driver role, as elections would). */
class DbCluster {
  readonly clock = new FakeClock(T0);
  readonly gateway = new FakeGateway();
  /** The database's state, re-read after every action, for the invariant checker. */
  readonly mirror = new CoordinatorStateMachine();
  readonly checker = new InvariantChecker(this.mirror);
  readonly nodes: Coordinator[] = [];
  readonly xids: Xid[] = [];
  readonly unexpected: string[] = [];
  readonly unretryable = new Set<string>();
  readonly undecidedCalls: string[] = [];
  /** Command kinds applied and rejection codes met, for the generator guard. */
  readonly seen = new Set<string>();
  private readonly applied: { command: Command; outcome: Outcome<unknown> }[] = [];
  private readonly inFlight: Promise<unknown>[] = [];
  private readonly unsubscribe: (() => void)[] = [];
  private readonly gated: GatedStore[];
  leader = 0;

  /** `term`: above every term the stores have seen (a store's term never goes back). */
  constructor(
    readonly stores: DbSessionStore[],
    public term: number,
  ) {
    this.gateway.manual = true;
    const gateway: BranchGateway = {
      commitBranch: (b) => this.call('commit', b),
      rollbackBranch: (b) => this.call('rollback', b),
    };
    this.gated = stores.map((store) => new GatedStore(store));
    stores.forEach((store, i) => {
      store.setLeadership(i === 0, term);
      this.unsubscribe.push(
        store.onApply((command, outcome) => {
          this.applied.push({ command, outcome });
          this.seen.add(outcome.ok ? command.kind : outcome.rejection.code);
        }),
      );
      const coordinator = new Coordinator({
        store: this.gated[i]!,
        gateway,
        ids: new SequentialIds((i + 1) * 1_000_000),
        clock: this.clock,
        logger: silentLogger(),
        address: { host: `10.0.0.${i + 1}`, port: 8091 },
        phaseTwo: {
          maxRetryMs: 365 * 24 * 3600 * 1000,
          retryBaseMs: 500,
          retryMaxBackoffMs: 4_000,
          branchCallTimeoutMs: 20_000,
          sweepIntervalMs: 2_000,
        },
      });
      coordinator.start();
      this.nodes.push(coordinator);
    });
  }

  /** Invariant 1: a branch is called only after its transaction's decision is recorded (a read issued now sees it). */
  private call(kind: 'commit' | 'rollback', branch: BranchSession) {
    this.track(
      this.stores[0]!.read(
        (s) => s.getSession(branch.xid)?.status ?? s.getFinished(branch.xid)?.status,
      ).then((status) => {
        if (status !== undefined && decisionOf(status) !== kind)
          this.undecidedCalls.push(`${kind} ${branch.xid}/${branch.branchId} while ${status}`);
      }),
    );
    return kind === 'commit'
      ? this.gateway.commitBranch(branch)
      : this.gateway.rollbackBranch(branch);
  }

  private track(p: Promise<unknown>): void {
    this.inFlight.push(
      p.catch((err: unknown) => {
        if (!(err instanceof ConcordError) || !EXPECTED_ERRORS.has(err.code))
          this.unexpected.push(String((err as Error)?.stack ?? err));
      }),
    );
  }

  private xid(n: number): Xid {
    const live = this.mirror.liveXids();
    if (n % 4 !== 0 && live.length > 0) return live[n % live.length]!;
    return this.xids[n % (this.xids.length + 1)] ?? requireXid('10.0.0.9:8091:1');
  }

  /**
   * Gives in-flight work a moment (real round trips; a TM call may wait on an RM answer a
   * later action gives, so no call is awaited), then holds new submits at the gates, lets
   * the ones in flight land, and checks the state after exactly the commands decided so far.
   */
  async settle(): Promise<void> {
    await new Promise((r) => setTimeout(r, 10));
    await Promise.all(this.gated.map((g) => g.close()));
    try {
      const batch = this.applied.splice(0);
      this.check(batch, (await this.stores[0]!.exportState()).snapshot());
    } finally {
      for (const g of this.gated) g.open();
    }
  }

  /**
   * The checker was written to look after every single command; here it looks after a
   * batch. Commands that ended a session go first, against the state without those
   * sessions' finished records (so no ended session is compared with a final status the
   * checker has not been shown yet); then the rest against the whole state.
   */
  private check(batch: { command: Command; outcome: Outcome<unknown> }[], state: Uint8Array): void {
    const ends = (x: { command: Command; outcome: Outcome<unknown> }) =>
      x.outcome.ok &&
      (x.command.kind === 'FinishGlobal' ||
        x.command.kind === 'MarkResolved' ||
        ((x.command.kind === 'GlobalReport' ||
          x.command.kind === 'CommitGlobal' ||
          x.command.kind === 'RollbackGlobal') &&
          (x.outcome.value as { finished: unknown }).finished !== null));
    const before = this.checker.violations.length;
    const ended = batch.filter(ends);
    const endedXids = new Set(ended.map((x) => x.command.xid));
    const data = decodeSnapshot(state);
    this.mirror.restore(
      encodeSnapshot({ ...data, finished: data.finished.filter((r) => !endedXids.has(r.xid)) }),
    );
    for (const x of ended) this.checker.observe(x.command, x.outcome);
    this.mirror.restore(state);
    for (const x of batch.filter((x) => !ends(x))) this.checker.observe(x.command, x.outcome);
    if (process.env.CONCORD_TEST_LOG && this.checker.violations.length > before) {
      process.stderr.write(
        `VIOLATION after batch:\n${batch.map((x) => `  ${x.command.kind} ${x.command.xid} ${JSON.stringify(x.outcome).slice(0, 200)}`).join('\n')}\n`,
      );
    }
  }

  async run(action: Action): Promise<void> {
    const c =
      'node' in action && action.node >= 0 ? this.nodes[action.node]! : this.nodes[this.leader]!;
    switch (action.t) {
      case 'begin':
        this.track(
          c
            .begin({
              applicationId: 'app',
              transactionServiceGroup: 'g',
              timeoutMs: action.timeout,
            })
            .then(({ xid }) => this.xids.push(xid)),
        );
        break;
      case 'register':
        this.track(
          c.registerBranch({
            xid: this.xid(action.x),
            branchType: TYPES[action.type % 4]!,
            resourceId: 'db',
            lockKey: LOCK_KEYS[action.lock % 10],
            clientId: 'rm',
            applicationId: 'app',
          }),
        );
        break;
      case 'report': {
        const xid = this.xid(action.x);
        const branches = this.mirror.getSession(xid)?.branches ?? [];
        const branch = branches[action.b % Math.max(1, branches.length)];
        if (branch)
          this.track(
            c.branchReport({
              xid,
              branchId: branch.branchId,
              status: action.failed ? BranchStatus.PhaseOne_Failed : BranchStatus.PhaseOne_Done,
            }),
          );
        break;
      }
      case 'commit':
        this.track(c.commit({ xid: this.xid(action.x) }));
        break;
      case 'rollback':
        this.track(c.rollback({ xid: this.xid(action.x) }));
        break;
      case 'status':
        this.track(c.getStatus({ xid: this.xid(action.x) }));
        break;
      case 'answer': {
        if (this.gateway.pendingCount === 0) break;
        const call = this.gateway.settle(action.call % this.gateway.pendingCount, action.answer);
        if (call && action.answer === 'unretryable') this.unretryable.add(call.xid);
        break;
      }
      case 'tick':
        await this.clock.advance(action.ms);
        break;
      case 'elect': {
        this.term += 1;
        const old = this.leader;
        this.leader = action.node >= 0 ? action.node : (old + 1) % NODES;
        this.stores[this.leader]!.setLeadership(true, this.term);
        if (action.tellOld && old !== this.leader)
          this.stores[old]!.setLeadership(false, this.term);
        break;
      }
      case 'tell':
        this.tellAll();
        break;
      case 'stop':
        this.track(c.stopRetry({ xid: this.xid(action.x) }));
        break;
      case 'resume':
        this.track(c.resumeRetry({ xid: this.xid(action.x) }));
        break;
      case 'resolve': {
        const xid = this.xid(action.x);
        this.track(c.markResolved({ xid, confirmXid: xid, operator: 'ops' }));
        break;
      }
    }
    await this.settle();
  }

  tellAll(): void {
    for (let i = 0; i < NODES; i++)
      if (i !== this.leader && this.stores[i]!.drivesPhaseTwo())
        this.stores[i]!.setLeadership(false, this.term);
  }

  async recover(): Promise<void> {
    this.term += 1;
    this.stores[this.leader]!.setLeadership(true, this.term);
    this.tellAll();
    this.gateway.manual = false;
    while (this.gateway.pendingCount > 0) this.gateway.settle(0, 'success');
    await Promise.all(this.inFlight);
    for (let i = 0; i < 150; i++) {
      await this.clock.advance(2_000);
      await this.settle();
      const live = this.mirror.liveXids().map((x) => this.mirror.getSession(x)!);
      if (
        live.every(
          (s) => isFailedEnd(s.status) || (isPhaseTwoInFlight(s.status) && s.retry.stopped),
        )
      )
        break;
    }
  }

  async stop(): Promise<void> {
    for (const n of this.nodes) n.stop();
    for (const u of this.unsubscribe) u();
    this.gateway.manual = false;
    while (this.gateway.pendingCount > 0) this.gateway.settle(0, 'success');
    await Promise.all(this.inFlight);
    // Passes of the stopped drivers end at their next step; let their last statements land.
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.each(DIALECTS)('coordinator properties on the db store (%s)', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgw' : 'myw');
  let admin: Admin;
  const stores: DbSessionStore[] = [];

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
    for (let i = 0; i < NODES; i++)
      stores.push(await openStore(dialect, prefix, { lease: false, nodeId: `w${i + 1}` }));
  });

  afterAll(async () => {
    for (const s of stores) await s.close();
    await admin?.dropTables(prefix);
    await admin?.close();
  });

  it('random TM/RM interleavings, RM failures and driver changes never break an invariant, and every transaction ends as decided', async () => {
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(
        fc.array(actionArb, { minLength: 10, maxLength: 60, size: 'max' }),
        async (actions) => {
          await truncate(admin, prefix);
          // Terms never go back on a store: start each run above the last one.
          const cluster = new DbCluster(stores, Math.max(...stores.map((s) => s.term())) + 1);
          try {
            for (const action of actions) await cluster.run(action);
            await cluster.recover();
            for (const x of cluster.seen) seen.add(x);
            expect(cluster.unexpected).toEqual([]);
            expect(cluster.undecidedCalls).toEqual([]);
            expect(cluster.checker.violations).toEqual([]);

            const { mirror } = cluster;
            for (const xid of mirror.liveXids()) {
              const session = mirror.getSession(xid)!;
              const waitsForOperator =
                isFailedEnd(session.status) ||
                (isPhaseTwoInFlight(session.status) && session.retry.stopped);
              expect(waitsForOperator, `${xid} is stuck ${session.status}`).toBe(true);
              if (isFailedEnd(session.status))
                expect(
                  cluster.unretryable.has(xid),
                  `${xid} failed without an unretryable answer`,
                ).toBe(true);
            }
            const leader = cluster.nodes[cluster.leader]!;
            for (const xid of mirror.liveXids()) {
              const session = mirror.getSession(xid)!;
              if (session.retry.stopped && !isFailedEnd(session.status))
                await leader.resumeRetry({ xid });
            }
            for (
              let i = 0;
              i < 60 && mirror.liveXids().some((x) => !isFailedEnd(mirror.getSession(x)!.status));
              i++
            ) {
              await cluster.clock.advance(2_000);
              await cluster.settle();
            }
            for (const xid of mirror.liveXids()) {
              expect(
                isFailedEnd(mirror.getSession(xid)!.status),
                `${xid} is stuck ${mirror.getSession(xid)!.status} after resume`,
              ).toBe(true);
              await leader.markResolved({ xid, confirmXid: xid, operator: 'ops' });
            }
            await cluster.settle();
            expect(mirror.liveSessionCount()).toBe(0);
            expect(mirror.lockedRowCount()).toBe(0);
            expect(cluster.checker.violations).toEqual([]);
            for (const [xid, finished] of cluster.checker.finished) {
              seen.add(finished.status);
              expect(decisionOf(finished.status)).toBe(cluster.checker.decisionOf(xid));
            }
          } finally {
            await cluster.stop();
          }
        },
      ),
      {
        numRuns: Math.max(2, Math.ceil(RUNS / 2)),
        // A fixed default seed, as in the coordinator suite: the guard below (every outcome worth
        // testing was reached) must not depend on luck. CONCORD_DB_PROPERTY_SEED explores others.
        seed: DB_PROPERTY_SEED,
        ...(process.env.CONCORD_DB_PROPERTY_PATH
          ? { path: process.env.CONCORD_DB_PROPERTY_PATH, endOnFailure: true }
          : {}),
      },
    );
    if (process.env.CONCORD_TEST_LOG)
      process.stderr.write(`world reached: ${[...seen].sort().join(',')}\n`);
    // Guards the generator: the histories reached the outcomes worth testing.
    // (The fence and lock conflicts are reached here only now and then with few runs; lease
    // and concurrency tests cover them deterministically.)
    for (const x of ['Committed', 'AcquireDriver', 'FinishGlobal'])
      expect(seen, `no history reached ${x}`).toContain(x);
  }, 300_000);
});
