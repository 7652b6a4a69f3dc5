/**
 * Deliberately broken cores, for negative tests only: they prove the invariant checkers
 * catch the bug they guard against. The real core is not touched; a mutant wraps it and
 * rewrites what its Readies say.
 */
import { RaftCore } from '../../src/raft/core/raft.ts';
import type {
  ConfChange,
  Entry,
  Message,
  NodeId,
  Ready,
  SnapshotRef,
  SnapshotMeta,
  Status,
  Unblocked,
} from '../../src/raft/core/types.ts';
import type { RaftCoreApi } from '../../src/raft/driver.ts';

/**
 * Figure 8's bug: a leader that commits an entry of an OLDER term as soon as a majority
 * holds it (the real rule commits only entries of the leader's own term by counting
 * replicas). The leader then applies such entries and acknowledges them, although a later
 * leader may overwrite them.
 */
export class OldTermCommitMutant implements RaftCoreApi {
  private fakeCommit = 0;
  /** Highest index handed out as committed. */
  private delivered = 0;
  private readonly originals = new WeakMap<Ready, Ready>();
  /** How many voters (beyond a majority, or fewer) count as a quorum: 0 = a true majority. */
  protected quorumShift = 0;
  constructor(readonly inner: RaftCoreApi) {}

  private entryAt(index: number): Entry | undefined {
    return (this.inner as unknown as RaftCore).log.entry(index);
  }

  private quorumMatch(st: Status): number {
    if (st.role !== 'leader' || !st.progress) return 0;
    const matches = st.conf.voters
      .map((v) => (v === st.id ? st.lastIndex : (st.progress?.[v]?.match ?? 0)))
      .sort((a, b) => b - a);
    return matches[Math.max(0, Math.floor(st.conf.voters.length / 2) + this.quorumShift)] ?? 0;
  }

  hasReady(): boolean {
    if (this.inner.hasReady()) return true;
    const st = this.inner.status();
    return Math.max(this.quorumMatch(st), this.fakeCommit) > Math.max(this.delivered, st.commit);
  }

  ready(): Ready {
    const rd = this.inner.ready();
    const st = this.inner.status();
    const q = this.quorumMatch(st);
    if (q > this.fakeCommit && q > st.commit) this.fakeCommit = q;
    const commit = Math.max(st.commit, this.fakeCommit);
    const committed: Entry[] = rd.committedEntries.filter((e) => e.index > this.delivered);
    let next = (committed.at(-1)?.index ?? this.delivered) + 1;
    if (committed.length === 0) next = Math.max(this.delivered, st.applied) + 1;
    for (; next <= commit; next++) {
      const e = this.entryAt(next);
      if (!e) break;
      committed.push(e);
    }
    const last = committed.at(-1);
    if (last) this.delivered = Math.max(this.delivered, last.index);
    const hard =
      rd.hardState ?? (commit > st.commit ? { term: st.term, vote: st.vote, commit } : null);
    const out: Ready = {
      ...rd,
      hardState: hard ? { ...hard, commit: Math.max(hard.commit, commit) } : null,
      committedEntries: committed,
    };
    this.originals.set(out, rd);
    return out;
  }

  advance(rd: Ready): void {
    this.inner.advance(this.originals.get(rd) ?? rd);
  }

  tick(): void {
    this.inner.tick();
  }
  step(m: Message): void {
    this.inner.step(m);
  }
  propose(data: Uint8Array): { index: number; term: number } {
    return this.inner.propose(data);
  }
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    return this.inner.proposeConfChange(cc);
  }
  transferLeadership(to: NodeId): void {
    this.inner.transferLeadership(to);
  }
  readIndex(ctx: string): void {
    this.inner.readIndex(ctx);
  }
  leaseReadIndex(): number | null {
    return this.inner.leaseReadIndex();
  }
  takeUnblocked(opts?: { committed?: boolean; appends?: boolean }): Unblocked {
    const out = this.inner.takeUnblocked(opts);
    // What this mutant's Readies handed out already (its fake commits) is not handed again.
    const committedEntries = out.committedEntries.filter((e) => e.index > this.delivered);
    const last = committedEntries.at(-1);
    if (last) this.delivered = last.index;
    return {
      ...out,
      committedEntries,
      commit: Math.max(out.commit, this.fakeCommit),
    };
  }
  campaign(): void {
    this.inner.campaign();
  }
  compact(snapshot: SnapshotRef): void {
    this.inner.compact(snapshot);
  }
  snapshotMeta(index: number): SnapshotMeta {
    return this.inner.snapshotMeta(index);
  }
  status(): Status {
    const st = this.inner.status();
    return {
      ...st,
      commit: Math.max(st.commit, this.fakeCommit),
      applied: Math.max(st.applied, this.delivered),
    };
  }
}

/**
 * A cruder break of the commit rule: the leader counts one voter fewer than a majority
 * (with three voters, itself alone) as a quorum. Random schedules catch it quickly.
 */
export class MinorityCommitMutant extends OldTermCommitMutant {
  constructor(inner: RaftCoreApi) {
    super(inner);
    this.quorumShift = -1;
  }
}

/**
 * A leader that counts itself at its LAST index, entries still in its pending write
 * included, instead of at its durable index (`log.stable`). With appends pipelined and
 * committed entries applied before the leader's own write ends, it acknowledges an entry
 * that one follower and its own unsynced write hold: a crash of the leader then leaves it
 * on a single disk. The real core is patched on this instance only (its private commit rule).
 */
export function countUnsyncedSelf(core: RaftCoreApi): RaftCoreApi {
  const raw = core as unknown as {
    log: { stable: number; lastIndex(): number };
    maybeCommit(): boolean;
  };
  const real = raw.maybeCommit;
  raw.maybeCommit = function (this: typeof raw): boolean {
    const stable = this.log.stable;
    this.log.stable = this.log.lastIndex();
    try {
      return real.call(this);
    } finally {
      this.log.stable = stable;
    }
  };
  return core;
}
