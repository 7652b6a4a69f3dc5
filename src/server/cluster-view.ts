/**
 * ClusterView: this node's view of its Raft group as the openapi shows it — members with
 * roles and endpoints (from ConfState.context), term, leader, health — and a change signal
 * for the watch long poll.
 *
 * Changes are detected two ways: the driver's onStateChange (role, term, leader,
 * membership) for promptness, and a short poll of status() as a safety net (and for the
 * leader's view of member health, which has no event).
 *
 * In db mode the control is the db store's lease (src/server/db-mode.ts LeaseControl): the
 * leader is the lease holder, the term its epoch, the members the configured peers.
 */
import { createHash } from 'node:crypto';
import type { ConfState, NodeId } from '../store/raft/index.ts';
import { isNodeId, nodeIdEntries } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import {
  decodePartialMemberContext,
  formatHostPort,
  type MemberEndpoints,
} from './config/endpoints.ts';
import type { RaftControl, RaftControlStatus } from './raft-control.ts';
import type {
  ClusterMetadata,
  HostPort,
  ErrorBody,
  MemberRole,
  NodeMetadata,
} from '../shared/metadata.ts';

/** How often the view samples the node's status, in ms. */
export const VIEW_POLL_INTERVAL_MS = 100;
/** Characters of the metadata fingerprint (hex of SHA-256). */
const METADATA_VERSION_CHARS = 16;

export interface ClusterViewOptions {
  control: RaftControl;
  group: string;
  storeMode: 'raft' | 'db';
  version: string;
  /** A member is healthy (leader's view) if it answered within this many ms. */
  healthWindowMs: number;
  /**
   * Endpoints known from config: this node's own, and the configured peers'. A member's
   * context wins per endpoint; these fill what it lacks (bootstrap members' contexts, as
   * the RaftNode writes them, carry only the raft address for peers).
   */
  knownEndpoints: ReadonlyMap<NodeId, MemberEndpoints>;
  logger: Logger;
  now?: () => number;
}

export class ClusterView {
  private readonly control: RaftControl;
  private readonly opts: ClusterViewOptions;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly listeners = new Set<() => void>();
  private readonly lastSeen = new Map<NodeId, number>();
  private readonly lastMatch = new Map<NodeId, number>();
  private lastVersion = '';
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(opts: ClusterViewOptions) {
    this.control = opts.control;
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.log = opts.logger.child({ component: 'cluster-view' });
  }

  start(): void {
    if (this.timer) return;
    this.unsubscribe = this.control.onStateChange(() => this.sample());
    this.timer = setInterval(() => this.sample(), VIEW_POLL_INTERVAL_MS);
    this.timer.unref();
    this.sample();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.listeners.clear();
  }

  /** Subscribes to changes of the metadata fingerprint. Returns an unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  status(): RaftControlStatus {
    return this.control.status();
  }

  get group(): string {
    return this.opts.group;
  }

  get storeMode(): 'raft' | 'db' {
    return this.opts.storeMode;
  }

  term(): number {
    return this.control.status().term;
  }

  /** The current metadata fingerprint (see ClusterMetadata.metadataVersion). */
  version(): string {
    return this.fingerprintOf(this.control.status());
  }

  endpointsOf(id: NodeId, conf: ConfState = this.control.status().conf): MemberEndpoints | null {
    return resolveEndpoints(id, conf, this.opts.knownEndpoints);
  }

  /** The current metadata fingerprint of a status (see ClusterMetadata.metadataVersion). */
  private fingerprintOf(st: { term: number; leader: NodeId | null; conf: ConfState }): string {
    return fingerprint(st, (id) => this.endpointsOf(id, st.conf));
  }

  /**
   * The leader's endpoints for a not-leader answer. `id` as a NotLeaderError carries it (a
   * plain string: clients build that error from the wire too); only a node id has endpoints.
   */
  leaderInfo(id: string | null): ErrorBody['leader'] {
    if (id === null) return null;
    const e = isNodeId(id) ? this.endpointsOf(id) : null;
    return {
      nodeId: id,
      control: e ? endpoint(e.control) : null,
      transaction: e ? endpoint(e.transaction) : null,
    };
  }

  metadata(): ClusterMetadata {
    const st = this.control.status();
    const now = this.now();
    const members = [...st.conf.voters, ...st.conf.learners];
    const learners = new Set(st.conf.learners);
    const nodes: NodeMetadata[] = members.map((id) => {
      const e = this.endpointsOf(id, st.conf);
      const role: MemberRole =
        id === st.leader ? 'LEADER' : learners.has(id) ? 'LEARNER' : 'FOLLOWER';
      const n: NodeMetadata = {
        group: this.opts.group,
        nodeId: id,
        role,
        term: st.term,
        control: e ? endpoint(e.control) : null,
        transaction: e ? endpoint(e.transaction) : null,
        // db mode has no Raft peer port.
        internal: e && this.opts.storeMode === 'raft' ? endpoint(e.raft) : null,
        healthy: this.healthOf(id, st, now),
        version: id === st.id ? this.opts.version : null,
      };
      const pr = st.progress?.[id];
      if (st.role === 'leader' && pr) {
        const match = id === st.id ? st.lastIndex : pr.match;
        n.matchIndex = match;
        n.lag = Math.max(0, st.lastIndex - match);
      }
      return n;
    });
    return {
      storeMode: this.opts.storeMode,
      group: this.opts.group,
      term: st.term,
      leaderId: st.leader,
      metadataVersion: this.fingerprintOf(st),
      answeredBy: st.id,
      commitIndex: st.commit,
      appliedIndex: st.applied,
      lastIndex: st.lastIndex,
      nodes,
    };
  }

  private healthOf(id: NodeId, st: RaftControlStatus, now: number): boolean | null {
    if (id === st.id) return st.stopped !== true;
    // db mode: the lease holder renewed within its lease (else another node holds it or
    // none does); nodes do not watch each other otherwise.
    if (this.opts.storeMode === 'db') return id === st.leader ? true : null;
    if (st.role === 'leader') {
      const seen = this.lastSeen.get(id);
      return seen !== undefined && now - seen <= this.opts.healthWindowMs;
    }
    if (id === st.leader) return true;
    return null;
  }

  private sample(): void {
    let st: RaftControlStatus;
    try {
      st = this.control.status();
    } catch (err) {
      this.log.warn({ err }, 'status() failed');
      return;
    }
    const now = this.now();
    if (st.role === 'leader' && st.progress) {
      for (const [id, pr] of nodeIdEntries(st.progress)) {
        const before = this.lastMatch.get(id);
        if (pr.recentActive || (before !== undefined && pr.match > before))
          this.lastSeen.set(id, now);
        this.lastMatch.set(id, pr.match);
      }
    } else {
      this.lastMatch.clear();
    }
    const v = this.fingerprintOf(st);
    if (v !== this.lastVersion) {
      this.lastVersion = v;
      for (const l of [...this.listeners]) {
        try {
          l();
        } catch (err) {
          this.log.warn({ err }, 'cluster view listener threw');
        }
      }
    }
  }
}

function endpoint(hp: { host: string; port: number }): HostPort {
  return { host: hp.host, port: hp.port };
}

/** A member's endpoints: its context first, then what config knows, per endpoint. */
export function resolveEndpoints(
  id: NodeId,
  conf: ConfState,
  known: ReadonlyMap<NodeId, MemberEndpoints>,
): MemberEndpoints | null {
  const p = decodePartialMemberContext(conf.context[id]);
  const k = known.get(id);
  const raft = p.raft ?? k?.raft;
  const transaction = p.transaction ?? k?.transaction;
  const control = p.control ?? k?.control;
  return raft && transaction && control ? { raft, transaction, control } : null;
}

/**
 * Term, leader, members and their resolved endpoints: what a client routes by. Computed
 * from resolved endpoints (not raw contexts) so every node of a consistently configured
 * group gives the same fingerprint for the same view.
 */
export function fingerprint(
  st: { term: number; leader: NodeId | null; conf: ConfState },
  endpointsOf: (id: NodeId) => MemberEndpoints | null,
): string {
  const members = [...st.conf.voters, ...st.conf.learners].sort().map((id) => {
    const e = endpointsOf(id);
    return [
      id,
      st.conf.learners.includes(id) ? 'L' : 'V',
      e ? [formatHostPort(e.raft), formatHostPort(e.transaction), formatHostPort(e.control)] : null,
    ];
  });
  const text = JSON.stringify([st.term, st.leader, members]);
  return createHash('sha256').update(text).digest('hex').slice(0, METADATA_VERSION_CHARS);
}
