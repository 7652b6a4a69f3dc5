/**
 * Whose disk is this, and whose frames are these (DESIGN invariant 8: a node's disk belongs
 * to one cluster and one identity).
 *
 * - The **cluster id** is made once, when the founding members bootstrap: a hash of the
 *   bootstrap membership (ids and raft addresses) and the optional `clusterToken` (etcd's
 *   initial-cluster-token), so every founding member computes the same id without talking
 *   to the others. It is stored in the data directory and carried in every Raft frame; a
 *   frame of another cluster is refused. A node started with `join` learns it from its
 *   peers (Identify) and stores it before it takes part.
 * - The **node identity** (`nodeUid`) is a random id made the first time a data directory
 *   is used and stored in it. Every frame carries it; each node remembers, on its disk, the
 *   identity each member was seen with, and refuses a member whose identity changed: that
 *   member lost its state (wiped or replaced directory), so it may have voted in a term it
 *   no longer remembers and forgotten entries it acknowledged. It is forgotten when the
 *   member leaves the membership, so the recovery is a membership change.
 * - A **founding member whose directory is empty** first asks its peers whether they know
 *   it. If one does, it refuses to start, naming the recovery (remove it and add it back
 *   as a new member with `concord cluster change`, starting it with `join`). An ask that
 *   timed out (the peer listens but is slow) is asked again. A founding
 *   member that simply starts later than the others is known to nobody and starts.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../../shared/errors.ts';
import { nodeIdEntries } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import type { ConfState, NodeId } from '../core/types.ts';
import type { StoredIdentity } from '../storage/leveldb-storage.ts';
import type { IdentifyAnswer, IdentityGuard, NodeIdentity } from '../transport/grpc-transport.ts';
import type { RaftNodeConfig } from './config.ts';
import { raftAddressOf } from './members.ts';

/** How long a starting node waits for each peer's Identify answer. */
export const IDENTIFY_TIMEOUT_MS = 1_500;
/** A round that lasted this fraction of IDENTIFY_TIMEOUT_MS had an ask time out. */
const IDENTIFY_TIMED_OUT = 0.9;
/** How long a joining node keeps asking its peers for the cluster id before giving up. */
export const JOIN_DISCOVERY_TIMEOUT_MS = 30_000;
/** Pause between two rounds of asking. */
export const JOIN_DISCOVERY_RETRY_MS = 500;

/** The cluster id founding members compute from their shared bootstrap membership. */
export function bootstrapClusterId(conf: ConfState, token: string): string {
  const members = conf.voters
    .map((id) => [id, raftAddressOf(conf.context[id] ?? '') ?? ''])
    .sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0));
  return createHash('sha256')
    .update(JSON.stringify(['concord-cluster/1', token, members]))
    .digest('hex')
    .slice(0, 16);
}

/**
 * The identities members were last seen with. Only members are recorded (a node outside
 * the membership, e.g. one being re-added after a wipe, is accepted but not remembered);
 * a member that leaves is forgotten. Every change is persisted through `persist`.
 */
export class PeerIdentityBook implements IdentityGuard {
  private readonly uids: Map<NodeId, string>;
  /** Null until the membership is known (between the transport's start and the log's load). */
  private members: ReadonlySet<NodeId> | null = null;

  constructor(
    initial: Readonly<Record<NodeId, string>>,
    private readonly persist: (uids: Record<NodeId, string>) => void,
  ) {
    this.uids = new Map(nodeIdEntries(initial));
  }

  accept(from: NodeId, uid: string): boolean {
    if (uid === '') return false;
    const known = this.uids.get(from);
    if (known !== undefined) return known === uid;
    if (this.members?.has(from)) {
      this.uids.set(from, uid);
      this.save();
    }
    return true;
  }

  knownUid(id: NodeId): string | null {
    return this.uids.get(id) ?? null;
  }

  /** The membership now: identities of nodes that left it are forgotten. */
  setMembers(members: Iterable<NodeId>): void {
    this.members = new Set(members);
    let changed = false;
    for (const id of [...this.uids.keys()]) {
      if (!this.members.has(id)) {
        this.uids.delete(id);
        changed = true;
      }
    }
    if (changed) this.save();
  }

  private save(): void {
    this.persist(Object.fromEntries(this.uids));
  }
}

/** A member whose data directory lost its state and must be re-added, not restarted. */
function lostStateError(config: RaftNodeConfig, knownBy: IdentifyAnswer[]): ConfigError {
  const others = Object.keys(config.peers).sort().join(',');
  return new ConfigError(
    'dataDir',
    `node "${config.nodeId}" is a member of cluster ${knownBy[0]!.clusterId} (its peers ${knownBy
      .map((a) => a.nodeId)
      .join(', ')} know it as ${knownBy[0]!.knownUid}), but its data directory ${config.dataDir} ` +
      'holds no Raft state: it was wiped or replaced. A member that lost its state must not ' +
      'rejoin as a founding member (it could vote twice in a term and forget entries it ' +
      'acknowledged). Recover by removing it and adding it back as a new member: ' +
      `\`concord cluster change --members ${others || '<the other members>'}\`, then start ` +
      `it with raft.join: true (kv-main: --join) and run \`concord cluster change\` again ` +
      `listing ${config.nodeId}.`,
  );
}

export interface SettleIdentityOptions {
  config: RaftNodeConfig;
  stored: StoredIdentity;
  /** The bootstrap membership a founding member computes its cluster id from. */
  bootstrap: ConfState;
  identify: (address: string, from: NodeId, timeoutMs: number) => Promise<IdentifyAnswer | null>;
  logger: Logger;
  /** Waits between two rounds of asking (injectable for tests). */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/**
 * Decides, at start, which cluster this node belongs to (the caller persists a newly
 * learned or founded id) and refuses to start on a directory that lost its state.
 */
export async function settleIdentity(
  o: SettleIdentityOptions,
): Promise<{ identity: NodeIdentity; learned: boolean }> {
  const { config, stored } = o;
  const founding = !config.join;
  const mustAsk = stored.clusterId === null || (stored.empty && founding);
  if (!mustAsk)
    return { identity: { clusterId: stored.clusterId!, nodeUid: stored.nodeUid }, learned: false };

  const answers = await askPeers(o, founding);
  if (stored.empty && founding) {
    const knownBy = answers.filter((a) => a.knownUid !== '');
    if (knownBy.length > 0) throw lostStateError(config, knownBy);
  }
  const reported = [...new Set(answers.map((a) => a.clusterId).filter((c) => c !== ''))];
  if (reported.length > 1) {
    throw new ConfigError(
      'peers',
      `the peers belong to different clusters (${reported.join(', ')}): check raft.peers`,
    );
  }
  const theirs = reported[0] ?? null;
  if (stored.clusterId !== null) {
    // An empty founding member that is known to nobody: its stored id must be the peers'.
    if (theirs !== null && theirs !== stored.clusterId)
      throw foreignError(config, stored.clusterId, theirs);
    return { identity: { clusterId: stored.clusterId, nodeUid: stored.nodeUid }, learned: false };
  }
  let clusterId: string;
  if (founding) {
    const mine = bootstrapClusterId(o.bootstrap, config.clusterToken);
    if (theirs !== null && theirs !== mine && stored.empty)
      throw foreignError(config, mine, theirs);
    // Data written before cluster ids existed takes the id its peers already hold.
    clusterId = theirs ?? mine;
  } else {
    if (theirs === null) {
      throw new ConfigError(
        'join',
        `no peer (${Object.values(config.peers).join(', ') || 'none configured'}) told this joining node its cluster id within ${JOIN_DISCOVERY_TIMEOUT_MS} ms: start it once its cluster runs, listing running members as peers`,
      );
    }
    clusterId = theirs;
  }
  o.logger.info(
    {
      clusterId,
      nodeUid: stored.nodeUid,
      how: founding && theirs === null ? 'founded' : 'learned',
    },
    'cluster id settled',
  );
  return { identity: { clusterId, nodeUid: stored.nodeUid }, learned: true };
}

function foreignError(config: RaftNodeConfig, ours: string, theirs: string): ConfigError {
  return new ConfigError(
    'peers',
    `node "${config.nodeId}" would belong to cluster ${ours}, but its peers belong to cluster ${theirs}: ` +
      'every founding member needs the same peers and clusterToken, and a directory of another cluster cannot join this one',
  );
}

/**
 * Asks every configured peer at once, in rounds, keeping each peer's latest answer. A
 * joining node keeps asking until one knows the cluster. A founding member stops when one
 * knows it, or no ask of the round timed out (the peers that did not answer refused at
 * once: down, or founding members not yet listening, as when a cluster first starts). A
 * round in which an ask timed out (a peer listens but is slow: a loaded machine) says
 * nothing about that peer, so it asks again: founding on that silence would let a member
 * that lost its state vote again. Answers from a majority are not enough either: a Raft
 * follower hears only the leader, so it may not know a member the leader knows (a follower
 * that never exchanged a vote with it) — when the leader's ask timed out and a follower
 * answered "unknown", the wiped member founded (CI, under load). Both give up at the
 * deadline.
 */
async function askPeers(o: SettleIdentityOptions, founding: boolean): Promise<IdentifyAnswer[]> {
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = o.now ?? Date.now;
  const deadline = now() + JOIN_DISCOVERY_TIMEOUT_MS;
  const addresses = Object.entries(o.config.peers);
  if (addresses.length === 0) return [];
  const heard = new Map<string, IdentifyAnswer>();
  for (;;) {
    const started = now();
    const round = await Promise.all(
      addresses.map(([id, address]) =>
        o.identify(address, o.config.nodeId, IDENTIFY_TIMEOUT_MS).then((a) =>
          // An answer from a node other than the one configured there is no answer.
          a !== null && a.nodeId === id ? a : null,
        ),
      ),
    );
    for (const a of round) if (a !== null) heard.set(a.nodeId, a);
    const answers = [...heard.values()];
    const timedOut =
      round.some((a) => a === null) && now() - started >= IDENTIFY_TIMEOUT_MS * IDENTIFY_TIMED_OUT;
    const enough = founding
      ? answers.some((a) => a.knownUid !== '') || !timedOut
      : answers.some((a) => a.clusterId !== '');
    if (enough || now() >= deadline) return answers;
    o.logger.info(
      { answered: answers.length, of: addresses.length },
      founding
        ? 'founding on an empty directory: a peer did not answer in time, so it cannot tell whether it knows this node; asking again'
        : 'joining: no peer knows the cluster id yet; asking again',
    );
    await sleep(JOIN_DISCOVERY_RETRY_MS);
  }
}
