/**
 * The openapi's read-only transaction routes (what `concord tx list|show` read), behind the
 * Bearer token the membership routes use. The TC service mounts them on the node's openapi.
 *
 *   GET /tx/v1/sessions?status=&application=&olderThanMs=&stuck=&stuckAfterMs=&pageSize=&pageToken=
 *       a page of live transactions in xid order (every given filter must match)
 *   GET /tx/v1/session?xid=[&stuckAfterMs=]
 *       one transaction: branches, the rows they lock, retry state; or a finished one's record
 *
 * raft mode: only the leader answers (421 NOT_LEADER naming it otherwise), like every TC read.
 * Changing a transaction (retry, stop, resume, resolve) is the TC's gRPC operator calls.
 */
import type { IncomingMessage } from 'node:http';
import { BadRequestError, UnknownXidError } from '../../shared/errors.ts';
import { requireXid } from '../../shared/ids.ts';
import { MAX_RESOURCE_ID_CHARS } from '../../shared/protocol-limits.ts';
import { GlobalStatus, isGlobalStatus } from '../../shared/tc-vocabulary.ts';
import { MAX_LIST_PAGE_SIZE } from '../tc/limits.ts';
import type { TxFilter, TxQuery } from '../tc/tx-query.ts';
import { requireBearer } from './body.ts';
import { strictQuery } from './query.ts';
import { UnknownGroupError } from './errors.ts';
import type { Answer, Route } from './server.ts';

export const TX_SESSIONS_PATH = '/tx/v1/sessions';
export const TX_SESSION_PATH = '/tx/v1/session';
/** Largest age or threshold a query may name, ms (ten years). */
const MAX_QUERY_MS = 10 * 365 * 24 * 3600 * 1000;

export interface TxRoutesOptions {
  query: Pick<TxQuery, 'list' | 'get'>;
  authToken: string | null;
  group: string;
}

/** The routes by path, for OpenApiServer.mount. */
export function txRoutes(o: TxRoutesOptions): Array<[string, Route]> {
  return [
    [TX_SESSIONS_PATH, { method: 'GET', handle: (req, url) => list(o, req, url) }],
    [TX_SESSION_PATH, { method: 'GET', handle: (req, url) => show(o, req, url) }],
  ];
}

async function list(o: TxRoutesOptions, req: IncomingMessage, url: URL): Promise<Answer> {
  requireBearer(req, o.authToken);
  const q = params(url, [
    'group',
    'status',
    'application',
    'olderThanMs',
    'stuck',
    'stuckAfterMs',
    'pageSize',
    'pageToken',
  ]);
  checkGroup(o, q.group);
  const filter: TxFilter = {
    status: q.status === undefined ? null : statusParam(q.status),
    applicationId: q.application === undefined ? null : applicationParam(q.application),
    olderThanMs: q.olderThanMs === undefined ? null : msParam('olderThanMs', q.olderThanMs),
    stuck: q.stuck === undefined ? false : boolParam('stuck', q.stuck),
    stuckAfterMs: q.stuckAfterMs === undefined ? null : msParam('stuckAfterMs', q.stuckAfterMs),
  };
  const page = await o.query.list({
    filter,
    ...(q.pageSize !== undefined
      ? { pageSize: intParam('pageSize', q.pageSize, 1, MAX_LIST_PAGE_SIZE) }
      : {}),
    ...(q.pageToken !== undefined ? { pageToken: q.pageToken } : {}),
  });
  return { status: 200, body: page };
}

async function show(o: TxRoutesOptions, req: IncomingMessage, url: URL): Promise<Answer> {
  requireBearer(req, o.authToken);
  const q = params(url, ['group', 'xid', 'stuckAfterMs']);
  checkGroup(o, q.group);
  const xid = requireXid(q.xid);
  const answer = await o.query.get(
    xid,
    q.stuckAfterMs === undefined ? null : msParam('stuckAfterMs', q.stuckAfterMs),
  );
  if (answer === null) throw new UnknownXidError(xid);
  return { status: 200, body: answer };
}

// ------------------------------------------------------------------ query parameters

/** The query's parameters; an unknown or repeated one is refused (a typo must not widen a list). */
function params(url: URL, allowed: readonly string[]): Record<string, string | undefined> {
  return strictQuery(url, allowed, { dropEmpty: false });
}

function checkGroup(o: TxRoutesOptions, group: string | undefined): void {
  if (group !== undefined && group !== o.group) throw new UnknownGroupError(group, o.group);
}

function statusParam(v: string): GlobalStatus {
  if (!isGlobalStatus(v) || v === GlobalStatus.Unknown)
    throw new BadRequestError(
      `status ${JSON.stringify(v.slice(0, 64))} is not a global status (e.g. CommitRetrying, RollbackFailed, StopCommitOrCommitRetry)`,
    );
  return v;
}

function applicationParam(v: string): string {
  if (v === '' || v.length > MAX_RESOURCE_ID_CHARS)
    throw new BadRequestError(`application must be 1..${MAX_RESOURCE_ID_CHARS} characters`);
  return v;
}

function intParam(name: string, v: string, min: number, max: number): number {
  if (!/^\d{1,15}$/.test(v)) throw new BadRequestError(`${name} must be a whole number`);
  const n = Number(v);
  if (n < min || n > max) throw new BadRequestError(`${name} must be ${min}..${max}, got ${n}`);
  return n;
}

function msParam(name: string, v: string): number {
  return intParam(name, v, 0, MAX_QUERY_MS);
}

function boolParam(name: string, v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new BadRequestError(`${name} must be true or false`);
}
