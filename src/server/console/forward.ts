/**
 * Any node, any time: a console request that only the leader can answer (transaction reads,
 * the charts, actions) is forwarded by a follower to the leader it knows, with the bearer
 * token of the caller's role, and the leader's answer handed back as it came. A forwarded
 * request is never forwarded again (a leader that lost its role answers NOT_LEADER, and the
 * page asks again after the election).
 */
import type { IncomingMessage } from 'node:http';
import { NotLeaderError } from '../../shared/errors.ts';
import { nodeFetch, nodeUrl, type NodeHttpTls } from '../../shared/node-fetch.ts';
import type { ClusterView } from '../cluster-view.ts';
import type { Answer } from '../http/server.ts';
import type { Principal } from './auth.ts';
import { LeaderUnreachableError } from './errors.ts';

export const FORWARDED_HEADER = 'x-concord-console-forwarded';
export const PEER_HEADER = 'x-concord-console-peer';
export const OPERATOR_HEADER = 'x-concord-console-operator';
/** How long a forwarded request may take, ms (a leadership transfer waits for the new leader). */
export const FORWARD_TIMEOUT_MS = 25_000;

/** The caller's address: the original browser's when a follower forwarded the request. */
export function peerOf(req: IncomingMessage, p: Principal): string {
  const forwarded = req.headers[PEER_HEADER];
  if (p.via === 'bearer' && typeof forwarded === 'string') return forwarded.slice(0, 128);
  return `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`;
}

/** The operator name for the audit line. */
export function operatorOf(req: IncomingMessage, p: Principal): string {
  const forwarded = req.headers[OPERATOR_HEADER];
  const name = p.via === 'bearer' && typeof forwarded === 'string' ? forwarded : p.name;
  // eslint-disable-next-line no-control-regex
  const clean = name.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 64);
  return `console:${clean === '' ? p.role : clean}`;
}

export class LeaderForwarder {
  constructor(
    private readonly selfId: string,
    private readonly view: ClusterView,
    private readonly tls: NodeHttpTls | null,
  ) {}

  /**
   * Runs `local` where this node serves TC calls; elsewhere, or when it loses the role
   * meanwhile, asks the leader.
   */
  async onLeader(
    serving: boolean,
    req: IncomingMessage,
    url: URL,
    p: Principal,
    body: string | null,
    local: () => Promise<Answer>,
  ): Promise<Answer> {
    if (serving) {
      try {
        return await local();
      } catch (err) {
        if (!(err instanceof NotLeaderError)) throw err;
        return this.forward(req, url, p, body, err.leaderId);
      }
    }
    return this.forward(req, url, p, body, null);
  }

  private async forward(
    req: IncomingMessage,
    url: URL,
    p: Principal,
    body: string | null,
    leaderId: string | null,
  ): Promise<Answer> {
    const id = leaderId ?? this.view.status().leader;
    if (req.headers[FORWARDED_HEADER] !== undefined || id === null || id === this.selfId)
      throw new NotLeaderError(id === this.selfId ? null : id);
    const control = this.view.leaderInfo(id)?.control ?? null;
    if (control === null) throw new LeaderUnreachableError(`no HTTP address known for ${id}`);
    let res: Response;
    try {
      res = await nodeFetch(
        nodeUrl(this.tls, control, `${url.pathname}${url.search}`),
        {
          method: req.method ?? 'GET',
          headers: {
            authorization: `Bearer ${p.token}`,
            'content-type': 'application/json',
            [FORWARDED_HEADER]: this.selfId,
            [PEER_HEADER]: peerOf(req, p),
            [OPERATOR_HEADER]: operatorOf(req, p).slice('console:'.length),
          },
          ...(body !== null ? { body } : {}),
          signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
        },
        this.tls,
      );
    } catch (err) {
      throw new LeaderUnreachableError(`${id}: ${(err as Error).message}`);
    }
    return {
      status: res.status,
      text: await res.text(),
      contentType: res.headers.get('content-type') ?? 'application/json; charset=utf-8',
      headers: { 'x-concord-answered-by': id },
    };
  }
}
