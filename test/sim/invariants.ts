/**
 * Raft safety invariants, checked against observations of a running cluster. This module
 * knows nothing of the fake world: the simulator (test/sim/world.ts) and the scenario
 * harness (test/raft/harness.ts) feed it what they see — messages leaving a node, disk
 * writes and syncs, Readies, state-machine applies, client acknowledgements — and call
 * afterStep() after every step. The first violation is recorded (never thrown into the
 * code under test, where a driver could swallow it) and read with `violation`.
 *
 * Invariants:
 *  - election-safety         at most one leader per term, over the whole run
 *  - log-matching            same (index, term) ⇒ same entry and same term before it, hence the
 *                            same prefix; over every log ever written (crashed nodes' too) and
 *                            every append message sent
 *  - leader-completeness     every committed entry is in the log of every leader of a later term
 *  - state-machine-safety    every node applies the same entry at the same index, in increasing
 *                            order, never twice, never past what its core handed out as
 *                            committed; restored snapshots equal what the others applied (an
 *                            entry may be applied before it is on the node's own disk: it is
 *                            durable on a quorum, which commit-durable checks)
 *  - commit-durable          an entry is first reported committed only once a majority of the
 *                            voters the leader counted it over (its configuration when its
 *                            commit index moved over the entry) hold it on their SYNCED disks
 *                            (its index and term, or a snapshot covering it): a leader counts
 *                            only its durable log (Raft thesis §10.2.1)
 *  - commit-monotonic        commit index never decreases (per incarnation, and on disk), is never
 *                            below the durable one
 *  - acked-not-lost          an acknowledged proposal is committed at its index, and every later
 *                            state machine holds it
 *  - vote-once               a node grants at most one vote per term, across restarts; the durable
 *                            vote never changes within a term
 *  - persist-before-send     a vote grant, an append acknowledgement, and any message of term T
 *                            leave only once the node's SYNCED disk holds what they promise
 *  - read-linearizable       a read completes only on state that includes every write
 *                            acknowledged before the read began
 *  - bounds                  network queues, in-flight windows, pending requests stay bounded
 *  - peers-follow-membership a request leaves only for a peer the transport's address book holds
 */
import type {
  Entry,
  HardState,
  Message,
  NodeId,
  Ready,
  Status,
} from '../../src/raft/core/types.ts';
import type { PersistBatch } from '../../src/raft/ports.ts';

export type InvariantName =
  | 'election-safety'
  | 'log-matching'
  | 'leader-completeness'
  | 'state-machine-safety'
  | 'commit-durable'
  | 'commit-monotonic'
  | 'acked-not-lost'
  | 'vote-once'
  | 'persist-before-send'
  | 'read-linearizable'
  | 'bounds'
  | 'peers-follow-membership'
  | 'liveness'
  | 'driver-assertion'
  // The coordinator mode (test/sim/coordinator/): Seata's invariants.
  | 'decision-final'
  | 'branch-try-first'
  | 'row-lock-holders'
  | 'acked-survives'
  | 'coordinator-state'
  | 'coordinator-liveness'
  // An end state moved: a final one at all, a failed one other than by an operator's resume
  // to its matching driving status.
  | 'end-state-moves';

export interface Violation {
  invariant: InvariantName;
  message: string;
}

/**
 * What a checker may read of one node's disk. `synced` survives a crash; `written` includes
 * unsynced writes.
 */
export interface DiskView {
  synced: LogView;
  written: LogView;
}

export interface LogView {
  hardState(): HardState;
  /** Last index held (snapshot index if the log is empty after it). */
  lastIndex(): number;
  snapshotIndex(): number;
  /**
   * Term at index: the snapshot's term at its index, undefined if compacted away or beyond the end.
   */
  termAt(index: number): number | undefined;
}

/** One node as seen after a step. */
export interface NodeObservation {
  id: NodeId;
  incarnation: number;
  up: boolean;
  status: (Status & { pendingProposals: number; pendingReads: number }) | null;
  disk: DiskView;
}

export interface Limits {
  maxInflightMsgs: number;
  maxPendingProposals: number;
  maxPendingReads: number;
  /** Per-link network queue capacity. */
  maxQueueLength: number;
}

const LEADER_TYPES = new Set<Message['type']>(['app', 'heartbeat', 'snap', 'timeoutNow']);
const REQUEST_TYPES = new Set<Message['type']>([
  'app',
  'heartbeat',
  'snap',
  'timeoutNow',
  'vote',
  'preVote',
]);

/** A stable key for an entry's content (not its position). */
export function entryKey(e: Entry): string {
  if (e.type === 'normal') return e.data.length === 0 ? 'noop' : `n:${bytesKey(e.data)}`;
  const c = e.change;
  return `c:${c.type}:${c.nodeId}:${c.type === 'removeNode' ? '' : c.context}`;
}

export function bytesKey(data: Uint8Array): string {
  let s = '';
  for (let i = 0; i < data.length; i++) s += String.fromCharCode(data[i] as number);
  return s;
}

/** (index, term) packed in one number: terms stay far below 2^20 in any run. */
function it(index: number, term: number): number {
  return index * 1_048_576 + term;
}

interface LeaderRecord {
  term: number;
  leader: NodeId;
  /**
   * Index of the leader's first entry of its term (its no-op). Its log before it was frozen then.
   */
  firstIndex: number;
  /** Terms of the leader's log at [knownFrom, firstIndex - 1]; below knownFrom it was compacted. */
  knownFrom: number;
  terms: Int32Array;
}

/** What commit-durable reads (InvariantChecker.quorumView). */
export interface QuorumView {
  voters: readonly NodeId[];
  leaderVoters?: readonly NodeId[];
  disk: (v: NodeId) => DiskView | undefined;
}

export class InvariantChecker {
  private first: Violation | null = null;
  readonly limits: Limits;

  // election-safety
  private readonly leaderOfTerm = new Map<number, NodeId>();
  // log-matching: (index, term) → content and previous term
  private readonly logEntries = new Map<number, { key: string; prevTerm: number }>();
  // committed entries, as the cores report them: index → term, content, and an upper bound
  // of the term in which the entry was committed (the reporter's current term)
  private readonly committed = new Map<number, { term: number; key: string; commitTerm: number }>();
  // each node's current term as far as its Readies tell
  private readonly nodeTerm = new Map<NodeId, number>();
  private maxTermSeen = 0;
  private readonly leaderRecords = new Map<number, LeaderRecord>();
  // state machine: index → applied content and state hash; content → index
  private readonly appliedAt = new Map<number, string>();
  private readonly hashAt = new Map<number, number>();
  private readonly indexOfPayload = new Map<string, number>();
  private readonly lastApplied = new Map<string, number>(); // per incarnation "id#inc"
  // for commit-durable: index → the voters of the leader whose commit index first covered it
  private readonly commitVoters = new Map<number, readonly NodeId[]>();
  // the highest index each node's core handed out as committed (since its last start)
  private readonly handedCommitted = new Map<NodeId, number>();
  // commits
  private readonly lastCommit = new Map<string, number>(); // per incarnation
  // votes
  private readonly grants = new Map<string, NodeId>(); // "id|term" → candidate
  // acks
  private readonly acked = new Map<number, string>();
  private maxAckedIndex = 0;
  // reads: ReadIndex ctx → highest acknowledged index when the read was requested
  private readonly readMustSee = new Map<string, number>();

  /** Invariants whose violations are not recorded (negative tests isolate one checker this way). */
  private readonly ignored: ReadonlySet<InvariantName>;

  /**
   * The same entry bytes may be committed at two indexes (the coordinator mode: a command
   * proposed again is the same bytes; apply decides it); off, a repeat is a re-applied entry.
   */
  repeatedPayloadsAllowed = false;

  /**
   * For commit-durable: the voters of `id`'s configuration, and of its leader's (the one
   * that decided the commit: a follower may learn a commit index before the conf entry the
   * leader counted it under, effective on append), and every node's disk. The entry must
   * be durable on a majority of one of them. Unset (the scenario harness), the check is off.
   */
  quorumView: ((id: NodeId) => QuorumView | null) | null = null;

  constructor(limits: Limits, ignore: readonly InvariantName[] = []) {
    this.limits = limits;
    this.ignored = new Set(ignore);
  }

  get violation(): Violation | null {
    return this.first;
  }

  get ackedCount(): number {
    return this.acked.size;
  }

  get highestAckedIndex(): number {
    return this.maxAckedIndex;
  }

  /** Records a violation (the first one wins). Public so that harnesses can report their own. */
  report(invariant: InvariantName, message: string): void {
    if (this.first === null && !this.ignored.has(invariant)) this.first = { invariant, message };
  }

  // ------------------------------------------------------------------ election safety

  private noteLeader(term: number, id: NodeId, how: string): void {
    const known = this.leaderOfTerm.get(term);
    if (known === undefined) this.leaderOfTerm.set(term, id);
    else if (known !== id)
      this.report(
        'election-safety',
        `two leaders in term ${term}: ${known} and ${id} (seen via ${how})`,
      );
  }

  leaderOf(term: number): NodeId | undefined {
    return this.leaderOfTerm.get(term);
  }

  // ------------------------------------------------------------------ observations

  /** A core handed out a Ready (before the driver acts on it). */
  onReady(id: NodeId, rd: Ready): void {
    const t = Math.max(rd.hardState?.term ?? 0, rd.softState?.term ?? 0);
    if (t > 0) this.noteTerm(id, t);
    if (rd.softState?.role === 'leader') this.noteLeader(rd.softState.term, id, 'soft state');
    for (const m of [...rd.messages, ...rd.messagesAfterPersist])
      if (LEADER_TYPES.has(m.type)) this.noteLeader(m.term, m.from, `${m.type} message`);
    for (const e of rd.committedEntries) this.noteCommitted(id, e);
    const lastCommitted = rd.committedEntries.at(-1);
    if (lastCommitted && lastCommitted.index > (this.handedCommitted.get(id) ?? 0))
      this.handedCommitted.set(id, lastCommitted.index);
    for (const rs of rd.readStates) {
      const must = this.readMustSee.get(rs.ctx);
      if (must === undefined) continue;
      this.readMustSee.delete(rs.ctx);
      if (rs.index < must)
        this.report(
          'read-linearizable',
          `${id} answered read ${rs.ctx} with read index ${rs.index}, below write ${must} acknowledged before the read began`,
        );
    }
  }

  /**
   * A ReadIndex request entered a core: its read index must cover every write acknowledged so far.
   */
  onReadIndexRequest(ctx: string): void {
    this.readMustSee.set(ctx, this.maxAckedIndex);
  }

  /** The node's current term (a Ready, or its durable state at start). */
  noteTerm(id: NodeId, term: number): void {
    if (term > (this.nodeTerm.get(id) ?? -1)) this.nodeTerm.set(id, term);
    if (term > this.maxTermSeen) this.maxTermSeen = term;
  }

  private noteCommitted(id: NodeId, e: Entry): void {
    const key = entryKey(e);
    const known = this.committed.get(e.index);
    // The entry was committed in a term ≤ the reporter's current term.
    const commitTerm = this.nodeTerm.get(id) ?? this.maxTermSeen;
    if (known === undefined) {
      this.checkDurableOnQuorum(id, e);
      this.committed.set(e.index, { term: e.term, key, commitTerm });
      // Retroactively: every leader of a term after the commit must hold it.
      for (const rec of this.leaderRecords.values())
        this.checkLeaderHas(rec, e.index, e.term, commitTerm);
    } else if (known.term === e.term && known.key === key) {
      if (commitTerm < known.commitTerm) {
        known.commitTerm = commitTerm;
        for (const rec of this.leaderRecords.values())
          this.checkLeaderHas(rec, e.index, e.term, commitTerm);
      }
    } else {
      this.report(
        'state-machine-safety',
        `${id} committed ${describe(e)} at index ${e.index}, but ${known.key}@t${known.term} was committed there before`,
      );
    }
  }

  /**
   * A leader's commit index moved over (from, to], counted over `voters`: the configuration
   * commit-durable checks those entries against (the first leader to cover an index wins).
   */
  onLeaderCommit(from: number, to: number, voters: readonly NodeId[]): void {
    for (let i = from + 1; i <= to; i++)
      if (!this.commitVoters.has(i)) this.commitVoters.set(i, voters);
  }

  /** commit-durable: `id` reports `e` committed for the first time. */
  private checkDurableOnQuorum(id: NodeId, e: Entry): void {
    const view = this.quorumView?.(id);
    if (!view || view.voters.length === 0) return;
    const holds = (v: NodeId): boolean => {
      const synced = view.disk(v)?.synced;
      return !!synced && (synced.snapshotIndex() >= e.index || synced.termAt(e.index) === e.term);
    };
    const durableOn = (voters: readonly NodeId[]): boolean =>
      voters.filter(holds).length >= Math.floor(voters.length / 2) + 1;
    // The configuration the leader counted it under, when known; else the reporter's or its
    // leader's now.
    const decided = this.commitVoters.get(e.index);
    if (
      decided
        ? durableOn(decided)
        : durableOn(view.voters) || (view.leaderVoters && durableOn(view.leaderVoters))
    )
      return;
    this.report(
      'commit-durable',
      `${id} reported ${describe(e)} at ${e.index}@t${e.term} committed, but only [${(decided ?? view.voters).filter(holds).join(', ')}] of voters [${(decided ?? view.voters).join(', ')}] hold it on a synced disk`,
    );
  }

  private checkLeaderHas(rec: LeaderRecord, index: number, term: number, commitTerm: number): void {
    // Leader completeness: an entry committed in term U is in the log of every leader of a term >
    // U.
    if (rec.term <= commitTerm) return;
    if (index >= rec.firstIndex) {
      this.report(
        'leader-completeness',
        `entry ${index}@t${term}, committed by term ${commitTerm}, is missing from the log of the leader of term ${rec.term} (${rec.leader}), which started its term at index ${rec.firstIndex}`,
      );
      return;
    }
    if (index < rec.knownFrom) return; // compacted on the leader: state-machine-safety covers it
    const t = rec.terms[index - rec.knownFrom];
    if (t !== term) {
      this.report(
        'leader-completeness',
        `entry ${index}@t${term}, committed by term ${commitTerm}, is missing from the log of the leader of term ${rec.term} (${rec.leader}), which holds term ${t} at index ${index}`,
      );
    }
  }

  /** A message leaves `from` (intercepted in the transport, before the network). */
  onSend(
    from: NodeId,
    m: Message,
    disk: DiskView,
    unaddressedMember: ((to: NodeId) => boolean) | null = null,
  ): void {
    if (m.from !== from) this.report('bounds', `${from} sent a message stamped from ${m.from}`);
    // A request to a member of the sender's current configuration must find the member in
    // the transport's address book. (Responses answer whoever asked; a request queued just
    // before its target was removed may go nowhere.)
    if (unaddressedMember && REQUEST_TYPES.has(m.type) && unaddressedMember(m.to)) {
      this.report(
        'peers-follow-membership',
        `${from} sent ${m.type} to ${m.to}, which its transport's address book does not hold`,
      );
    }
    if (LEADER_TYPES.has(m.type)) this.noteLeader(m.term, from, `sent ${m.type}`);
    if (m.type !== 'preVote' && m.type !== 'preVoteResp') this.noteTerm(from, m.term);

    if (m.type !== 'preVote' && m.type !== 'preVoteResp') {
      const durableTerm = disk.synced.hardState().term;
      if (durableTerm < m.term) {
        this.report(
          'persist-before-send',
          `${from} sent ${m.type} of term ${m.term} to ${m.to} while its synced term is ${durableTerm}`,
        );
      }
    }
    if (m.type === 'voteResp' && !m.reject) {
      const k = `${from}|${m.term}`;
      const before = this.grants.get(k);
      if (before !== undefined && before !== m.to)
        this.report(
          'vote-once',
          `${from} granted its vote in term ${m.term} to ${before} and to ${m.to}`,
        );
      this.grants.set(k, m.to);
      const hs = disk.synced.hardState();
      if (hs.term !== m.term || hs.vote !== m.to) {
        this.report(
          'persist-before-send',
          `${from} granted its vote in term ${m.term} to ${m.to} but its synced hard state is term ${hs.term} vote ${hs.vote}`,
        );
      }
    }
    if (m.type === 'appResp' && !m.reject) {
      const s = disk.synced;
      if (s.lastIndex() < m.index) {
        this.report(
          'persist-before-send',
          `${from} acknowledged entries up to ${m.index} (term ${m.term}) but its synced log ends at ${s.lastIndex()}`,
        );
      } else {
        const syncedTerm = s.termAt(m.index);
        const writtenTerm = disk.written.termAt(m.index);
        if (syncedTerm !== undefined && writtenTerm !== undefined && syncedTerm !== writtenTerm) {
          this.report(
            'persist-before-send',
            `${from} acknowledged index ${m.index} holding term ${writtenTerm}, but its synced log has term ${syncedTerm} there`,
          );
        }
      }
    }
    if (m.type === 'app')
      this.registerChain(from, m.prevIndex, m.prevTerm, m.entries, 'append message');
  }

  /** A node wrote a batch (not yet synced); `disk.written` already includes it. */
  onWrite(
    id: NodeId,
    batch: PersistBatch,
    disk: DiskView,
    prevTermOfFirst: number | undefined,
  ): void {
    const first = batch.entries[0];
    if (first) {
      this.registerChain(id, first.index - 1, prevTermOfFirst, batch.entries, 'disk write');
      // Leader completeness: the first entry a leader writes in its term is its no-op; its log
      // before it is fixed.
      for (const e of batch.entries) {
        if (this.leaderOfTerm.get(e.term) !== id || this.leaderRecords.has(e.term)) continue;
        const w = disk.written;
        const knownFrom = w.snapshotIndex() + 1;
        const terms = new Int32Array(Math.max(0, e.index - knownFrom));
        for (let i = knownFrom; i < e.index; i++) terms[i - knownFrom] = w.termAt(i) ?? -1;
        const rec: LeaderRecord = {
          term: e.term,
          leader: id,
          firstIndex: e.index,
          knownFrom,
          terms,
        };
        this.leaderRecords.set(e.term, rec);
        for (const [index, c] of this.committed)
          this.checkLeaderHas(rec, index, c.term, c.commitTerm);
        break;
      }
    }
  }

  private registerChain(
    id: NodeId,
    prevIndex: number,
    prevTerm: number | undefined,
    entries: readonly Entry[],
    where: string,
  ): void {
    let prev = prevTerm;
    let expectIndex = prevIndex + 1;
    for (const e of entries) {
      if (e.index !== expectIndex) {
        this.report(
          'log-matching',
          `${id}: ${where} entries not contiguous (${e.index} after ${expectIndex - 1})`,
        );
        return;
      }
      if (prev !== undefined && e.term < prev) {
        this.report(
          'log-matching',
          `${id}: ${where} has term ${e.term} at ${e.index} after term ${prev}: terms must not decrease along a log`,
        );
      }
      const key = entryKey(e);
      const k = it(e.index, e.term);
      const known = this.logEntries.get(k);
      if (known === undefined) {
        this.logEntries.set(k, { key, prevTerm: prev ?? -1 });
      } else {
        if (known.key !== key)
          this.report(
            'log-matching',
            `${id}: ${where} holds ${key} at ${e.index}@t${e.term}, another log holds ${known.key}`,
          );
        else if (prev !== undefined && known.prevTerm !== -1 && known.prevTerm !== prev) {
          this.report(
            'log-matching',
            `${id}: ${where} has term ${prev} before ${e.index}@t${e.term}, another log has term ${known.prevTerm}`,
          );
        } else if (known.prevTerm === -1 && prev !== undefined) known.prevTerm = prev;
      }
      prev = e.term;
      expectIndex++;
    }
  }

  /** The synced state of a node's disk changed. */
  onSync(id: NodeId, before: HardState, after: HardState): void {
    if (after.term < before.term)
      this.report(
        'commit-monotonic',
        `${id}: durable term went back ${before.term} → ${after.term}`,
      );
    if (after.commit < before.commit)
      this.report(
        'commit-monotonic',
        `${id}: durable commit index went back ${before.commit} → ${after.commit}`,
      );
    if (after.term === before.term && before.vote !== null && after.vote !== before.vote) {
      this.report(
        'vote-once',
        `${id}: durable vote changed within term ${after.term}: ${before.vote} → ${after.vote}`,
      );
    }
  }

  /** A new incarnation of a node started (it has loaded its disk). */
  onStart(id: NodeId, incarnation: number, disk: DiskView): void {
    this.noteTerm(id, disk.synced.hardState().term);
    // afterStep then checks the new incarnation's commit index against the durable one.
    this.lastCommit.set(`${id}#${incarnation}`, disk.synced.hardState().commit);
    this.lastApplied.set(`${id}#${incarnation}`, disk.synced.snapshotIndex());
    this.handedCommitted.delete(id);
  }

  /** The state machine of `id` applied one entry's data; `hash` is its state hash after it. */
  onApply(
    id: NodeId,
    incarnation: number,
    index: number,
    payload: string,
    hash: number,
    disk: DiskView,
  ): void {
    const inc = `${id}#${incarnation}`;
    const last = this.lastApplied.get(inc) ?? 0;
    if (index <= last)
      this.report('state-machine-safety', `${inc} applied index ${index} after ${last}`);
    this.lastApplied.set(inc, index);
    // Not "never past its synced log": a committed entry may be applied before this node's
    // own write of it ends (a quorum holds it: commit-durable). What bounds an apply is the
    // commit index its core handed out.
    const handed = this.handedCommitted.get(id) ?? 0;
    if (index > handed && index > disk.synced.snapshotIndex())
      this.report(
        'state-machine-safety',
        `${inc} applied index ${index} beyond what its core handed out as committed (${handed})`,
      );
    const c = this.committed.get(index);
    if (c === undefined)
      this.report(
        'state-machine-safety',
        `${inc} applied index ${index} that no core reported committed`,
      );
    else if (c.key !== `n:${payload}`)
      this.report(
        'state-machine-safety',
        `${inc} applied ${payload} at ${index}, but ${c.key} is committed there`,
      );
    const known = this.appliedAt.get(index);
    if (known === undefined) {
      this.appliedAt.set(index, payload);
      this.hashAt.set(index, hash);
      const at = this.indexOfPayload.get(payload);
      if (at !== undefined && at !== index && !this.repeatedPayloadsAllowed)
        this.report(
          'state-machine-safety',
          `payload ${payload} applied at ${at} and again at ${index}`,
        );
      this.indexOfPayload.set(payload, index);
    } else if (known !== payload) {
      this.report(
        'state-machine-safety',
        `${inc} applied ${payload} at ${index}, another node applied ${known}`,
      );
    } else if (this.hashAt.get(index) !== hash) {
      this.report(
        'state-machine-safety',
        `${inc} reached state ${hash} at ${index}, another node reached ${this.hashAt.get(index)} (an earlier entry was skipped or applied differently)`,
      );
    }
  }

  /**
   * The state machine of `id` restored a snapshot taken at `index`; its state is that after
   * applying `stateIndex`.
   */
  onRestore(
    id: NodeId,
    incarnation: number,
    index: number,
    stateIndex: number,
    hash: number,
  ): void {
    const inc = `${id}#${incarnation}`;
    if (stateIndex > index)
      this.report(
        'state-machine-safety',
        `${inc} restored a snapshot at ${index} holding state of ${stateIndex}`,
      );
    if (stateIndex > 0) {
      const known = this.hashAt.get(stateIndex);
      if (known === undefined)
        this.report(
          'state-machine-safety',
          `${inc} restored state of index ${stateIndex} that no node applied`,
        );
      else if (known !== hash)
        this.report(
          'state-machine-safety',
          `${inc} restored state ${hash} at ${stateIndex}, the others hold ${known}`,
        );
    }
    const last = this.lastApplied.get(inc) ?? 0;
    if (index < last)
      this.report(
        'state-machine-safety',
        `${inc} restored a snapshot at ${index} after applying ${last}`,
      );
    this.lastApplied.set(inc, index);
  }

  /** A client was told its proposal was applied at `index`. */
  onAck(index: number, payload: string): void {
    const c = this.committed.get(index);
    if (c === undefined || c.key !== `n:${payload}`) {
      this.report(
        'acked-not-lost',
        `proposal ${payload} acknowledged at ${index} but ${c ? c.key : 'nothing'} is committed there`,
      );
    }
    this.acked.set(index, payload);
    if (index > this.maxAckedIndex) this.maxAckedIndex = index;
  }

  /**
   * A linearizable read completed on `id` whose applied index is `applied`; `mustSee` is the
   * highest acked index when it began.
   */
  onReadDone(id: NodeId, applied: number, mustSee: number): void {
    if (applied < mustSee)
      this.report(
        'read-linearizable',
        `read on ${id} completed at applied ${applied}, but a write at ${mustSee} was acknowledged before it began`,
      );
  }

  /** After every step: the whole cluster. */
  afterStep(nodes: readonly NodeObservation[], queueLengths: Iterable<number>): void {
    for (const n of nodes) {
      if (!n.up || n.status === null) continue;
      const st = n.status;
      const inc = `${n.id}#${n.incarnation}`;
      if (st.role === 'leader') this.noteLeader(st.term, n.id, 'status');
      const prev = this.lastCommit.get(inc) ?? 0;
      if (st.commit < prev)
        this.report('commit-monotonic', `${inc}: commit index went back ${prev} → ${st.commit}`);
      this.lastCommit.set(inc, st.commit);
      const durable = n.disk.synced.hardState().commit;
      if (st.commit < durable)
        this.report(
          'commit-monotonic',
          `${inc}: commit index ${st.commit} below its durable commit ${durable}`,
        );
      if (st.progress) {
        for (const [peer, pr] of Object.entries(st.progress)) {
          if (pr.inflight > this.limits.maxInflightMsgs)
            this.report(
              'bounds',
              `${n.id}: ${pr.inflight} appends in flight to ${peer} (max ${this.limits.maxInflightMsgs})`,
            );
        }
      }
      if (st.pendingProposals > this.limits.maxPendingProposals)
        this.report(
          'bounds',
          `${n.id}: ${st.pendingProposals} pending proposals (max ${this.limits.maxPendingProposals})`,
        );
      if (st.pendingReads > this.limits.maxPendingReads)
        this.report(
          'bounds',
          `${n.id}: ${st.pendingReads} pending reads (max ${this.limits.maxPendingReads})`,
        );
    }
    for (const len of queueLengths) {
      if (len > this.limits.maxQueueLength)
        this.report(
          'bounds',
          `a network queue holds ${len} messages (max ${this.limits.maxQueueLength})`,
        );
    }
  }

  /**
   * At the end of a run: `id`'s state machine, which applied up to `stateIndex` with state
   * `hash`, must hold every acknowledged write at or below `applied`.
   */
  checkHoldsAcked(id: NodeId, applied: number, stateIndex: number, hash: number): void {
    for (const [index, payload] of this.acked) {
      if (index > applied)
        this.report(
          'acked-not-lost',
          `${id} applied only up to ${applied}, below acknowledged write ${payload} at ${index}`,
        );
      else if (this.appliedAt.get(index) !== payload)
        this.report(
          'acked-not-lost',
          `acknowledged write ${payload} at ${index} is not what was applied there (${this.appliedAt.get(index)})`,
        );
    }
    if (stateIndex > 0 && this.hashAt.get(stateIndex) !== hash)
      this.report(
        'acked-not-lost',
        `${id}'s final state ${hash} at ${stateIndex} differs from the applied history (${this.hashAt.get(stateIndex)})`,
      );
  }
}

function describe(e: Entry): string {
  return `${entryKey(e)}@t${e.term}`;
}
