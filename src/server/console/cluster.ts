/**
 * The console's cluster view: every member with its role, term, commit and applied index
 * (each member's own /health, asked in parallel with a short timeout), its lag and health
 * (the leader's view: this node's when it leads, else the leader's /metadata/v1/cluster).
 */
import { formatHostPort, type ClusterMetadata, type HostPort } from '../../shared/metadata.ts';
import { nodeFetch, nodeUrl, type NodeHttpTls } from '../../shared/node-fetch.ts';
import type { ClusterView } from '../cluster-view.ts';

/** How long the console waits for another member's /health or metadata, ms. */
export const MEMBER_PROBE_TIMEOUT_MS = 1_000;

export interface MemberView {
  nodeId: string;
  /** From the membership: LEADER, FOLLOWER or LEARNER. */
  role: string;
  /** What the member says of itself (null: it did not answer). */
  ownRole: string | null;
  term: number | null;
  commitIndex: number | null;
  appliedIndex: number | null;
  lag: number | null;
  matchIndex: number | null;
  /** The leader's view: answered within an election timeout. */
  healthy: boolean | null;
  /** It answered this probe. */
  reachable: boolean;
  http: string | null;
}

export interface ClusterAnswer {
  group: string;
  storeMode: string;
  term: number;
  leaderId: string | null;
  answeredBy: string;
  metadataVersion: string;
  members: MemberView[];
  now: number;
}

interface Health {
  role: string;
  term: number;
  commitIndex: number;
  appliedIndex: number;
}

async function getJson<T>(
  control: HostPort | null,
  path: string,
  tls: NodeHttpTls | null,
): Promise<T | null> {
  if (control === null) return null;
  try {
    const res = await nodeFetch(
      nodeUrl(tls, control, path),
      { signal: AbortSignal.timeout(MEMBER_PROBE_TIMEOUT_MS) },
      tls,
    );
    return res.status === 200 ? ((await res.json()) as T) : null;
  } catch {
    return null;
  }
}

export async function clusterAnswer(
  view: ClusterView,
  selfId: string,
  tls: NodeHttpTls | null,
): Promise<ClusterAnswer> {
  const md = view.metadata();
  const st = view.status();
  const leaderMd: ClusterMetadata | null =
    md.leaderId === selfId || md.leaderId === null
      ? md
      : await getJson<ClusterMetadata>(
          md.nodes.find((n) => n.nodeId === md.leaderId)?.control ?? null,
          `/metadata/v1/cluster?group=${encodeURIComponent(md.group)}`,
          tls,
        );
  const members = await Promise.all(
    md.nodes.map(async (n): Promise<MemberView> => {
      const h: Health | null =
        n.nodeId === selfId
          ? { role: st.role, term: st.term, commitIndex: st.commit, appliedIndex: st.applied }
          : await getJson<Health>(n.control, '/health', tls);
      const lm = leaderMd?.nodes.find((x) => x.nodeId === n.nodeId);
      return {
        nodeId: n.nodeId,
        role: n.role,
        ownRole: h?.role ?? null,
        term: h?.term ?? null,
        commitIndex: h?.commitIndex ?? null,
        appliedIndex: h?.appliedIndex ?? null,
        lag: lm?.lag ?? null,
        matchIndex: lm?.matchIndex ?? null,
        healthy: lm?.healthy ?? n.healthy,
        reachable: h !== null,
        http: n.control ? formatHostPort(n.control) : null,
      };
    }),
  );
  return {
    group: md.group,
    storeMode: md.storeMode,
    term: md.term,
    leaderId: md.leaderId,
    answeredBy: selfId,
    metadataVersion: md.metadataVersion,
    members,
    now: Date.now(),
  };
}
