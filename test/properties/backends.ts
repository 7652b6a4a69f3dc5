/**
 * The stores the property suite runs against, each as the two things its properties need:
 * a HistoryTarget (one store that takes random command histories, compared with the
 * reference machine) and a WorldBackend (three stores under three coordinators).
 *
 *  - memory: MemoryStores over the coordinator's own state machine (every command encoded
 *    and decoded, as a log would); the world's three share one machine, as three nodes
 *    share one Raft log, and the checker looks after every single command.
 *  - postgres, mysql: db stores (lease off: the test moves the driver role, as elections
 *    would). The world's three share one database; after every action the submits are held
 *    at a gate, the ones in flight land, and the checker looks at the state re-read.
 */
import type { Command, Outcome, ResultOf } from '../../src/coordinator/commands.ts';
import type { LeadershipEvent, SessionStore } from '../../src/coordinator/ports.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/coordinator/snapshot-codec.ts';
import {
  CoordinatorStateMachine,
  type CoordinatorStateView,
} from '../../src/coordinator/state-machine.ts';
import { decisionOf, type BranchSession, type GlobalStatus } from '../../src/coordinator/types.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { flush } from '../coordinator/fakes.ts';
import { InvariantChecker } from '../coordinator/invariants.ts';
import { connectAdmin, openStore, uniquePrefix, type Admin } from '../store-db/helpers.ts';
import { NODES, type WorldBackend } from './world.ts';

/** One store taking random command histories. */
export interface HistoryTarget {
  submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>>;
  /** The store's state, as a machine. */
  state(): Promise<CoordinatorStateMachine>;
  /** Empties the store before the next history. */
  reset(): Promise<void>;
  /** Guards what only this store has (the db store's one-statement forms were taken). */
  guard(runs: number): void;
}

/** A store kind: how to open its history target and its world, and how to clean up. */
export interface StoreKind {
  name: 'memory' | DialectName;
  history(): Promise<HistoryTarget>;
  /** A new world backend at a term above every term its stores have seen. */
  world(): Promise<{ backend: WorldBackend; term: number; close: () => Promise<void> }>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// memory

export function memoryKind(): StoreKind {
  return {
    name: 'memory',
    history: () => {
      let store = new MemoryStore();
      return Promise.resolve({
        submit: (command) => store.submit(command),
        state: () => Promise.resolve(store.machine),
        reset: () => {
          store = new MemoryStore();
          return Promise.resolve();
        },
        guard: () => {},
      });
    },
    world: () => Promise.resolve({ backend: memoryWorld(), term: 1, close: async () => {} }),
    close: async () => {},
  };
}

function memoryWorld(): WorldBackend {
  const machine = new CoordinatorStateMachine();
  const checker = new InvariantChecker(machine);
  const seen = new Set<string>();
  const stores = Array.from({ length: NODES }, (_, i) => {
    const store = new MemoryStore({ machine, leader: i === 0, term: 1 });
    store.onApply((command, outcome) => {
      checker.observe(command, outcome);
      seen.add(outcome.ok ? command.kind : outcome.rejection.code);
    });
    return store;
  });
  return {
    stores,
    view: machine,
    checker,
    seen,
    expectedErrors: new Set([...EXPECTED_ERRORS, 'UNAVAILABLE']),
    stepMs: 5_000,
    recoverySteps: 40,
    setLeadership: (i, holding, term) => stores[i]!.setLeadership(holding, term),
    leads: (i) => stores[i]!.isLeader(),
    calledTooEarly: (kind, branch) => {
      // A late call of a deposed leader may come after the transaction finished: its recorded
      // decision counts.
      const status =
        machine.getSession(branch.xid)?.status ?? machine.getFinished(branch.xid)?.status;
      const decision = status === undefined ? checker.decisionOf(branch.xid) : decisionOf(status);
      return Promise.resolve(
        decision === kind
          ? null
          : `${kind} ${branch.xid}/${branch.branchId} while ${String(status)}`,
      );
    },
    settle: () => flush(2),
  };
}

const EXPECTED_ERRORS = [
  'BAD_REQUEST',
  'NOT_LEADER',
  'UNKNOWN_XID',
  'ILLEGAL_STATUS',
  'LOCK_CONFLICT',
];

// ---------------------------------------------------------------------------------------
// db

/** Empties the store's session tables between runs (the schema and lease rows stay). */
async function truncate(admin: Admin, prefix: string): Promise<void> {
  for (const t of ['lock_table', 'branch_table', 'global_table', 'finished_table', 'request_dedup'])
    await admin.query(`DELETE FROM ${prefix}${t}`);
}

export function dbKind(dialect: DialectName): StoreKind {
  const tag = dialect === 'postgres' ? 'pg' : 'my';
  let admin: Admin | undefined;
  const opened: DbSessionStore[] = [];
  const prefixes: string[] = [];
  /** The world's three stores, opened once and emptied before every run. */
  const worldStores: DbSessionStore[] = [];
  let worldAdmin: { admin: Admin; prefix: string } | undefined;
  const connect = async (prefix: string) => {
    admin ??= await connectAdmin(dialect);
    prefixes.push(prefix);
    return admin;
  };
  return {
    name: dialect,
    history: async () => {
      const prefix = uniquePrefix(`${tag}p`);
      const a = await connect(prefix);
      const store = await openStore(dialect, prefix, { lease: false });
      opened.push(store);
      return {
        submit: (command) => store.submit(command),
        state: () => store.exportState(),
        reset: () => truncate(a, prefix),
        guard: (runs) => guardFastPaths(store, runs),
      };
    },
    world: async () => {
      if (worldStores.length === 0) {
        const prefix = uniquePrefix(`${tag}w`);
        worldAdmin = { admin: await connect(prefix), prefix };
        for (let i = 0; i < NODES; i++)
          worldStores.push(await openStore(dialect, prefix, { lease: false, nodeId: `w${i + 1}` }));
        opened.push(...worldStores);
      }
      await truncate(worldAdmin!.admin, worldAdmin!.prefix);
      const backend = new DbWorld(worldStores);
      // Terms never go back on a store: start each run above the last one.
      const term = Math.max(...worldStores.map((s) => s.term())) + 1;
      return { backend, term, close: () => backend.close() };
    },
    close: async () => {
      for (const s of opened.splice(0)) await s.close();
      worldStores.length = 0;
      for (const p of prefixes.splice(0)) await admin?.dropTables(p);
      await admin?.close();
      admin = undefined;
    },
  };
}

/** Guards the comparison: the one-statement forms were taken, and declined, many times. */
function guardFastPaths(store: DbSessionStore, runs: number): void {
  const fast = store.fastPathStats;
  if (process.env.CONCORD_TEST_LOG) process.stderr.write(`fast paths: ${JSON.stringify(fast)}\n`);
  if (runs < 12) return;
  for (const kind of [
    'Begin',
    'ChangeGlobalStatus',
    'AcquireDriver',
    'FinishGlobal',
    'CommitGlobal',
    'RollbackGlobal',
    // PostgreSQL's one-statement forms of the steps with branches (fast-path-pg.ts).
    ...(store.dialect === 'postgres' ? (['RegisterBranch', 'BranchPhaseTwoResult'] as const) : []),
  ] as const) {
    const taken = fast.takenByKind[kind] ?? 0;
    if (taken <= 5) throw new Error(`the fast path of ${kind} was taken ${taken} times only`);
  }
  if (fast.declined <= 50) throw new Error(`the fast paths declined ${fast.declined} times only`);
}

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

type Applied = { command: Command; outcome: Outcome<unknown> };

/** Three coordinators' db stores over one database, its state mirrored for the checker. */
class DbWorld implements WorldBackend {
  /** The database's state, re-read after every action, for the invariant checker. */
  readonly view = new CoordinatorStateMachine();
  readonly checker = new InvariantChecker(this.view);
  readonly seen = new Set<string>();
  readonly expectedErrors = new Set(EXPECTED_ERRORS);
  readonly stepMs = 2_000;
  readonly recoverySteps = 150;
  readonly stores: GatedStore[];
  private readonly applied: Applied[] = [];
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly db: DbSessionStore[]) {
    this.stores = db.map((store) => new GatedStore(store));
    for (const store of db)
      this.unsubscribe.push(
        store.onApply((command, outcome) => {
          this.applied.push({ command, outcome });
          this.seen.add(outcome.ok ? command.kind : outcome.rejection.code);
        }),
      );
  }

  setLeadership(i: number, holding: boolean, term: number): void {
    this.db[i]!.setLeadership(holding, term);
  }

  leads(i: number): boolean {
    return this.db[i]!.drivesPhaseTwo();
  }

  /** A read issued now sees the decision, if it was recorded. */
  async calledTooEarly(kind: 'commit' | 'rollback', branch: BranchSession): Promise<string | null> {
    const status = await this.db[0]!.read(
      (s) => s.getSession(branch.xid)?.status ?? s.getFinished(branch.xid)?.status,
    );
    return status !== undefined && decisionOf(status) !== kind
      ? `${kind} ${branch.xid}/${branch.branchId} while ${status}`
      : null;
  }

  /**
   * Gives in-flight work a moment (real round trips; a TM call may wait on an RM answer a
   * later action gives, so no call is awaited), then holds new submits at the gates, lets
   * the ones in flight land, and checks the state after exactly the commands decided so far.
   */
  async settle(): Promise<void> {
    await new Promise((r) => setTimeout(r, 10));
    await Promise.all(this.stores.map((g) => g.close()));
    try {
      const batch = this.applied.splice(0);
      this.check(batch, (await this.db[0]!.exportState()).snapshot());
    } finally {
      for (const g of this.stores) g.open();
    }
  }

  /**
   * The checker was written to look after every single command; here it looks after a
   * batch. Commands that ended a session go first, against the state without those
   * sessions' finished records (so no ended session is compared with a final status the
   * checker has not been shown yet); then the rest against the whole state.
   */
  private check(batch: Applied[], state: Uint8Array): void {
    const before = this.checker.violations.length;
    const ended = batch.filter(endsSession);
    const endedXids = new Set(ended.map((x) => ('xid' in x.command ? x.command.xid : '')));
    const data = decodeSnapshot(state);
    this.view.restore(
      encodeSnapshot({ ...data, finished: data.finished.filter((r) => !endedXids.has(r.xid)) }),
    );
    // A failed end resumed and then ended within the batch: the resume first, as it happened
    // (the re-read state holds neither; without it the end would look like a failed end left
    // by FinishGlobal).
    for (const x of batch) {
      if (x.command.kind !== 'RetryResumed' || !endedXids.has(x.command.xid) || !x.outcome.ok)
        continue;
      const status = (x.outcome.value as { status?: GlobalStatus }).status;
      if (status !== undefined) this.checker.sawStatus(x.command.xid, status, x.command);
    }
    for (const x of ended) this.checker.observe(x.command, x.outcome);
    this.view.restore(state);
    for (const x of batch.filter((x) => !endsSession(x)))
      this.checker.observe(x.command, x.outcome);
    if (process.env.CONCORD_TEST_LOG && this.checker.violations.length > before) {
      const lines = batch.map(
        (x) =>
          `  ${x.command.kind} ${'xid' in x.command ? x.command.xid : ''} ${JSON.stringify(x.outcome).slice(0, 200)}`,
      );
      process.stderr.write(`VIOLATION after batch:\n${lines.join('\n')}\n`);
    }
  }

  /**
   * Unsubscribes; passes of the stopped drivers end at their next step: lets their last statements
   * land.
   */
  async close(): Promise<void> {
    for (const u of this.unsubscribe) u();
    await new Promise((r) => setTimeout(r, 100));
  }
}

function endsSession({ command, outcome }: Applied): boolean {
  if (!outcome.ok) return false;
  switch (command.kind) {
    case 'FinishGlobal':
    case 'MarkResolved':
      return true;
    case 'GlobalReport':
    case 'CommitGlobal':
    case 'RollbackGlobal':
      return (outcome.value as { finished: unknown }).finished !== null;
    default:
      return false;
  }
}
