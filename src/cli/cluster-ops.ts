/**
 * `concord cluster status | change | transfer`: the operator's side of the openapi.
 * Each follows a not-leader answer once, to the leader the node names.
 */
import {
  type ClusterMetadata,
  type HostPort,
  type MemberSpec,
  changeCluster,
  fetchClusterMetadata,
  formatHostPort,
  parseAddress,
  transferLeader,
} from '../client/http-metadata.ts';
import { AUTH_TOKEN_ENV } from '../server/config.ts';
import { BadRequestError, NotLeaderError } from '../shared/errors.ts';
import { renderTable, style } from './table.ts';

export function metadataTable(md: ClusterMetadata): string {
  const leader = md.nodes.find((n) => n.role === 'LEADER');
  const head = `group ${style('bold', md.group)} · term ${md.term} · leader ${style('bold', md.leaderId ?? 'none (election in progress)')} · store ${md.storeMode} · answered by ${md.answeredBy} (commit ${md.commitIndex}, applied ${md.appliedIndex})`;
  const rows = md.nodes.map((n) => [
    n.nodeId,
    n.role === 'LEADER' ? style('green', n.role) : n.role,
    n.healthy === null ? '?' : n.healthy ? 'yes' : style('red', 'no'),
    n.lag === undefined ? (leader ? '?' : '-') : String(n.lag),
    n.control ? formatHostPort(n.control) : '-',
    n.transaction ? formatHostPort(n.transaction) : '-',
    n.internal ? formatHostPort(n.internal) : '-',
  ]);
  const table = renderTable(
    ['NODE', 'ROLE', 'HEALTHY', 'LAG', 'CONTROL (HTTP)', 'TRANSACTION (TC)', 'RAFT'],
    rows,
  );
  return `${head}\n\n${table}`;
}

/** Status from the leader's view when it can be reached (it alone knows lag and health). */
export async function runStatus(opts: {
  server: string;
  group: string;
  json?: boolean;
}): Promise<void> {
  const server = parseAddress(opts.server);
  let md = await fetchClusterMetadata(server, { group: opts.group });
  const leader = md.nodes.find((n) => n.role === 'LEADER');
  if (leader?.control && md.answeredBy !== leader.nodeId) {
    try {
      const fromLeader = await fetchClusterMetadata(leader.control, { group: opts.group });
      if (fromLeader.term >= md.term) md = fromLeader;
    } catch {
      // keep the answering node's view
    }
  }
  if (opts.json) console.log(JSON.stringify(md, null, 2));
  else console.log(metadataTable(md));
}

/**
 * Parses `--members`: a comma-separated list where an existing member is just its node id
 * and a new one is `id@host:raftPort:tcPort:httpPort` (IPv6: `id@[::1]:9094:8094:7094`).
 */
export function parseMemberList(list: string): MemberSpec[] {
  const parts = list.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.every((p) => p === ''))
    throw new BadRequestError('--members is empty');
  return parts.map((p) => {
    if (p === '') throw new BadRequestError(`--members ${JSON.stringify(list)} has an empty entry`);
    const at = p.indexOf('@');
    if (at < 0) return { nodeId: p };
    const nodeId = p.slice(0, at);
    const rest = p.slice(at + 1);
    const m = /^(\[[^\]]+\]|[^:]+):(\d+):(\d+):(\d+)$/.exec(rest);
    if (!nodeId || !m)
      throw new BadRequestError(
        `--members entry ${JSON.stringify(p)} must be "id" or "id@host:raftPort:tcPort:httpPort"`,
      );
    const host = m[1]!;
    return {
      nodeId,
      raft: `${host}:${m[2]}`,
      transaction: `${host}:${m[3]}`,
      control: `${host}:${m[4]}`,
    };
  });
}

/** How long change/transfer wait for the new leader's view after leadership moved, in ms. */
export const SETTLE_WAIT_MS = 5_000;

/**
 * After a transfer, or the leader's removal of itself, the answering node no longer leads:
 * show the new leader's view instead, once a member reports one (within SETTLE_WAIT_MS).
 */
async function settled(md: ClusterMetadata, group: string): Promise<ClusterMetadata> {
  if (md.leaderId !== null && md.answeredBy === md.leaderId) return md;
  const deadline = performance.now() + SETTLE_WAIT_MS;
  while (performance.now() < deadline) {
    for (const n of md.nodes) {
      if (!n.control) continue;
      try {
        const v = await fetchClusterMetadata(n.control, { group, timeoutMs: 1_000 });
        if (v.leaderId !== null && v.answeredBy === v.leaderId && v.term >= md.term) return v;
      } catch {
        // try the next member
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return md;
}

export function tokenOf(token: string | undefined): string {
  const t = token ?? process.env[AUTH_TOKEN_ENV];
  if (!t) throw new BadRequestError(`a token is required: --token <token> or ${AUTH_TOKEN_ENV}`);
  return t;
}

/** Runs `fn` on the server; on a not-leader answer, once more on the leader it names. */
export async function onLeader<T>(
  server: HostPort,
  fn: (target: HostPort) => Promise<T>,
): Promise<T> {
  try {
    return await fn(server);
  } catch (err) {
    const hint = err instanceof NotLeaderError ? err.leader : null;
    if (!hint?.control) throw err;
    console.error(
      style(
        'dim',
        `${formatHostPort(server)} is not the leader; sending to ${hint.nodeId} at ${formatHostPort(hint.control)}`,
      ),
    );
    return fn(hint.control);
  }
}

export async function runChange(opts: {
  server: string;
  group: string;
  members?: string;
  raftClusterStr?: string;
  token?: string;
  json?: boolean;
}): Promise<void> {
  const server = parseAddress(opts.server);
  const token = tokenOf(opts.token);
  if ((opts.members === undefined) === (opts.raftClusterStr === undefined))
    throw new BadRequestError('give exactly one of --members or --raft-cluster-str');
  const change =
    opts.members !== undefined
      ? { members: parseMemberList(opts.members) }
      : { raftClusterStr: opts.raftClusterStr! };
  const answer = await onLeader(server, (target) =>
    changeCluster(target, change, { token, group: opts.group }),
  );
  answer.metadata = await settled(answer.metadata, opts.group);
  if (opts.json) {
    console.log(JSON.stringify(answer, null, 2));
    return;
  }
  if (answer.steps.length === 0)
    console.log('Nothing to change: the membership is already as asked.');
  else for (const s of answer.steps) console.log(`${style('green', '✔')} ${s.type} ${s.nodeId}`);
  console.log(`\n${metadataTable(answer.metadata)}`);
}

export async function runTransfer(opts: {
  server: string;
  group: string;
  to: string;
  token?: string;
  json?: boolean;
}): Promise<void> {
  const server = parseAddress(opts.server);
  const token = tokenOf(opts.token);
  const md = await settled(
    await onLeader(server, (target) =>
      transferLeader(target, opts.to, { token, group: opts.group }),
    ),
    opts.group,
  );
  if (opts.json) console.log(JSON.stringify(md, null, 2));
  else
    console.log(
      `${style('green', '✔')} leadership is now with ${opts.to} (term ${md.term})\n\n${metadataTable(md)}`,
    );
}
