/**
 * A small client for a Concord node's HTTP openapi (metadata, watch, membership), used by
 * the discovery client and the CLI. The wire shapes are the shared ones
 * (src/shared/metadata.ts); every answer is checked against them as it is read.
 *
 * Errors are typed: NotLeaderError (421, with the leader the node named), UnauthorizedError
 * (401), BadRequestError (400/404/413/415), ChangeInProgressError (409), TimeoutError
 * (504 or no answer in time), UnavailableError (503, connection refused or reset).
 */
import {
  BadRequestError,
  ChangeInProgressError,
  ConcordError,
  type ConcordErrorOptions,
  NotLeaderError,
  TimeoutError,
  UnauthorizedError,
  UnavailableError,
} from '../shared/errors.ts';
import {
  formatHostPort,
  type ClusterMetadata,
  type HostPort,
  type LeaderHint,
  type MemberRole,
  type NodeMetadata,
} from '../shared/metadata.ts';

import { nodeFetch, nodeUrl, type NodeHttpTls } from '../shared/node-fetch.ts';
import { nodeHttpTlsFromEnv } from './tls.ts';
import {
  closedWithoutAnswer,
  grpcPortGivenForHttp,
  httpAnswerIsGrpc,
  httpsFailure,
  httpsRequired,
  probeTls,
} from './wrong-port.ts';

export { formatHostPort, UnavailableError };
export type { ClusterMetadata, HostPort, LeaderHint, MemberRole, NodeMetadata };

/** Upper bound on an answer body the client reads, in bytes. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;
/** Default time for a plain request (not a watch or a membership change), in ms. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
/** Extra time a watch request waits beyond its server-side timeout, in ms. */
export const WATCH_GRACE_MS = 5_000;

/** An answer the client did not expect (a status or a body it cannot read). */
export class UnexpectedAnswerError extends ConcordError {
  readonly status: number;
  constructor(status: number, message: string, options: ConcordErrorOptions = {}) {
    super('INTERNAL', message, options);
    this.status = status;
  }
}

/** Parses "host:port", "[v6]:port" or "http://host:port". */
export function parseAddress(s: string): HostPort {
  const text = s
    .trim()
    .replace(/^https?:\/\//, '')
    .replace(/\/+$/, '');
  let host: string;
  let port: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    host = text.slice(1, close);
    port = close >= 0 && text[close + 1] === ':' ? text.slice(close + 2) : '';
  } else {
    const at = text.lastIndexOf(':');
    host = at > 0 ? text.slice(0, at) : '';
    port = at > 0 ? text.slice(at + 1) : '';
  }
  const n = Number(port);
  if (host === '' || !/^\d{1,5}$/.test(port) || n < 1 || n > 65535)
    throw new BadRequestError(`${JSON.stringify(s)} is not a "host:port" address`);
  return { host, port: n };
}

// ------------------------------------------------------------------ validation of answers

const isObj = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

function hostPortOrNull(x: unknown): HostPort | null {
  if (!isObj(x) || typeof x.host !== 'string' || typeof x.port !== 'number') return null;
  return { host: x.host, port: x.port };
}

export function checkMetadata(x: unknown): ClusterMetadata {
  if (!isObj(x) || typeof x.term !== 'number' || !Array.isArray(x.nodes))
    throw new UnexpectedAnswerError(200, 'metadata answer lacks term or nodes');
  const nodes: NodeMetadata[] = x.nodes.map((n: unknown) => {
    if (
      !isObj(n) ||
      typeof n.nodeId !== 'string' ||
      (n.role !== 'LEADER' && n.role !== 'FOLLOWER' && n.role !== 'LEARNER')
    ) {
      throw new UnexpectedAnswerError(200, 'metadata node lacks nodeId or role');
    }
    const out: NodeMetadata = {
      group: typeof n.group === 'string' ? n.group : String(x.group ?? 'default'),
      nodeId: n.nodeId,
      role: n.role,
      term: typeof n.term === 'number' ? n.term : (x.term as number),
      control: hostPortOrNull(n.control),
      transaction: hostPortOrNull(n.transaction),
      internal: hostPortOrNull(n.internal),
      healthy: typeof n.healthy === 'boolean' ? n.healthy : null,
      version: typeof n.version === 'string' ? n.version : null,
    };
    if (typeof n.matchIndex === 'number') out.matchIndex = n.matchIndex;
    if (typeof n.lag === 'number') out.lag = n.lag;
    return out;
  });
  const leader = nodes.find((n) => n.role === 'LEADER');
  return {
    storeMode: x.storeMode === 'db' ? 'db' : 'raft',
    group: typeof x.group === 'string' ? x.group : 'default',
    term: x.term,
    leaderId: typeof x.leaderId === 'string' ? x.leaderId : (leader?.nodeId ?? null),
    metadataVersion: typeof x.metadataVersion === 'string' ? x.metadataVersion : '',
    answeredBy: typeof x.answeredBy === 'string' ? x.answeredBy : '',
    commitIndex: typeof x.commitIndex === 'number' ? x.commitIndex : 0,
    appliedIndex: typeof x.appliedIndex === 'number' ? x.appliedIndex : 0,
    lastIndex: typeof x.lastIndex === 'number' ? x.lastIndex : 0,
    nodes,
  };
}

function leaderHint(x: unknown): LeaderHint | null {
  if (!isObj(x) || typeof x.nodeId !== 'string') return null;
  return {
    nodeId: x.nodeId,
    control: hostPortOrNull(x.control),
    transaction: hostPortOrNull(x.transaction),
  };
}

// ------------------------------------------------------------------ requests

export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  token?: string;
  /**
   * HTTPS trusting this CA (a secure node's HTTP port); null: plain HTTP (insecure mode).
   * Absent: from the environment (CONCORD_TLS_CA or CONCORD_TLS_DIR's ca.pem; plain HTTP
   * with neither or with CONCORD_INSECURE=1: src/client/tls.ts).
   */
  tls?: NodeHttpTls | null;
}

export interface RawAnswer {
  status: number;
  body: unknown;
}

/** One JSON request to a node's openapi; the answer as it came (answerError for a non-2xx one). */
export async function request(
  base: HostPort,
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  opts: RequestOptions,
): Promise<RawAnswer> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const tls = opts.tls === undefined ? nodeHttpTlsFromEnv() : opts.tls;
  const url = nodeUrl(tls, base, path);
  let res: Response;
  try {
    res = await nodeFetch(
      url,
      { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }), signal },
      tls,
    );
  } catch (err) {
    if (opts.signal?.aborted) throw new UnavailableError('request cancelled', { cause: err });
    if (timeout.aborted)
      throw new TimeoutError(`${method} ${url} got no answer within ${timeoutMs} ms`, {
        cause: err,
      });
    if (tls !== null) {
      const typed = httpsFailure(base.host, base.port, err);
      if (typed !== null) throw typed;
    }
    if (httpAnswerIsGrpc(err)) throw grpcPortGivenForHttp(base.host, base.port, err);
    if (closedWithoutAnswer(err) && (await probeTls(base.host, base.port)))
      throw grpcPortGivenForHttp(base.host, base.port, err, 'TLS');
    throw new UnavailableError(`${method} ${url} failed: ${describeFetchError(err)}`, {
      cause: err,
    });
  }
  let text: string;
  try {
    text = await readLimited(res);
  } catch (err) {
    if (timeout.aborted)
      throw new TimeoutError(`${method} ${url}: the answer did not arrive within ${timeoutMs} ms`, {
        cause: err,
      });
    throw new UnavailableError(
      `${method} ${url}: reading the answer failed: ${describeFetchError(err)}`,
      { cause: err },
    );
  }
  let parsed: unknown = undefined;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: res.status, body: parsed };
}

async function readLimited(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_RESPONSE_BYTES) {
      await reader.cancel();
      throw new UnexpectedAnswerError(res.status, `answer larger than ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message ?? String(err);
}

/** Turns a non-2xx answer into a typed error. */
export function answerError(base: HostPort, a: RawAnswer): ConcordError {
  const e = isObj(a.body) && isObj(a.body.error) ? a.body.error : null;
  const message = `${formatHostPort(base)}: ${typeof e?.message === 'string' ? e.message : `HTTP ${a.status}`}`;
  const code = typeof e?.code === 'string' ? e.code : '';
  if (a.status === 400 && code === 'HTTPS_REQUIRED') return httpsRequired(base.host, base.port);
  if (a.status === 421 || code === 'NOT_LEADER') {
    return new NotLeaderError(isObj(a.body) ? leaderHint(a.body.leader) : null);
  }
  if (a.status === 401) return new UnauthorizedError(message);
  if (a.status === 409 && code === 'CHANGE_IN_PROGRESS') return new ChangeInProgressError(message);
  if (a.status === 504 || code === 'TIMEOUT') return new TimeoutError(message);
  if (a.status === 503 || a.status === 502) return new UnavailableError(message);
  if (a.status >= 400 && a.status < 500)
    return Object.assign(new BadRequestError(message), { status: a.status, serverCode: code });
  return new UnexpectedAnswerError(a.status, message);
}

export async function fetchClusterMetadata(
  base: HostPort,
  opts: RequestOptions & { group?: string } = {},
): Promise<ClusterMetadata> {
  const a = await request(
    base,
    'GET',
    `/metadata/v1/cluster?group=${encodeURIComponent(opts.group ?? 'default')}`,
    undefined,
    opts,
  );
  if (a.status !== 200) throw answerError(base, a);
  return checkMetadata(a.body);
}

export type WatchResult = { changed: true; metadata: ClusterMetadata } | { changed: false };

/**
 * One long poll: resolves when the node's view differs from the given term/version, or on the
 * server's timeout.
 */
export async function watchCluster(
  base: HostPort,
  known: { group: string; term: number; metadataVersion?: string },
  opts: RequestOptions & { watchTimeoutMs: number },
): Promise<WatchResult> {
  const body = {
    groupTerms: { [known.group]: known.term },
    ...(known.metadataVersion ? { groupVersions: { [known.group]: known.metadataVersion } } : {}),
    timeoutMs: opts.watchTimeoutMs,
  };
  const a = await request(base, 'POST', '/metadata/v1/watch', body, {
    ...opts,
    timeoutMs: opts.watchTimeoutMs + WATCH_GRACE_MS,
  });
  if (a.status === 304) return { changed: false };
  if (a.status !== 200) throw answerError(base, a);
  if (!isObj(a.body)) throw new UnexpectedAnswerError(200, 'watch answer is not an object');
  return { changed: true, metadata: checkMetadata(a.body.metadata) };
}

/** A member as the changeCluster JSON body names it. */
export interface MemberSpec {
  nodeId: string;
  raft?: string;
  transaction?: string;
  control?: string;
}

export interface ChangeClusterAnswer {
  steps: Array<{ type: string; nodeId: string }>;
  metadata: ClusterMetadata;
}

export async function changeCluster(
  base: HostPort,
  change: { members: MemberSpec[] } | { raftClusterStr: string },
  opts: RequestOptions & { token: string; group?: string },
): Promise<ChangeClusterAnswer> {
  const q = new URLSearchParams({ group: opts.group ?? 'default' });
  if ('raftClusterStr' in change) q.set('raftClusterStr', change.raftClusterStr);
  const body = 'members' in change ? { members: change.members } : undefined;
  const a = await request(base, 'POST', `/metadata/v1/changeCluster?${q.toString()}`, body, {
    timeoutMs: 180_000,
    ...opts,
  });
  if (a.status !== 200) throw answerError(base, a);
  if (!isObj(a.body) || !Array.isArray(a.body.steps))
    throw new UnexpectedAnswerError(200, 'changeCluster answer lacks steps');
  return {
    steps: a.body.steps as ChangeClusterAnswer['steps'],
    metadata: checkMetadata(a.body.metadata),
  };
}

export async function transferLeader(
  base: HostPort,
  nodeId: string,
  opts: RequestOptions & { token: string; group?: string },
): Promise<ClusterMetadata> {
  const q = new URLSearchParams({ group: opts.group ?? 'default', nodeId });
  const a = await request(base, 'POST', `/metadata/v1/transferLeader?${q.toString()}`, undefined, {
    timeoutMs: 30_000,
    ...opts,
  });
  if (a.status !== 200) throw answerError(base, a);
  if (!isObj(a.body))
    throw new UnexpectedAnswerError(200, 'transferLeader answer is not an object');
  return checkMetadata(a.body.metadata);
}

export interface HealthAnswer {
  status: string;
  nodeId: string;
  /** The node's process id (null if it did not say). */
  pid: number | null;
  role: string;
  term: number;
  leader: LeaderHint | null;
  member: boolean;
  commitIndex: number;
  appliedIndex: number;
}

export async function fetchHealth(
  base: HostPort,
  opts: RequestOptions = {},
): Promise<HealthAnswer> {
  const a = await request(base, 'GET', '/health', undefined, opts);
  if (a.status !== 200 && a.status !== 503) throw answerError(base, a);
  if (!isObj(a.body) || typeof a.body.nodeId !== 'string')
    throw new UnexpectedAnswerError(a.status, 'health answer lacks nodeId');
  const b = a.body;
  return {
    status: String(b.status),
    nodeId: b.nodeId as string,
    pid: typeof b.pid === 'number' ? b.pid : null,
    role: String(b.role),
    term: typeof b.term === 'number' ? b.term : 0,
    leader: leaderHint(b.leader),
    member: b.member === true,
    commitIndex: typeof b.commitIndex === 'number' ? b.commitIndex : 0,
    appliedIndex: typeof b.appliedIndex === 'number' ? b.appliedIndex : 0,
  };
}
