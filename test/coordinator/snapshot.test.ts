import { describe, expect, it } from 'vitest';
import {
  COMMAND_KINDS,
  decodeCommand,
  encodeCommand,
  type Command,
} from '../../src/coordinator/commands.ts';
import { DEDUP_RETENTION_MS, type RetentionLimits } from '../../src/coordinator/limits.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { AssertionFailure, StorageCorruptError } from '../../src/shared/errors.ts';
import { Packr } from 'msgpackr';
import {
  SNAPSHOT_FORMAT_VERSION,
  canonical,
  decodeSnapshot,
  encodeSnapshotInSlices,
  type SnapshotSource,
} from '../../src/coordinator/snapshot-codec.ts';
import { BranchStatus } from '../../src/coordinator/types.ts';
import { begin, makeWorld, register } from './fakes.ts';

/** Runs a scenario touching every kind of command through a real Coordinator, recording the log. */
async function recordScenario(): Promise<Command[]> {
  const world = makeWorld();
  const log: Command[] = [];
  world.store.onApply((command) => log.push(command));
  const { coordinator, gateway, clock } = world;

  const committed = await begin(world);
  await register(world, committed, 'TCC', 'orders:1,2');
  await register(world, committed, 'TCC', 'stock:7');
  await coordinator.commit({ xid: committed });
  // Idle past a request id's retention: the leader's sweep proposes Prune.
  const early = await coordinator.begin({
    applicationId: 'app',
    transactionServiceGroup: 'g',
    timeoutMs: 60_000,
    requestId: 'r-0',
  });
  await coordinator.commit({ xid: early.xid });
  await clock.advance(DEDUP_RETENTION_MS + 10_000);

  const asyncAt = await begin(world);
  await register(world, asyncAt, 'AT', 'orders:3');
  await coordinator.commit({ xid: asyncAt });

  const retried = await begin(world);
  const flaky = await register(world, retried, 'TCC', 'orders:4');
  gateway.script(flaky, BranchStatus.PhaseTwo_RollbackFailed_Retryable);
  await coordinator.rollback({ xid: retried });

  const failed = await begin(world);
  const broken = await register(world, failed, 'XA', 'orders:5');
  gateway.script(broken, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
  await coordinator.commit({ xid: failed });

  const stopped = await begin(world);
  const slow = await register(world, stopped, 'TCC', 'orders:6');
  gateway.script(slow, 'throw');
  await coordinator.commit({ xid: stopped });
  await coordinator.stopRetry({ xid: stopped });

  const halfFailed = await begin(world);
  await register(world, halfFailed, 'AT', 'orders:8');
  const localFailed = await register(world, halfFailed, 'AT', 'orders:9');
  await coordinator.branchReport({
    xid: halfFailed,
    branchId: localFailed,
    status: BranchStatus.PhaseOne_Failed,
  });
  await coordinator.rollback({ xid: halfFailed });

  const saga = await begin(world);
  const step = await register(world, saga, 'SAGA');
  await coordinator.branchReport({
    xid: saga,
    branchId: step,
    status: BranchStatus.PhaseOne_Done,
    applicationData: '{"s":1}',
  });

  await begin(world, 5_000); // will time out
  await coordinator.begin({
    applicationId: 'app',
    transactionServiceGroup: 'g',
    timeoutMs: 60_000,
    requestId: 'r-1',
  });
  await clock.advance(6_000);
  await coordinator.globalReport({ xid: saga, status: 'Committed' });
  // A new term: its driver acquires what an older term drove (AcquireDriver).
  world.store.setLeadership(true, 2);
  await coordinator.resumeRetry({ xid: stopped });
  await clock.advance(1_000);
  await coordinator.markResolved({ xid: failed, confirmXid: failed, operator: 'ops' });
  await coordinator.begin({
    applicationId: 'app',
    transactionServiceGroup: 'g',
    timeoutMs: 60_000,
    requestId: 'r-2',
  });
  return log;
}

function replay(
  commands: readonly Command[],
  machine = new CoordinatorStateMachine(),
): CoordinatorStateMachine {
  for (const command of commands) machine.apply(decodeCommand(encodeCommand(command)));
  return machine;
}

const equalBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** The machine's sliced snapshot, every step run. */
function sliced(machine: CoordinatorStateMachine): Uint8Array {
  const capture = machine.snapshotInSlices();
  for (;;) {
    const bytes = capture.step();
    if (bytes !== null) return bytes;
  }
}

/** What the machine's sliced snapshot reads, from its own snapshot's decoded data. */
function sourceOf(machine: CoordinatorStateMachine): SnapshotSource {
  const data = decodeSnapshot(machine.snapshot());
  return {
    version: SNAPSHOT_FORMAT_VERSION,
    dedupCount: data.dedup.length,
    dedupRows: (from, to) => data.dedup.slice(from, to),
    finishedCount: data.finished.length,
    finishedRows: (from, to) => data.finished.slice(from, to),
    sessionCount: data.sessions.length,
    sessionRows: (from, to) => data.sessions.slice(from, to),
    ...(data.commandTime !== undefined ? { commandTime: data.commandTime } : {}),
  };
}

/**
 * A capture started after `cut` commands of `log`, with `between` more commands applied
 * after each of its steps (and the rest after it): its bytes, snapshot() at the capture
 * point (the oracle), and the machine at the end.
 */
function captureWhileApplying(
  log: readonly Command[],
  cut: number,
  opts: { rows: number; between: number; retention?: Partial<RetentionLimits> },
): { bytes: Uint8Array; oracle: Uint8Array; machine: CoordinatorStateMachine } {
  const machine = replay(
    log.slice(0, cut),
    new CoordinatorStateMachine({ retention: opts.retention ?? {} }),
  );
  const oracle = machine.snapshot();
  const capture = machine.snapshotInSlices(opts.rows);
  expect(capture.appliesMeanwhile).toBe(true);
  let next = cut;
  let bytes: Uint8Array | null = null;
  while (bytes === null) {
    bytes = capture.step();
    for (let i = 0; i < opts.between && next < log.length; i++) machine.apply(log[next++]!);
    machine.checkInvariants();
  }
  replay(log.slice(next), machine);
  return { bytes, oracle, machine };
}

/** Tiny retention: finished records and remembered requests are forgotten as commands go. */
const FORGETFUL: Partial<RetentionLimits> = {
  dedupEntries: 4,
  dedupRetentionMs: 1,
  finishedEntries: 2,
  finishedRetentionMs: 1,
};

describe('snapshots', () => {
  it('the recorded scenario exercises every command kind', async () => {
    const kinds = new Set((await recordScenario()).map((c) => c.kind));
    expect([...kinds].sort()).toEqual([...COMMAND_KINDS].sort());
  });

  it('replicas that apply the same commands produce byte-identical snapshots, at every index', async () => {
    const log = await recordScenario();
    const a = new CoordinatorStateMachine();
    const b = new CoordinatorStateMachine();
    for (const command of log) {
      a.apply(command);
      b.apply(decodeCommand(encodeCommand(command)));
      expect(equalBytes(a.snapshot(), b.snapshot())).toBe(true);
    }
  });

  it("the sliced encode gives snapshot()'s bytes, at every index and for every slice size", async () => {
    const log = await recordScenario();
    const machine = new CoordinatorStateMachine();
    for (const command of log) {
      machine.apply(command);
      const whole = machine.snapshot();
      for (const rows of [1, 2, 1_000]) {
        const slices = encodeSnapshotInSlices(sourceOf(machine), rows);
        let r = slices.next();
        while (!r.done) r = slices.next();
        expect(equalBytes(r.value, whole)).toBe(true);
      }
      expect(equalBytes(sliced(machine), whole)).toBe(true);
    }
  });

  it("the sliced encode gives the same bytes past msgpack's 16-bit array length (70,000 sessions)", () => {
    const machine = new CoordinatorStateMachine();
    for (let i = 0; i < 70_000; i++) {
      const xid = `10.0.0.1:8091:${1_000_000 + i}`;
      const outcome = machine.apply({
        kind: 'Begin',
        xid,
        transactionId: String(1_000_000 + i),
        applicationId: 'app',
        transactionServiceGroup: 'g',
        name: 'n',
        timeoutMs: 3_600_000,
        beginTime: 1_000 + i,
        requestId: `r-${i}`,
        term: 1,
      } as Command);
      expect(outcome.ok).toBe(true);
    }
    const whole = machine.snapshot();
    const bytes = sliced(machine);
    expect(bytes.length).toBe(whole.length);
    expect(equalBytes(bytes, whole)).toBe(true);
    const restored = new CoordinatorStateMachine();
    restored.restore(bytes);
    expect(restored.liveSessionCount()).toBe(70_000);
  });

  it('a capture gives the bytes of snapshot() at its point while commands apply between its slices, at every point', async () => {
    const log = await recordScenario();
    for (const retention of [undefined, FORGETFUL]) {
      const full = replay(log, new CoordinatorStateMachine({ retention: retention ?? {} }));
      for (let cut = 0; cut <= log.length; cut++) {
        for (const [rows, between] of [
          [1, 1],
          [2, 3],
          [1_000, 1],
        ] as const) {
          const r = captureWhileApplying(log, cut, {
            rows,
            between,
            ...(retention ? { retention } : {}),
          });
          const what = `cut ${cut}, ${rows} rows a slice, ${between} commands a step, ${retention ? 'forgetful' : 'default retention'}`;
          expect(equalBytes(r.bytes, r.oracle), what).toBe(true);
          // The capture changed nothing of the state it let commands change meanwhile.
          expect(equalBytes(r.machine.snapshot(), full.snapshot()), what).toBe(true);
        }
      }
    }
  });

  it('a capture keeps sessions ended, finished records and requests forgotten after its point', async () => {
    const log = await recordScenario();
    // After the first commit: one session ended, the next ones begin and end while it runs.
    const cut = log.findIndex((c) => c.kind === 'CommitGlobal') + 1;
    const r = captureWhileApplying(log, cut, { rows: 1, between: 50, retention: FORGETFUL });
    expect(equalBytes(r.bytes, r.oracle)).toBe(true);
    const captured = decodeSnapshot(r.bytes);
    const now = decodeSnapshot(r.machine.snapshot());
    expect(captured).not.toEqual(now);
    const restored = new CoordinatorStateMachine({ retention: FORGETFUL });
    restored.restore(r.bytes);
    expect(equalBytes(restored.snapshot(), r.oracle)).toBe(true);
  });

  it('a restore, or another capture, ends the capture under way: its next step fails as a bug', async () => {
    const log = await recordScenario();
    const machine = replay(log);
    const capture = machine.snapshotInSlices(1);
    expect(capture.step()).toBeNull();
    machine.restore(machine.snapshot());
    expect(() => capture.step()).toThrow(AssertionFailure);
    const first = machine.snapshotInSlices(1);
    expect(first.step()).toBeNull();
    const second = machine.snapshotInSlices(1);
    expect(() => first.step()).toThrow(AssertionFailure);
    let bytes: Uint8Array | null = null;
    while (bytes === null) bytes = second.step();
    expect(equalBytes(bytes, machine.snapshot())).toBe(true);
  });

  it('restore then snapshot gives back the same bytes', async () => {
    const bytes = replay(await recordScenario()).snapshot();
    const restored = new CoordinatorStateMachine();
    restored.restore(bytes);
    expect(equalBytes(restored.snapshot(), bytes)).toBe(true);
  });

  it('a replica restored from a snapshot at any index, then fed the rest of the log, ends identical (replay equivalence)', async () => {
    const log = await recordScenario();
    const full = replay(log).snapshot();
    for (let cut = 0; cut <= log.length; cut += 3) {
      const restored = new CoordinatorStateMachine();
      restored.restore(replay(log.slice(0, cut)).snapshot());
      replay(log.slice(cut), restored);
      expect(equalBytes(restored.snapshot(), full), `cut at ${cut}`).toBe(true);
    }
  });

  it('a restored replica answers the same: dedup, locks and finished statuses survive', async () => {
    const log = await recordScenario();
    const original = replay(log);
    const restored = new CoordinatorStateMachine();
    restored.restore(original.snapshot());
    const begin = log.find((c) => c.kind === 'Begin' && c.requestId === 'r-1')!;
    expect(restored.apply({ ...begin, xid: '10.0.0.1:8091:999999' } as Command)).toEqual(
      original.apply({ ...begin, xid: '10.0.0.1:8091:999998' } as Command),
    );
    expect(restored.lockEntries()).toEqual(original.lockEntries());
    for (const xid of original.liveXids())
      expect(restored.getSession(xid)).toEqual(original.getSession(xid));
  });

  it('refuses a corrupt snapshot with StorageCorruptError and keeps its state', async () => {
    const machine = replay(await recordScenario());
    const before = machine.snapshot();
    expect(() => machine.restore(Uint8Array.from([0xc1]))).toThrow(StorageCorruptError);
    expect(() =>
      machine.restore(encodeCommand({ kind: 'AcquireDriver', xid: 'x', term: 1 })),
    ).toThrow(StorageCorruptError);
    expect(equalBytes(machine.snapshot(), before)).toBe(true);
  });

  it('treats undecodable log bytes as an assertion, not a request error', () => {
    expect(() => decodeCommand(Uint8Array.from([0xc1]))).toThrow(AssertionFailure);
    expect(() => decodeCommand(encodeCommand({ kind: 'Nope' } as unknown as Command))).toThrow(
      AssertionFailure,
    );
  });

  it('reads a snapshot of the keyed format 3 (written before format 4) into the same state', async () => {
    const original = replay(await recordScenario());
    const data = decodeSnapshot(original.snapshot());
    expect(data.version).toBe(SNAPSHOT_FORMAT_VERSION);
    // Format 3 as the previous version wrote it: every record a map, keys sorted.
    const keyed = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
    const format3 = Uint8Array.from(keyed.pack(canonical({ ...data, version: 3 })));
    const restored = new CoordinatorStateMachine();
    restored.restore(format3);
    expect(equalBytes(restored.snapshot(), original.snapshot())).toBe(true);
  });

  it('refuses format-4 rows of the wrong shape or type, naming the row, and keeps its state', async () => {
    const machine = replay(await recordScenario());
    const before = machine.snapshot();
    const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
    const raw = packr.unpack(before) as { sessions: unknown[][]; finished: unknown[][] };
    expect(raw.sessions.length).toBeGreaterThan(0);
    const tamper = (edit: (r: typeof raw) => void): Uint8Array => {
      const copy = structuredClone(raw);
      edit(copy);
      return Uint8Array.from(packr.pack(copy));
    };
    const bad: Array<[string, Uint8Array]> = [
      ['a short session row', tamper((r) => r.sessions[0]!.pop())],
      ['a number where the xid is', tamper((r) => (r.sessions[0]![0] = 7))],
      ['an unknown status', tamper((r) => (r.sessions[0]![8] = 'Nope'))],
      ['a fractional time', tamper((r) => (r.sessions[0]![6] = 1.5))],
      ['branches that are not a list', tamper((r) => (r.sessions[0]![15] = 'x'))],
      ['a malformed branch row', tamper((r) => (r.sessions[0]![15] = [[1, 2]]))],
      ['a finished row of the wrong length', tamper((r) => r.finished.push(['x']))],
    ];
    for (const [what, bytes] of bad)
      expect(() => machine.restore(bytes), what).toThrow(StorageCorruptError);
    expect(equalBytes(machine.snapshot(), before)).toBe(true);
  });
});
