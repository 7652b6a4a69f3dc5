/**
 * The console's operator actions, run on the leader (followers forward them), each logged
 * as one audit line (`"audit": true`, like the TC's operator calls: tc/audit.ts) whatever
 * its outcome:
 *
 *   retryNow, stopRetry, resumeRetry, markResolved   the coordinator's operator calls
 *   transferLeader, changeMembership                 the openapi's own routes on this node
 *                                                    (POST /metadata/v1/transferLeader,
 *                                                    /metadata/v1/changeCluster)
 */
import type { Coordinator } from '../../coordinator/index.ts';
import { BadRequestError, ConcordError, NotLeaderError } from '../../shared/errors.ts';
import { requireXid, type Xid } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import type { HostPort } from '../../shared/metadata.ts';
import { nodeFetch, nodeUrl, type NodeHttpTls } from '../../shared/node-fetch.ts';
import { HttpError } from '../http/errors.ts';
import type { Answer } from '../http/server.ts';

export const ACTIONS = [
  'retryNow',
  'stopRetry',
  'resumeRetry',
  'markResolved',
  'transferLeader',
  'changeMembership',
] as const;
export type ConsoleAction = (typeof ACTIONS)[number];
/** Members a membership change may name. */
const MAX_MEMBERS = 15;

export interface ActionRequest {
  action: ConsoleAction;
  xid: Xid | null;
  nodeId: string | null;
  members: unknown[] | null;
  /** resumeRetry past the retry horizon (the RMs may have cleaned up their fence rows). */
  force: boolean;
}

export function parseAction(body: Record<string, unknown>): ActionRequest {
  const action = body.action;
  if (typeof action !== 'string' || !(ACTIONS as readonly string[]).includes(action))
    throw new BadRequestError(`action must be one of ${ACTIONS.join(', ')}`);
  const a = action as ConsoleAction;
  const txAction = a !== 'transferLeader' && a !== 'changeMembership';
  const xid = txAction ? requireXid(body.xid) : null;
  if (a === 'markResolved' && body.confirmXid !== xid)
    throw new BadRequestError('confirmXid must repeat the xid: resolving releases its locks');
  const nodeId = a === 'transferLeader' ? body.nodeId : null;
  if (a === 'transferLeader' && (typeof nodeId !== 'string' || !/^[\w.-]{1,64}$/.test(nodeId)))
    throw new BadRequestError('nodeId must name a member');
  const members = a === 'changeMembership' ? body.members : null;
  if (
    a === 'changeMembership' &&
    (!Array.isArray(members) || members.length === 0 || members.length > MAX_MEMBERS)
  )
    throw new BadRequestError(`members must be a list of 1..${MAX_MEMBERS} members`);
  if (body.force !== undefined && typeof body.force !== 'boolean')
    throw new BadRequestError('force must be true or false');
  return {
    action: a,
    xid,
    nodeId: nodeId as string | null,
    members: members as unknown[] | null,
    force: a === 'resumeRetry' && body.force === true,
  };
}

export interface ActionContext {
  coordinator: Coordinator;
  /** This node's openapi, for the membership routes. */
  selfHttp: () => HostPort | null;
  adminToken: string;
  group: string;
  log: Logger;
  /** The cluster's CA: this node's openapi speaks HTTPS (null: plain HTTP). */
  httpTls: NodeHttpTls | null;
}

/** Runs one action on this node and logs its audit line; answers the action's result. */
export async function runAction(
  ctx: ActionContext,
  a: ActionRequest,
  who: { operator: string; peer: string },
): Promise<Answer> {
  let outcome = 'OK';
  let globalStatus: unknown;
  try {
    const answer = await perform(ctx, a, who.operator);
    if (answer.status >= 400) outcome = `HTTP ${answer.status}`;
    globalStatus = (answer.body as { globalStatus?: unknown } | undefined)?.globalStatus;
    return answer;
  } catch (err) {
    outcome = err instanceof ConcordError || err instanceof HttpError ? err.code : 'INTERNAL';
    throw err;
  } finally {
    ctx.log.info(
      {
        audit: true,
        action: a.action,
        via: 'console',
        xid: a.xid ?? '',
        ...(a.nodeId !== null ? { nodeId: a.nodeId } : {}),
        ...(a.members !== null ? { members: a.members.length } : {}),
        ...(a.force ? { force: true } : {}),
        operator: who.operator,
        peer: who.peer,
        at: new Date().toISOString(),
        outcome,
        ...(globalStatus !== undefined ? { globalStatus } : {}),
      },
      `operator action ${a.action}`,
    );
  }
}

async function perform(ctx: ActionContext, a: ActionRequest, operator: string): Promise<Answer> {
  const c = ctx.coordinator;
  switch (a.action) {
    case 'retryNow':
      return ok({ globalStatus: await c.retryNow({ xid: a.xid! }) });
    case 'stopRetry':
      await c.stopRetry({ xid: a.xid! });
      return ok({});
    case 'resumeRetry':
      return ok({ globalStatus: await c.resumeRetry({ xid: a.xid!, force: a.force, operator }) });
    case 'markResolved': {
      const r = await c.markResolved({ xid: a.xid!, confirmXid: a.xid!, operator });
      return ok({ globalStatus: r.status });
    }
    case 'transferLeader':
      return openapi(
        ctx,
        `/metadata/v1/transferLeader?nodeId=${encodeURIComponent(a.nodeId!)}`,
        {},
      );
    case 'changeMembership':
      return openapi(ctx, '/metadata/v1/changeCluster', { members: a.members });
  }
}

function ok(body: Record<string, unknown>): Answer {
  return { status: 200, body: { ok: true, ...body } };
}

/** POSTs to this node's own openapi route; a NOT_LEADER answer is thrown (to be forwarded). */
async function openapi(ctx: ActionContext, path: string, body: object): Promise<Answer> {
  const self = ctx.selfHttp();
  if (self === null) throw new NotLeaderError(null);
  const sep = path.includes('?') ? '&' : '?';
  const res = await nodeFetch(
    nodeUrl(ctx.httpTls, self, `${path}${sep}group=${encodeURIComponent(ctx.group)}`),
    {
      method: 'POST',
      headers: { authorization: `Bearer ${ctx.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    },
    ctx.httpTls,
  );
  const text = await res.text();
  if (res.status === 421) {
    const leader = (JSON.parse(text) as { leader?: { nodeId?: string } | null }).leader;
    throw new NotLeaderError(leader?.nodeId ?? null);
  }
  return { status: res.status, text, contentType: 'application/json; charset=utf-8' };
}
