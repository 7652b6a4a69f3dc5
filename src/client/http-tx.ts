/**
 * The openapi's read-only transaction routes (GET /tx/v1/sessions, /tx/v1/session), as
 * `concord tx list|show` read them. Bearer token as for the membership routes. Answers
 * are checked for their shape as far as the CLI relies on it.
 */
import { UnknownXidError } from '../shared/errors.ts';
import type { GlobalStatus } from '../shared/tc-vocabulary.ts';
import type { TxListView, TxSessionAnswer } from '../shared/tx-view.ts';
import {
  UnexpectedAnswerError,
  answerError,
  request,
  type HostPort,
  type RequestOptions,
} from './http-metadata.ts';

export interface TxListQuery {
  status?: GlobalStatus;
  application?: string;
  olderThanMs?: number;
  stuck?: boolean;
  stuckAfterMs?: number;
  pageSize?: number;
  pageToken?: string;
  group?: string;
}

const isObj = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

export async function fetchTxList(
  base: HostPort,
  query: TxListQuery,
  opts: RequestOptions & { token: string },
): Promise<TxListView> {
  const q = new URLSearchParams();
  if (query.group !== undefined) q.set('group', query.group);
  if (query.status !== undefined) q.set('status', query.status);
  if (query.application !== undefined) q.set('application', query.application);
  if (query.olderThanMs !== undefined) q.set('olderThanMs', String(query.olderThanMs));
  if (query.stuck) q.set('stuck', 'true');
  if (query.stuckAfterMs !== undefined) q.set('stuckAfterMs', String(query.stuckAfterMs));
  if (query.pageSize !== undefined) q.set('pageSize', String(query.pageSize));
  if (query.pageToken !== undefined) q.set('pageToken', query.pageToken);
  const a = await request(base, 'GET', `/tx/v1/sessions?${q.toString()}`, undefined, opts);
  if (a.status !== 200) throw answerError(base, a);
  if (!isObj(a.body) || !Array.isArray(a.body.sessions))
    throw new UnexpectedAnswerError(200, 'the transaction list lacks sessions');
  return a.body as unknown as TxListView;
}

export async function fetchTxSession(
  base: HostPort,
  xid: string,
  opts: RequestOptions & { token: string; group?: string; stuckAfterMs?: number },
): Promise<TxSessionAnswer> {
  const q = new URLSearchParams({ xid });
  if (opts.group !== undefined) q.set('group', opts.group);
  if (opts.stuckAfterMs !== undefined) q.set('stuckAfterMs', String(opts.stuckAfterMs));
  const a = await request(base, 'GET', `/tx/v1/session?${q.toString()}`, undefined, opts);
  if (a.status === 404 && isObj(a.body) && isObj(a.body.error))
    if (a.body.error.code === 'UNKNOWN_XID') throw new UnknownXidError(xid);
  if (a.status !== 200) throw answerError(base, a);
  if (!isObj(a.body) || !isObj(a.body.session))
    throw new UnexpectedAnswerError(200, 'the transaction answer lacks the session');
  return a.body as unknown as TxSessionAnswer;
}
