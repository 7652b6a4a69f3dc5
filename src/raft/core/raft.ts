import {
  BadRequestError,
  ChangeInProgressError,
  NotLeaderError,
  ProposalDroppedError,
  assert,
} from '../../shared/errors.ts';
import { MAX_PENDING_READS, entrySize, validateRaftConfig } from './config.ts';
import { applyConfChange, cloneConf, confChangeError, isMember } from './confchange.ts';
import { RaftLog } from './log.ts';
import { Progress } from './progress.ts';
import { committedIndex, quorumSize, voteResult } from './quorum.ts';
import type {
  ConfChange,
  ConfState,
  DurableState,
  Entry,
  HardState,
  Message,
  NodeId,
  RaftConfig,
  ReadState,
  Ready,
  Role,
  Snapshot,
  SnapshotChunkSend,
  SnapshotMeta,
  SnapshotRef,
  SoftState,
  Status,
  Unblocked,
} from './types.ts';

/**
 * Messages that may leave before the round's write, given a durable term (mayLeaveBeforePersist).
 */
const EARLY_MESSAGE_TYPES: ReadonlySet<Message['type']> = new Set([
  'app',
  'heartbeat',
  'timeoutNow',
  // A heartbeat's answer promises only that this node heard the leader of its term.
  'heartbeatResp',
]);

type MessageOf<T extends Message['type']> = Extract<Message, { type: T }>;
/** A message before `from`/`term` are stamped by send(). */
type Outgoing = {
  [T in Message['type']]: Omit<MessageOf<T>, 'from' | 'term'> & { term?: number };
}[Message['type']];

interface PendingRead {
  ctx: string;
  index: number;
  acks: Set<NodeId>;
}

/** A snapshot being received chunk by chunk. */
interface IncomingSnapshot {
  index: number;
  term: number;
  chunks: Uint8Array[];
  bytes: number;
  /** The leader's CRC-32 of the whole data, from the chunks' messages (if they carry one). */
  crc: number | undefined;
}

/**
 * The Raft consensus core: a pure, deterministic state machine. It reads no clock, no
 * disk, no network and no global randomness. The caller feeds it `tick()`, `step()` and
 * proposals, takes a `Ready` (what to persist, send and apply) and reports back with
 * `advance()`. See types.ts for the order the caller must follow.
 *
 * Membership: single-server changes, effective on append (thesis §4.1), one at a time,
 * and none before the leader has committed an entry of its own term (the fix for the
 * single-server-change bug found after the thesis).
 */
export class RaftCore {
  private readonly cfg: RaftConfig;
  readonly id: NodeId;
  private term: number;
  private vote: NodeId | null;
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  readonly log: RaftLog;
  private conf: ConfState;
  /** Index of the conf entry `conf` comes from (0 if from the snapshot or bootstrap). */
  private confIndex = 0;
  private readonly baseConf: ConfState;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  private leadTransferee: NodeId | null = null;
  /** Leader: bytes proposed in this term and not yet committed. */
  private uncommittedBytes = 0;
  private pendingReads: PendingRead[] = [];
  private readStates: ReadState[] = [];
  /**
   * Ticks since this core was built (a restart): with lease reads, no vote before an election
   * timeout.
   */
  private ticksSinceStart = 0;
  private incoming: IncomingSnapshot | null = null;

  private msgs: Message[] = [];
  /** Snapshot chunks for the caller to read from its storage and send (Ready.snapshotChunks). */
  private chunkSends: SnapshotChunkSend[] = [];
  /** Messages in `msgs` of a type that may leave before a write (what takeUnblocked may take). */
  private earlyInOutbox = 0;
  private prevHard: HardState;
  private prevSoft: SoftState;

  constructor(config: RaftConfig, durable: DurableState) {
    validateRaftConfig(config);
    this.cfg = config;
    this.id = config.id;
    this.term = durable.hardState.term;
    this.vote = durable.hardState.vote;
    this.log = new RaftLog(durable.snapshot, durable.entries, durable.hardState.commit);
    this.baseConf = cloneConf(durable.snapshot?.meta.conf ?? durable.initialConf);
    this.conf = this.baseConf;
    this.refreshConf();
    this.prevHard = this.hardState();
    this.prevSoft = this.softState();
    this.resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------- inputs

  /** One logical clock tick. */
  tick(): void {
    if (this.ticksSinceStart < this.cfg.electionTicks) this.ticksSinceStart++;
    if (this.role === 'leader') this.tickLeader();
    else this.tickElection();
  }

  /**
   * Whether this node still honours a leader it heard within an election timeout (§9.6),
   * so it grants no vote to a candidate the leader did not ask for. With lease reads a
   * node that has just started honours the leader it may have heard before it went down.
   */
  private inLease(): boolean {
    if (!this.cfg.checkQuorum) return false;
    if (this.leader !== null && this.electionElapsed < this.cfg.electionTicks) return true;
    return this.cfg.leaseReads && this.ticksSinceStart < this.cfg.electionTicks;
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, null);
        return;
      }
      // A transfer that has not finished within an election timeout is abandoned.
      this.leadTransferee = null;
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat(this.pendingReads.at(-1)?.ctx ?? null);
    }
  }

  /**
   * Starts an election now (tests and operator use). With lease reads, not while this node
   * honours a leader: its vote for itself would break the promise a lease rests on.
   */
  campaign(): void {
    if (this.cfg.leaseReads && this.role !== 'leader' && this.inLease()) return;
    this.hup(false);
  }

  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.term > this.term) {
      if (m.type === 'preVote' || m.type === 'vote') {
        // A follower that hears a live leader ignores disruptive candidates (§9.6), unless
        // the leader itself asked for the election (transfer).
        if (this.inLease() && !m.transfer) return;
      }
      if (m.type === 'preVote') {
        // A pre-vote never changes our term.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // A granted pre-vote carries the future term; we move to it when we campaign.
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if (
        (this.cfg.checkQuorum || this.cfg.preVote) &&
        (m.type === 'heartbeat' || m.type === 'app')
      ) {
        // A stale leader (e.g. back from a partition) learns of the new term from this
        // response and steps down, instead of being ignored until it times out.
        this.send({
          type: 'appResp',
          to: m.from,
          reject: true,
          index: 0,
          hintTerm: 0,
          hintIndex: 0,
        });
      } else if (m.type === 'preVote') {
        this.send({ type: 'preVoteResp', to: m.from, reject: true });
      }
      return;
    }

    switch (m.type) {
      case 'preVote':
      case 'vote':
        this.handleVoteRequest(m);
        return;
      default:
        break;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        return;
      case 'candidate':
      case 'pre-candidate':
        this.stepCandidate(m);
        return;
      case 'follower':
        this.stepFollower(m);
        return;
    }
  }

  /** Appends a normal entry. Returns where it will be if it commits. */
  propose(data: Uint8Array): { index: number; term: number } {
    if (data.length > this.cfg.maxEntryBytes) {
      throw new BadRequestError(
        `entry of ${data.length} bytes exceeds maxEntryBytes ${this.cfg.maxEntryBytes}`,
      );
    }
    this.checkCanPropose();
    if (this.uncommittedBytes + entrySize(data) > this.cfg.maxUncommittedBytes) {
      throw new ProposalDroppedError(
        `leader has ${this.uncommittedBytes} uncommitted bytes (limit ${this.cfg.maxUncommittedBytes})`,
      );
    }
    return this.appendAsLeader({ type: 'normal', data });
  }

  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    this.checkCanPropose();
    if (this.confIndex > this.log.committed) throw new ChangeInProgressError();
    if (this.log.term(this.log.committed) !== this.term) {
      throw new ChangeInProgressError(
        'the leader has not yet committed an entry of its term; retry shortly',
      );
    }
    const why = confChangeError(this.conf, cc);
    if (why !== null) throw new BadRequestError(`membership change refused: ${why}`);
    return this.appendAsLeader({ type: 'conf', change: cc });
  }

  transferLeadership(to: NodeId): void {
    if (this.role !== 'leader') throw new NotLeaderError(this.leader);
    if (to === this.id) return;
    if (!this.conf.voters.includes(to))
      throw new BadRequestError(`cannot transfer leadership to ${to}: not a voter`);
    const pr = this.progress.get(to);
    assert(pr !== undefined, 'a voter without progress on the leader');
    this.leadTransferee = to;
    this.electionElapsed = 0;
    if (pr.match === this.log.lastIndex()) this.send({ type: 'timeoutNow', to });
    else this.sendAppend(to);
  }

  /**
   * Linearizable read (§6.4): once a quorum confirms this leader after the request, any
   * read served at applied ≥ the returned index sees every acknowledged write.
   */
  readIndex(ctx: string): void {
    if (this.role !== 'leader') throw new NotLeaderError(this.leader);
    if (this.pendingReads.length >= MAX_PENDING_READS)
      throw new ProposalDroppedError(`too many pending reads (limit ${MAX_PENDING_READS})`);
    if (this.log.term(this.log.committed) !== this.term) {
      // Until it commits in its term a new leader does not know the commit index; the
      // caller retries (the leader's no-op commits within a round trip).
      throw new ProposalDroppedError(
        'the leader has not yet committed an entry of its term; retry shortly',
      );
    }
    const read: PendingRead = { ctx, index: this.log.committed, acks: new Set([this.id]) };
    this.pendingReads.push(read);
    if (this.quorumHas(read.acks)) this.releaseReads();
    else this.broadcastHeartbeat(ctx);
  }

  /**
   * For a lease read: the index a read may be served at without a quorum round, if this
   * node leads, has committed an entry of its term (so its commit index is the cluster's)
   * and is not handing leadership over; else null. Whether the lease itself holds is the
   * caller's to judge, by its clock (see the driver).
   */
  leaseReadIndex(): number | null {
    if (this.role !== 'leader' || this.leadTransferee !== null) return null;
    if (this.log.term(this.log.committed) !== this.term) return null;
    return this.log.committed;
  }

  /**
   * What may go out between a Ready and its advance (while the caller awaits the disk),
   * taken at once instead of with the next Ready (etcd hands out the same while its WAL
   * write is under way):
   *  - `messages`: everything that may leave before a write (mayLeaveBeforePersist) — a
   *    leader's appends (pipelined: entries proposed during the write reach the followers
   *    at once, and are persisted here by the next Ready, in order), heartbeats, timeoutNow,
   *    heartbeat answers — of a term already durable. ReadIndex rounds never wait behind a
   *    disk write, and the followers' fsyncs of new entries overlap the leader's.
   *  - `readStates`.
   *    (`appends: false`: a leader's appends wait for the next Ready, as before pipelining.)
   *  - `committedEntries` (if `committed`, and no received snapshot waits to be restored):
   *    entries committed since the last hand-out. The caller applies them at once, in
   *    order, after the Ready's own committed entries. They may lie beyond this node's
   *    durable log: a committed entry is durable on a quorum (the leader counts itself only
   *    at its durable index; Raft thesis §10.2.1), so applying it needs no local write.
   *    `commit` is the commit index they stand on.
   * What is taken here is not in the next Ready.
   */
  takeUnblocked(opts: { committed?: boolean; appends?: boolean } = {}): Unblocked {
    const { committed = true, appends = true } = opts;
    const messages: Message[] = [];
    // Skip the scan of a busy outbox without any message that may leave early.
    if (this.earlyInOutbox > 0) {
      this.earlyInOutbox = 0;
      const keep: Message[] = [];
      for (const m of this.msgs) {
        const unblocked =
          m.term >= this.term && this.mayLeaveBeforePersist(m) && (appends || m.type !== 'app');
        (unblocked ? messages : keep).push(m);
      }
      this.msgs = keep;
    }
    const readStates = this.readStates;
    this.readStates = [];
    let committedEntries: Entry[] = [];
    if (committed && this.log.pendingSnapshot === null) {
      committedEntries = this.log.nextCommitted();
      const last = committedEntries.at(-1);
      // Handed out for the caller to apply now: applied as far as the core is concerned.
      if (last) this.log.appliedTo(last.index);
    }
    return { messages, readStates, committedEntries, commit: this.log.committed };
  }

  /**
   * The metadata of a snapshot at `index` (≤ applied): its term and the membership as of
   * that index — not the current one, which may include later, uncommitted changes.
   */
  snapshotMeta(index: number): SnapshotMeta {
    assert(
      index <= this.log.applied && index >= this.log.snapIndex,
      () => `snapshot index ${index} outside [${this.log.snapIndex}, ${this.log.applied}]`,
    );
    const term = this.log.term(index);
    assert(term !== undefined, 'no term for a snapshot index');
    let conf: ConfState = this.log.snapshot?.meta.conf ?? this.baseConf;
    for (const e of this.log.entries) {
      if (e.index > index) break;
      if (e.type === 'conf') conf = applyConfChange(conf, e.change);
    }
    return { index, term, conf: cloneConf(conf) };
  }

  /**
   * Local compaction: the caller persisted a snapshot of applied state (`bytes` of data,
   * which the core does not hold; it asks for them chunk by chunk when a follower needs them).
   */
  compact(snapshot: SnapshotRef): void {
    this.log.compact(snapshot);
  }

  // ---------------------------------------------------------------- Ready

  hasReady(): boolean {
    return (
      this.msgs.length > 0 ||
      this.chunkSends.length > 0 ||
      this.readStates.length > 0 ||
      this.log.pendingSnapshot !== null ||
      this.log.stable < this.log.lastIndex() ||
      this.log.committed > this.log.applying ||
      !sameHard(this.prevHard, this.hardState()) ||
      !sameSoft(this.prevSoft, this.softState())
    );
  }

  ready(): Ready {
    const hard = this.hardState();
    const soft = this.softState();
    const snapshot = this.log.pendingSnapshot;
    const now: Message[] = [];
    const afterPersist: Message[] = [];
    for (const m of this.currentTermMessages())
      (this.mayLeaveBeforePersist(m) ? now : afterPersist).push(m);
    const rd: Ready = {
      softState: sameSoft(this.prevSoft, soft) ? null : soft,
      hardState: sameHard(this.prevHard, hard) ? null : hard,
      entries: this.log.unstableEntries(),
      snapshot,
      messages: now,
      messagesAfterPersist: afterPersist,
      // As the outbox: none of an earlier term (see currentTermMessages).
      snapshotChunks: this.chunkSends.filter((c) => c.term >= this.term),
      committedEntries: this.log.nextCommitted(),
      readStates: this.readStates,
    };
    this.msgs = [];
    this.chunkSends = [];
    this.earlyInOutbox = 0;
    this.readStates = [];
    const lastCommitted = rd.committedEntries.at(-1);
    if (lastCommitted) this.log.applyingTo(lastCommitted.index);
    return rd;
  }

  /**
   * The outbox, less what an earlier term left in it. A message describes the state it
   * was made from; once the term moved on, that state may have been overwritten (a new
   * leader truncates the entries an old-term append response acknowledged), and sending
   * it after persisting the newer state would let an old leader count a replica that no
   * longer holds what it claims. (Found by the simulator: seed 1450411913.)
   */
  private currentTermMessages(): Message[] {
    const out = this.msgs.filter((m) => m.term >= this.term);
    return out;
  }

  /**
   * Whether a message depends on nothing the pending write holds, so it may leave before
   * (or during) that write: a leader's own requests and the answers to its heartbeats,
   * which promise only the term — if that term is already durable (`prevHard` is what the
   * caller reported persisted). Vote grants and append/snapshot answers promise what the
   * write holds; they wait.
   */
  private mayLeaveBeforePersist(m: Message): boolean {
    return EARLY_MESSAGE_TYPES.has(m.type) && m.term <= this.prevHard.term;
  }

  advance(rd: Ready): void {
    if (rd.softState) this.prevSoft = rd.softState;
    if (rd.hardState) this.prevHard = rd.hardState;
    if (rd.snapshot && this.log.pendingSnapshot === rd.snapshot) {
      this.log.pendingSnapshot = null;
      this.log.appliedTo(rd.snapshot.meta.index);
    }
    const lastEntry = rd.entries.at(-1);
    if (lastEntry) this.log.stableTo(lastEntry.index, lastEntry.term);
    const lastApplied = rd.committedEntries.at(-1);
    if (lastApplied) this.log.appliedTo(lastApplied.index);
    // The leader's own write is durable now: it counts toward the commit index (this is
    // all a single voter waits for). The followers hear the new commit index with the next
    // append or heartbeat (see handleAppendAccepted).
    if (lastEntry && this.role === 'leader') this.maybeCommit();
  }

  status(): Status {
    let progress: Status['progress'] = null;
    if (this.role === 'leader') {
      progress = {};
      for (const [id, pr] of this.progress) progress[id] = pr.view();
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      firstIndex: this.log.firstIndex(),
      conf: cloneConf(this.conf),
      progress,
      leadTransferee: this.leadTransferee,
    };
  }

  // ---------------------------------------------------------------- roles

  private promotable(): boolean {
    return this.conf.voters.includes(this.id);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      assert(term > this.term, () => `term must not go backwards: ${this.term} → ${term}`);
      this.term = term;
      this.vote = null;
    }
    this.leader = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.votes = new Map();
    this.leadTransferee = null;
    this.pendingReads = [];
    this.uncommittedBytes = 0;
    this.progress = new Map();
  }

  private resetRandomizedElectionTimeout(): void {
    const r = this.cfg.random();
    assert(r >= 0 && r < 1, 'random() must return a number in [0, 1)');
    this.randomizedElectionTimeout =
      this.cfg.electionTicks + Math.floor(r * this.cfg.electionTicks);
  }

  private becomeFollower(term: number, leader: NodeId | null): void {
    this.reset(term);
    this.role = 'follower';
    this.leader = leader;
  }

  private becomePreCandidate(): void {
    assert(this.role !== 'leader', 'a leader cannot become a pre-candidate');
    // Neither term nor vote changes: a pre-vote that fails leaves no trace.
    this.votes = new Map();
    this.role = 'pre-candidate';
    this.leader = null;
  }

  private becomeCandidate(): void {
    assert(this.role !== 'leader', 'a leader cannot become a candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    assert(this.role === 'candidate', 'only a candidate becomes leader');
    this.reset(this.term);
    this.role = 'leader';
    this.leader = this.id;
    for (const id of this.members())
      this.progress.set(id, new Progress(this.log.lastIndex() + 1, this.cfg.maxInflightMsgs));
    const self = this.progress.get(this.id);
    assert(self !== undefined, 'a leader must be a member');
    self.match = this.log.lastIndex();
    self.becomeReplicate();
    self.recentActive = true;
    this.uncommittedBytes = this.log.bytesBetween(this.log.committed + 1, this.log.lastIndex());
    // The no-op opens the term: it lets the leader learn the commit index (§8) and
    // unblocks membership changes (they wait for a committed entry of this term).
    this.appendAsLeader({ type: 'normal', data: new Uint8Array(0) });
  }

  private hup(transfer: boolean): void {
    if (this.role === 'leader' || !this.promotable()) return;
    if (this.cfg.preVote && !transfer) this.campaignPreVote();
    else this.campaignVote(transfer);
  }

  private campaignPreVote(): void {
    this.becomePreCandidate();
    this.votes.set(this.id, true);
    if (voteResult(this.conf.voters, this.votes) === 'won') {
      this.campaignVote(false);
      return;
    }
    this.requestVotes('preVote', this.term + 1, false);
  }

  private campaignVote(transfer: boolean): void {
    this.becomeCandidate();
    this.votes.set(this.id, true);
    if (voteResult(this.conf.voters, this.votes) === 'won') {
      this.becomeLeader();
      return;
    }
    this.requestVotes('vote', this.term, transfer);
  }

  private requestVotes(type: 'preVote' | 'vote', term: number, transfer: boolean): void {
    for (const v of this.conf.voters) {
      if (v === this.id) continue;
      const req = {
        to: v,
        term,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
        transfer,
      };
      this.send(type === 'vote' ? { type: 'vote', ...req } : { type: 'preVote', ...req });
    }
  }

  private handleVoteRequest(m: MessageOf<'preVote'> | MessageOf<'vote'>): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === null && this.leader === null) ||
      (m.type === 'preVote' && m.term > this.term);
    if (canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) {
      // A granted pre-vote answers in the candidate's future term so it can count it.
      if (m.type === 'vote') {
        this.electionElapsed = 0;
        this.vote = m.from;
        this.send({ type: 'voteResp', to: m.from, reject: false });
      } else {
        this.send({ type: 'preVoteResp', to: m.from, term: m.term, reject: false });
      }
    } else {
      this.send(
        m.type === 'vote'
          ? { type: 'voteResp', to: m.from, reject: true }
          : { type: 'preVoteResp', to: m.from, reject: true },
      );
    }
  }

  // ---------------------------------------------------------------- per role

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'preVoteResp':
      case 'voteResp': {
        const expected = this.role === 'pre-candidate' ? 'preVoteResp' : 'voteResp';
        if (m.type !== expected) return;
        if (!this.votes.has(m.from)) this.votes.set(m.from, !m.reject);
        const result = voteResult(this.conf.voters, this.votes);
        if (result === 'won') {
          if (this.role === 'pre-candidate') this.campaignVote(false);
          else this.becomeLeader();
        } else if (result === 'lost') {
          this.becomeFollower(this.term, null);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.leader = m.from;
        // The leader sends min(match, commit), so our log matches up to it.
        if (m.commit <= this.log.lastIndex()) this.log.commitTo(m.commit);
        this.send({ type: 'heartbeatResp', to: m.from, readCtx: m.readCtx });
        return;
      case 'snap':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshotChunk(m);
        return;
      case 'timeoutNow':
        // The leader asked us to take over: campaign at once, skipping pre-vote, with the
        // transfer flag so voters in lease still answer.
        if (this.promotable()) this.hup(true);
        return;
      default:
        return;
    }
  }

  private handleAppend(m: MessageOf<'app'>): void {
    if (m.prevIndex < this.log.committed) {
      // Everything up to our commit index matches the leader's log (leader completeness).
      this.send({
        type: 'appResp',
        to: m.from,
        reject: false,
        index: this.log.committed,
        hintTerm: 0,
        hintIndex: 0,
      });
      return;
    }
    const result = this.log.maybeAppend(m.prevIndex, m.prevTerm, m.entries);
    if (result === null) {
      const reject = m.prevIndex;
      let hintTerm = 0;
      let hintIndex = this.log.lastIndex() + 1;
      if (reject <= this.log.lastIndex()) {
        hintTerm = this.log.term(reject) ?? 0;
        hintIndex = this.log.firstIndexOfTermAt(reject);
      }
      this.send({ type: 'appResp', to: m.from, reject: true, index: reject, hintTerm, hintIndex });
      return;
    }
    if (result.truncatedFrom !== null && result.truncatedFrom <= this.confIndex) this.refreshConf();
    else if (m.entries.some((e) => e.type === 'conf')) this.refreshConf();
    // Replicated by the log again: the chunks of a snapshot stream that stopped half-way (its
    // leader gone, or it went on by the log) are let go, not held until the next snapshot.
    this.incoming = null;
    this.log.commitTo(Math.min(m.commit, result.lastNew));
    this.send({
      type: 'appResp',
      to: m.from,
      reject: false,
      index: result.lastNew,
      hintTerm: 0,
      hintIndex: 0,
    });
  }

  private handleSnapshotChunk(m: MessageOf<'snap'>): void {
    const { index, term } = m.meta;
    if (index <= this.log.committed) {
      // We already hold everything it covers.
      this.incoming = null;
      this.send({
        type: 'appResp',
        to: m.from,
        reject: false,
        index: this.log.committed,
        hintTerm: 0,
        hintIndex: 0,
      });
      return;
    }
    if (
      m.offset === 0 &&
      (this.incoming === null || this.incoming.index !== index || this.incoming.term !== term)
    ) {
      this.incoming = { index, term, chunks: [], bytes: 0, crc: m.crc };
    }
    const inc = this.incoming;
    if (inc === null || inc.index !== index || inc.term !== term || m.offset > inc.bytes) {
      this.send({ type: 'snapResp', to: m.from, reject: true, index, offset: 0 });
      return;
    }
    if (m.offset === inc.bytes) {
      inc.chunks.push(m.chunk);
      inc.bytes += m.chunk.length;
      // Chunks of one snapshot from another leader (same index and term, so the same
      // bytes: replicas hold byte-identical state) may carry the CRC the first lacked.
      inc.crc ??= m.crc;
    }
    // A duplicate chunk (offset below what we hold) is acknowledged again, not appended.
    if (!m.done || m.offset + m.chunk.length < inc.bytes) {
      this.send({ type: 'snapResp', to: m.from, reject: false, index, offset: inc.bytes });
      return;
    }
    this.incoming = null;
    const data = concat(inc.chunks, inc.bytes);
    const snapshot: Snapshot = { meta: { index, term, conf: cloneConf(m.meta.conf) }, data };
    if (!this.log.matchTerm(index, term) && !this.cfg.acceptSnapshot(snapshot, inc.crc)) {
      // It does not decode into a state this node could restore: nothing of it is kept;
      // the leader starts over (a corrupt frame is resent whole).
      this.send({ type: 'snapResp', to: m.from, reject: true, index, offset: 0 });
      return;
    }
    if (this.log.matchTerm(index, term)) {
      // Our log already contains the snapshot's last entry: fast-forward the commit index.
      // Only up to there is our log known to match the leader's; the tail after it may be
      // stale (an old term's), so the answer is the commit index, as etcd's, never lastIndex.
      this.log.commitTo(index);
    } else {
      this.log.restore(snapshot);
      this.refreshConf();
    }
    this.send({
      type: 'appResp',
      to: m.from,
      reject: false,
      index: this.log.committed,
      hintTerm: 0,
      hintIndex: 0,
    });
  }

  private stepLeader(m: Message): void {
    const pr = this.progress.get(m.from);
    switch (m.type) {
      case 'appResp':
        if (pr === undefined) return;
        pr.recentActive = true;
        if (m.reject) this.handleAppendRejected(m, pr);
        else this.handleAppendAccepted(m, pr);
        return;
      case 'heartbeatResp':
        if (pr === undefined) return;
        pr.recentActive = true;
        pr.probeSent = false;
        // Appends pipelined to this follower may all have been lost (a drop, a partition,
        // its restart): with a full window nothing would ever go out again. Freeing one
        // slot lets the next append through; the follower rejects it for the gap and we
        // fall back to probing from what it really holds.
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirst();
        if (pr.state === 'snapshot') this.sendSnapshotChunk(m.from, pr);
        else if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        if (m.readCtx !== null) this.ackRead(m.readCtx, m.from);
        return;
      case 'snapResp':
        if (pr === undefined) return;
        pr.recentActive = true;
        if (pr.state !== 'snapshot' || m.index !== pr.snapIndex) return;
        if (m.reject) {
          // Probing again (and so the next stream) waits for the next heartbeat's answer:
          // a snapshot the follower refuses whole (it does not match its checksum, e.g.
          // damaged on this node's disk) is not resent back to back as fast as the network
          // carries it, reading the whole file each time.
          pr.becomeProbe();
          pr.probeSent = true;
          return;
        }
        if (m.offset > pr.snapOffset) {
          // An offset beyond the data (a confused peer's) is ignored, not followed.
          const snap = this.log.snapshot;
          if (snap !== null && snap.meta.index === pr.snapIndex && m.offset > snap.bytes) return;
          pr.snapOffset = m.offset;
          this.sendSnapshotChunk(m.from, pr);
        }
        return;
      default:
        return;
    }
  }

  private handleAppendRejected(m: MessageOf<'appResp'>, pr: Progress): void {
    if (pr.state === 'snapshot') return; // the snapshot stream decides what comes next
    if (pr.state === 'replicate' ? m.index <= pr.match : m.index !== pr.next - 1) return; // stale
    let next: number;
    if (m.hintTerm === 0) {
      next = m.hintIndex;
    } else {
      const ours = this.log.lastIndexOfTerm(m.hintTerm);
      next = ours > 0 ? ours + 1 : m.hintIndex;
    }
    pr.becomeProbe();
    pr.next = Math.max(pr.match + 1, Math.min(next, m.index));
    this.sendAppend(m.from);
  }

  private handleAppendAccepted(m: MessageOf<'appResp'>, pr: Progress): void {
    const wasPaused = pr.paused();
    const updated = pr.maybeUpdate(m.index);
    // A probe answered at our current match (e.g. an empty probe to an up-to-date
    // follower) also ends probing, or the follower would stay paused until a heartbeat.
    if (!updated && !(pr.state === 'probe' && pr.match === m.index)) {
      pr.inflights.freeTo(m.index);
      return;
    }
    if (pr.state === 'probe' || pr.state === 'snapshot') pr.becomeReplicate();
    else pr.inflights.freeTo(m.index);
    // A new commit index is not broadcast in appends of its own: it rides on the next
    // append (the next proposal's) or heartbeat (every heartbeatTicks), which carry it. An
    // append that carried nothing else cost every follower a round (apply, a write of the
    // commit index, an answer) and the leader a round per answer, on the critical path of
    // the next request, for an index no one waits for: a follower serves no reads, and a
    // new leader commits an entry of its own term before it serves (issue 12).
    this.maybeCommit();
    if (this.role === 'leader' && (wasPaused || pr.next <= this.log.lastIndex()))
      this.sendAppend(m.from);
    if (
      this.role === 'leader' &&
      this.leadTransferee === m.from &&
      pr.match === this.log.lastIndex()
    ) {
      this.send({ type: 'timeoutNow', to: m.from });
    }
  }

  // ---------------------------------------------------------------- leader helpers

  private checkCanPropose(): void {
    if (this.role !== 'leader') throw new NotLeaderError(this.leader);
    if (this.leadTransferee !== null)
      throw new ProposalDroppedError(`leadership is being transferred to ${this.leadTransferee}`);
  }

  private appendAsLeader(
    e: { type: 'normal'; data: Uint8Array } | { type: 'conf'; change: ConfChange },
  ): { index: number; term: number } {
    const index = this.log.lastIndex() + 1;
    const entry: Entry =
      e.type === 'normal'
        ? { index, term: this.term, type: 'normal', data: e.data }
        : { index, term: this.term, type: 'conf', change: e.change };
    this.log.append([entry]);
    this.uncommittedBytes += this.log.bytesBetween(index, index);
    if (entry.type === 'conf') this.refreshConf();
    const self = this.progress.get(this.id);
    if (self) self.maybeUpdate(index);
    this.maybeCommit();
    this.broadcastAppend();
    return { index, term: this.term };
  }

  /**
   * §5.4.2: only entries of the leader's own term are committed by counting replicas.
   * The leader counts itself at its DURABLE last index (`log.stable`, what the caller
   * reported persisted), never at entries still in a pending write: its appends leave
   * before its own write, and a commit index they carried that covered its unsynced tail
   * could let a learner (or, with one voter, anyone) apply an entry a crash then loses.
   */
  private maybeCommit(): boolean {
    const mci = committedIndex(this.conf.voters, (id) =>
      id === this.id ? this.log.stable : (this.progress.get(id)?.match ?? 0),
    );
    if (mci <= this.log.committed || this.log.term(mci) !== this.term) return false;
    this.uncommittedBytes = Math.max(
      0,
      this.uncommittedBytes - this.log.bytesBetween(this.log.committed + 1, mci),
    );
    this.log.commitTo(mci);
    this.afterCommit();
    return true;
  }

  private afterCommit(): void {
    // A leader removed from the configuration steps down once the removal is committed.
    if (
      this.role === 'leader' &&
      !this.conf.voters.includes(this.id) &&
      this.confIndex <= this.log.committed
    ) {
      this.becomeFollower(this.term, null);
      return;
    }
    if (this.role === 'leader' && this.pendingReads.length > 0) this.releaseReads();
  }

  private broadcastAppend(): void {
    for (const id of this.progress.keys()) if (id !== this.id) this.sendAppend(id);
  }

  private broadcastHeartbeat(readCtx: string | null): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue;
      this.send({
        type: 'heartbeat',
        to: id,
        commit: Math.min(pr.match, this.log.committed),
        readCtx,
      });
    }
  }

  private sendAppend(to: NodeId): void {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.paused()) return;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) {
      // What the follower needs was compacted away: send the snapshot instead.
      const snap = this.log.snapshot;
      assert(snap !== null, 'log compacted without a snapshot');
      pr.becomeSnapshot(snap.meta.index);
      this.sendSnapshotChunk(to, pr);
      return;
    }
    const entries =
      pr.next <= this.log.lastIndex()
        ? this.log.slice(pr.next, this.log.lastIndex(), this.cfg.maxMsgBytes)
        : [];
    this.send({ type: 'app', to, prevIndex, prevTerm, entries, commit: this.log.committed });
    const last = entries.at(-1);
    if (pr.state === 'replicate') {
      if (last) {
        pr.next = last.index + 1;
        pr.inflights.add(last.index);
      }
    } else {
      pr.probeSent = true;
    }
  }

  /**
   * Asks the caller to send the chunk of the latest snapshot at the follower's acknowledged
   * offset: the core holds the snapshot's meta and size, the caller reads the bytes from
   * its disk (Ready.snapshotChunks).
   */
  private sendSnapshotChunk(to: NodeId, pr: Progress): void {
    const snap = this.log.snapshot;
    assert(snap !== null, 'snapshot state without a snapshot');
    if (snap.meta.index !== pr.snapIndex) {
      // Compacted again meanwhile: start over with the newer snapshot.
      pr.becomeSnapshot(snap.meta.index);
    }
    const offset = pr.snapOffset;
    assert(offset <= snap.bytes, () => `snapshot offset ${offset} beyond its ${snap.bytes} bytes`);
    const end = Math.min(offset + this.cfg.snapshotChunkBytes, snap.bytes);
    this.chunkSends.push({
      from: this.id,
      to,
      term: this.term,
      meta: { index: snap.meta.index, term: snap.meta.term, conf: cloneConf(snap.meta.conf) },
      offset,
      length: end - offset,
      done: end === snap.bytes,
    });
  }

  private ackRead(ctx: string, from: NodeId): void {
    const at = this.pendingReads.findIndex((r) => r.ctx === ctx);
    if (at < 0) return;
    // A confirmation of a later request confirms every earlier one too.
    for (let i = 0; i <= at; i++) this.pendingReads[i]!.acks.add(from);
    this.releaseReads();
  }

  private releaseReads(): void {
    let n = 0;
    while (n < this.pendingReads.length && this.quorumHas(this.pendingReads[n]!.acks)) n++;
    if (n === 0) return;
    for (const r of this.pendingReads.splice(0, n))
      this.readStates.push({ ctx: r.ctx, index: r.index });
  }

  private quorumHas(ids: ReadonlySet<NodeId>): boolean {
    let n = 0;
    for (const v of this.conf.voters) if (ids.has(v)) n++;
    return n >= quorumSize(this.conf.voters.length);
  }

  private quorumActive(): boolean {
    let n = 0;
    for (const v of this.conf.voters) {
      const pr = this.progress.get(v);
      if (v === this.id || pr?.recentActive) n++;
      if (pr && v !== this.id) pr.recentActive = false;
    }
    return n >= quorumSize(this.conf.voters.length);
  }

  private members(): NodeId[] {
    return [...this.conf.voters, ...this.conf.learners];
  }

  // ---------------------------------------------------------------- membership

  /**
   * Recomputes the configuration from the log: the last conf entry wins (effective on
   * append), else the snapshot's or the bootstrap configuration.
   */
  private refreshConf(): void {
    let conf: ConfState = this.log.snapshot?.meta.conf ?? this.baseConf;
    let confIndex = 0;
    // Replay every conf entry after the base, in order: each change applies to the previous.
    for (const e of this.log.entries) {
      if (e.type === 'conf') {
        conf = applyConfChange(conf, e.change);
        confIndex = e.index;
      }
    }
    this.conf = cloneConf(conf);
    this.confIndex = confIndex;
    if (this.role === 'leader') {
      for (const id of this.members()) {
        if (!this.progress.has(id)) {
          const pr = new Progress(this.log.lastIndex(), this.cfg.maxInflightMsgs);
          this.progress.set(id, pr);
        }
      }
      for (const id of [...this.progress.keys()])
        if (!isMember(this.conf, id)) this.progress.delete(id);
      if (this.leadTransferee !== null && !this.conf.voters.includes(this.leadTransferee))
        this.leadTransferee = null;
    }
  }

  // ---------------------------------------------------------------- plumbing

  private send(m: Outgoing): void {
    const msg = { ...m, from: this.id, term: m.term ?? this.term } as Message;
    if (EARLY_MESSAGE_TYPES.has(msg.type)) this.earlyInOutbox++;
    this.msgs.push(msg);
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private softState(): SoftState {
    return { role: this.role, leader: this.leader, term: this.term };
  }
}

function sameHard(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function sameSoft(a: SoftState, b: SoftState): boolean {
  return a.role === b.role && a.leader === b.leader && a.term === b.term;
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
