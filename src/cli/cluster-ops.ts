/**
 * `concord cluster status | change | add | remove | transfer`: the operator's side of the
 * openapi. Each follows a not-leader answer once, to the leader the node names. A change
 * shows its plan first (membership-plan.ts), warns about the voters it leaves, asks before
 * removing a voter (unless --yes), and with --dry-run changes nothing.
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
import type { NodeHttpTls } from '../shared/node-fetch.ts';
import { requireNodeId } from '../shared/ids.ts';
import { confirm, type ConfirmOptions } from './confirm.ts';
import { cliHttpTls, type OperatorTlsOptions } from './operator-tls.ts';
import {
  isEmptyPlan,
  membersOfRaftClusterStr,
  planChange,
  planText,
  removedVoters,
  withAdded,
  withRemoved,
} from './membership-plan.ts';
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

/**
 * The leader's view when it can be reached (it alone knows lag, health and learners'
 * progress), else the node's.
 */
async function leaderView(
  server: HostPort,
  group: string,
  tls: NodeHttpTls | null,
): Promise<ClusterMetadata> {
  const md = await fetchClusterMetadata(server, { group, tls });
  const leader = md.nodes.find((n) => n.role === 'LEADER');
  if (leader?.control && md.answeredBy !== leader.nodeId) {
    try {
      const fromLeader = await fetchClusterMetadata(leader.control, { group, tls });
      if (fromLeader.term >= md.term) return fromLeader;
    } catch {
      // keep the answering node's view
    }
  }
  return md;
}

/** Status from the leader's view when it can be reached (it alone knows lag and health). */
export async function runStatus(
  opts: OperatorTlsOptions & {
    server: string;
    group: string;
    json?: boolean;
  },
): Promise<void> {
  const md = await leaderView(parseAddress(opts.server), opts.group, cliHttpTls(opts));
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
    if (at < 0) return { nodeId: requireNodeId(p, '--members entry') };
    const nodeId = p.slice(0, at);
    const rest = p.slice(at + 1);
    const m = /^(\[[^\]]+\]|[^:]+):(\d+):(\d+):(\d+)$/.exec(rest);
    if (!nodeId || !m)
      throw new BadRequestError(
        `--members entry ${JSON.stringify(p)} must be "id" or "id@host:raftPort:tcPort:httpPort"`,
      );
    const host = m[1]!;
    return {
      nodeId: requireNodeId(nodeId, '--members entry'),
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
async function settled(
  md: ClusterMetadata,
  group: string,
  tls: NodeHttpTls | null,
): Promise<ClusterMetadata> {
  if (md.leaderId !== null && md.answeredBy === md.leaderId) return md;
  const deadline = performance.now() + SETTLE_WAIT_MS;
  while (performance.now() < deadline) {
    for (const n of md.nodes) {
      if (!n.control) continue;
      try {
        const v = await fetchClusterMetadata(n.control, { group, timeoutMs: 1_000, tls });
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

export interface ChangeOptions extends OperatorTlsOptions {
  server: string;
  group: string;
  token?: string;
  json?: boolean;
  /** Print the plan and change nothing. */
  dryRun?: boolean;
  /** Do not ask before removing a voter. */
  yes?: boolean;
}

/** `cluster change`: the membership as listed (--members, or Seata's --raft-cluster-str). */
export async function runChange(
  opts: ChangeOptions & { members?: string; raftClusterStr?: string },
  io: Pick<ConfirmOptions, 'input' | 'output'> = {},
): Promise<void> {
  if ((opts.members === undefined) === (opts.raftClusterStr === undefined))
    throw new BadRequestError('give exactly one of --members or --raft-cluster-str');
  const members = opts.members !== undefined ? parseMemberList(opts.members) : null;
  await applyChange(
    opts,
    (md) => members ?? membersOfRaftClusterStr(md, opts.raftClusterStr!),
    members !== null ? { members } : { raftClusterStr: opts.raftClusterStr! },
    io,
  );
}

/** `cluster add <id@host:raftPort:tcPort:httpPort>`: the members now, and this one. */
export async function runAdd(
  opts: ChangeOptions & { node: string },
  io: Pick<ConfirmOptions, 'input' | 'output'> = {},
): Promise<void> {
  const [spec] = parseMemberList(opts.node);
  if (!spec || opts.node.includes(','))
    throw new BadRequestError('cluster add takes one node: id@host:raftPort:tcPort:httpPort');
  await applyChange(opts, (md) => withAdded(md, spec), null, io);
}

/** `cluster remove <nodeId>`: the members now but this one. */
export async function runRemove(
  opts: ChangeOptions & { node: string },
  io: Pick<ConfirmOptions, 'input' | 'output'> = {},
): Promise<void> {
  const node = requireNodeId(opts.node, 'the node id');
  await applyChange(opts, (md) => withRemoved(md, node), null, io);
}

/**
 * Shows the plan (from the leader's view), warns about the voters left, stops there on
 * --dry-run, asks before removing a voter (unless --yes), then sends the change — the
 * listed members (`change` null: as planned) — to the leader.
 */
async function applyChange(
  opts: ChangeOptions,
  desiredOf: (md: ClusterMetadata) => MemberSpec[],
  change: { members: MemberSpec[] } | { raftClusterStr: string } | null,
  io: Pick<ConfirmOptions, 'input' | 'output'>,
): Promise<void> {
  const server = parseAddress(opts.server);
  // The token first: a change without one would be refused after the question.
  const token = opts.dryRun
    ? (opts.token ?? process.env[AUTH_TOKEN_ENV] ?? '')
    : tokenOf(opts.token);
  const tls = cliHttpTls(opts);
  const md = await leaderView(server, opts.group, tls);
  if (md.storeMode === 'db')
    throw new BadRequestError(
      'this cluster runs in db mode: there is no Raft membership to change (start or stop nodes instead)',
    );
  const desired = desiredOf(md);
  const plan = planChange(md, desired);
  // The plan and its warnings go to stderr with --json, so stdout stays one JSON document.
  const say = opts.json ? console.error : console.log;
  say(planText(plan));
  if (opts.dryRun) {
    if (opts.json) console.log(JSON.stringify({ dryRun: true, plan }, null, 2));
    else console.log('\nDry run: nothing changed.');
    return;
  }
  if (isEmptyPlan(plan)) {
    if (opts.json) console.log(JSON.stringify({ steps: [], plan, metadata: md }, null, 2));
    return;
  }
  const voters = removedVoters(plan);
  if (voters.length > 0) {
    const agreed = await confirm(
      `Remove voter${voters.length > 1 ? 's' : ''} ${voters.join(', ')}${plan.warnings.length > 0 ? ' (see the warning above)' : ''}?`,
      { yes: opts.yes === true, ...io },
    );
    if (!agreed) {
      console.error('Nothing changed.');
      return;
    }
  }
  const answer = await onLeader(server, (target) =>
    changeCluster(target, change ?? { members: desired }, { token, group: opts.group, tls }),
  );
  answer.metadata = await settled(answer.metadata, opts.group, tls);
  if (opts.json) {
    console.log(JSON.stringify({ ...answer, plan }, null, 2));
    return;
  }
  if (answer.steps.length === 0)
    console.log('Nothing to change: the membership is already as asked.');
  else for (const s of answer.steps) console.log(`${style('green', '✔')} ${s.type} ${s.nodeId}`);
  console.log(`\n${metadataTable(answer.metadata)}`);
}

export async function runTransfer(
  opts: OperatorTlsOptions & {
    server: string;
    group: string;
    to: string;
    token?: string;
    json?: boolean;
  },
): Promise<void> {
  const server = parseAddress(opts.server);
  const to = requireNodeId(opts.to, '--to');
  const token = tokenOf(opts.token);
  const tls = cliHttpTls(opts);
  const md = await settled(
    await onLeader(server, (target) =>
      transferLeader(target, to, { token, group: opts.group, tls }),
    ),
    opts.group,
    tls,
  );
  if (opts.json) console.log(JSON.stringify(md, null, 2));
  else
    console.log(
      `${style('green', '✔')} leadership is now with ${opts.to} (term ${md.term})\n\n${metadataTable(md)}`,
    );
}
