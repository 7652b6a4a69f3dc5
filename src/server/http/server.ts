/**
 * The node's HTTP openapi (JSON; HTTPS with the node's certificate unless the node runs in
 * insecure mode: http/tls.ts):
 *
 *   GET  /metadata/v1/cluster?group=default          members, roles, term, endpoints
 *   POST /metadata/v1/watch                           long poll until term/membership change
 *   POST /metadata/v1/changeCluster?raftClusterStr=   desired membership (Bearer token)
 *   POST /metadata/v1/transferLeader?nodeId=          leadership transfer (Bearer token)
 *   GET  /health                                      liveness: 200 while the process serves HTTP
 *   GET  /ready                                       readiness: 200 when member, caught up and
 *                                                     serving (db: database up); else 503
 *   GET  /tx/v1/sessions, /tx/v1/session              transactions, read-only (Bearer token;
 *                                                     mounted by the TC service: tx-routes.ts)
 *   GET  /console, /console/api/...                   the web console (mounted by the TC
 *                                                     service: src/server/console)
 *
 * In db mode (no Raft) the view's "leader" is the driver-lease holder and the term its
 * epoch; changeCluster and transferLeader answer 409 NOT_SUPPORTED_IN_DB_MODE.
 *   GET  /metrics                                     Prometheus text
 *
 * Every request is validated at the edge; bad input gets a typed JSON error and changes
 * nothing; no client input can crash the node (every handler's failure is caught and
 * mapped, bodies are bounded).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { BadRequestError, NotLeaderError, StoppedError } from '../../shared/errors.ts';
import { requireNodeId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import type { ClusterView } from '../cluster-view.ts';
import type { LimitsConfig } from '../config.ts';
import type { MembershipManager, DesiredMember } from '../membership.ts';
import { parseMembersBody, parseRaftClusterStr } from '../membership.ts';
import type { NodeMetrics } from '../metrics.ts';
import { isFormBody, parseForm, parseJsonObject, readBody, requireBearer } from './body.ts';
import {
  DbModeUnsupportedError,
  HttpError,
  MethodNotAllowedError,
  RouteNotFoundError,
  UnknownGroupError,
  toErrorAnswer,
} from './errors.ts';
import type { ChangeClusterResult, WatchChanged } from '../../shared/metadata.ts';
import { readinessOf } from './readiness.ts';
import { answerPlaintextOnTlsPort, type OpenApiTls } from './tls.ts';
import { WatchHub, parseWatchRequest } from './watch.ts';

/** Headers must arrive within this time, in ms (slowloris guard). */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
/**
 * The whole request (headers and body) must arrive within this time, in ms; answering may take
 * longer (watch).
 */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** Idle keep-alive connections close after this, in ms. */
export const HTTP_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** Upper bound on request headers. */
export const HTTP_MAX_HEADERS_COUNT = 100;
/** Open connections held at most (watchers included); beyond it new sockets are refused. */
export const HTTP_MAX_CONNECTIONS = 4096;
/** How long close() waits for in-flight requests before destroying sockets, in ms. */
export const HTTP_CLOSE_GRACE_MS = 2_000;

export interface OpenApiOptions {
  host: string;
  port: number;
  view: ClusterView;
  /** null in db mode: changeCluster and transferLeader answer DbModeUnsupportedError. */
  membership: MembershipManager | null;
  metrics: NodeMetrics;
  limits: LimitsConfig;
  authToken: string | null;
  logger: Logger;
  /** Where the node's services are: readiness needs `serving`. Default: always serving. */
  lifecycle?: () => 'starting' | 'serving' | 'stopping';
  /** The node's certificate: HTTPS (http/tls.ts). Null or absent: plain HTTP (insecure mode). */
  tls?: OpenApiTls | null;
}

/** One endpoint: its method and handler (services add theirs with `mount`). */
export interface Route {
  method: 'GET' | 'POST';
  handle(req: IncomingMessage, url: URL, res: ServerResponse, signal: AbortSignal): Promise<Answer>;
}

export type Answer = {
  status: number;
  body?: unknown;
  text?: string;
  contentType?: string;
  headers?: Record<string, string>;
};

export class OpenApiServer {
  private readonly server: Server;
  private readonly hub: WatchHub;
  private readonly routes: Map<string, Route>;
  private readonly log: Logger;
  private stopping = false;
  /** HTTPS: destroys the connections that have not sent their first byte yet. */
  private dropUnsniffed: () => void = () => undefined;

  constructor(private readonly o: OpenApiOptions) {
    this.log = o.logger.child({ component: 'openapi' });
    this.hub = new WatchHub(o.view, o.limits.maxWatchers);
    this.routes = new Map<string, Route>([
      ['/metadata/v1/cluster', { method: 'GET', handle: (req, url) => this.cluster(url) }],
      [
        '/metadata/v1/watch',
        { method: 'POST', handle: (req, url, res, signal) => this.watch(req, url, signal) },
      ],
      [
        '/metadata/v1/changeCluster',
        { method: 'POST', handle: (req, url) => this.changeCluster(req, url) },
      ],
      [
        '/metadata/v1/transferLeader',
        { method: 'POST', handle: (req, url) => this.transferLeader(req, url) },
      ],
      ['/health', { method: 'GET', handle: async () => this.health() }],
      ['/ready', { method: 'GET', handle: async () => this.ready() }],
      ['/metrics', { method: 'GET', handle: () => this.metricsText() }],
    ]);
    this.server = this.createServer();
    this.server.maxHeadersCount = HTTP_MAX_HEADERS_COUNT;
    this.server.maxConnections = HTTP_MAX_CONNECTIONS;
    this.server.on('clientError', (err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
      this.log.debug({ err: (err as Error).message }, 'http client error');
    });
  }

  /** node:http, or node:https with the node's certificate when `tls` is given. */
  private createServer(): Server {
    const options = {
      headersTimeout: HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: HTTP_KEEP_ALIVE_TIMEOUT_MS,
    };
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      void this.dispatch(req, res);
    };
    const tls = this.o.tls ?? null;
    if (tls === null) return createServer(options, handler);
    const server: HttpsServer = createHttpsServer(
      { ...options, cert: tls.cert, key: tls.key, handshakeTimeout: HTTP_HEADERS_TIMEOUT_MS },
      handler,
    );
    this.dropUnsniffed = answerPlaintextOnTlsPort(server, HTTP_HEADERS_TIMEOUT_MS, this.log);
    server.on('tlsClientError', (err) => {
      this.log.debug({ err: err.message }, 'https handshake failed');
    });
    return server;
  }

  /** "https" when the port speaks TLS. */
  get scheme(): 'http' | 'https' {
    return (this.o.tls ?? null) === null ? 'http' : 'https';
  }

  /**
   * Adds a service's endpoint (e.g. the TC service's read-only transaction routes,
   * src/server/http/tx-routes.ts); refuses a path already taken.
   */
  mount(path: string, route: Route): void {
    if (this.routes.has(path)) throw new Error(`openapi: ${path} is already mounted`);
    this.routes.set(path, route);
  }

  /** Binds; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.o.port, this.o.host, () => {
        this.server.off('error', onError);
        const port = (this.server.address() as AddressInfo).port;
        this.log.info({ host: this.o.host, port, scheme: this.scheme }, 'openapi listening');
        resolve(port);
      });
    });
  }

  /** Answers waiting watchers, stops accepting, and closes within HTTP_CLOSE_GRACE_MS. */
  async close(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.hub.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.dropUnsniffed();
        this.server.closeAllConnections();
        resolve();
      }, HTTP_CLOSE_GRACE_MS);
      force.unref();
      this.server.close(() => {
        clearTimeout(force);
        resolve();
      });
      this.server.closeIdleConnections();
      this.dropUnsniffed();
    });
  }

  // ---------------------------------------------------------------- dispatch

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    let routeName = 'unknown';
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    let answer: Answer;
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://localhost');
      } catch {
        throw new BadRequestError('the request target is not a valid URL');
      }
      const route = this.routes.get(url.pathname);
      if (!route) throw new RouteNotFoundError(url.pathname);
      routeName = url.pathname;
      if (req.method !== route.method && !(route.method === 'GET' && req.method === 'HEAD'))
        throw new MethodNotAllowedError(req.method ?? '', [route.method]);
      // Liveness and readiness answer to the end (a stopping node is alive and not ready).
      if (
        this.stopping &&
        route !== this.routes.get('/health') &&
        route !== this.routes.get('/ready')
      )
        throw new StoppedError();
      answer = await route.handle(req, url, res, abort.signal);
    } catch (err) {
      const a = toErrorAnswer(err, (id) => this.o.view.leaderInfo(id));
      if (a.status >= 500 && !(err instanceof HttpError) && a.body.error.code === 'INTERNAL') {
        this.log.error({ err, route: routeName }, 'openapi handler failed');
      } else {
        this.log.debug(
          { route: routeName, status: a.status, code: a.body.error.code },
          'openapi request refused',
        );
      }
      answer = { status: a.status, body: a.body, headers: a.headers };
    }
    if (!req.complete) {
      // Do not leave an unread body on a keep-alive connection.
      answer.headers = { ...answer.headers, connection: 'close' };
    }
    this.send(res, req.method === 'HEAD', answer);
    this.o.metrics.observeHttp(
      routeName,
      req.method ?? '',
      answer.status,
      (performance.now() - started) / 1000,
    );
  }

  private send(res: ServerResponse, head: boolean, a: Answer): void {
    if (res.writableEnded || res.destroyed) return;
    const headers: Record<string, string> = { 'cache-control': 'no-store', ...a.headers };
    let payload = '';
    if (a.text !== undefined) {
      payload = a.text;
      headers['content-type'] = a.contentType ?? 'text/plain; charset=utf-8';
    } else if (a.body !== undefined && a.status !== 304) {
      payload = JSON.stringify(a.body);
      headers['content-type'] = 'application/json; charset=utf-8';
    }
    headers['content-length'] = String(Buffer.byteLength(payload));
    res.writeHead(a.status, headers);
    res.end(head ? undefined : payload);
  }

  private checkGroup(group: string | null): void {
    const g = group ?? this.o.view.group;
    if (g !== this.o.view.group) throw new UnknownGroupError(g, this.o.view.group);
  }

  private async readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const body = await readBody(req, this.o.limits.maxRequestBodyBytes);
    return parseJsonObject(body);
  }

  // ---------------------------------------------------------------- handlers

  private async cluster(url: URL): Promise<Answer> {
    this.checkGroup(url.searchParams.get('group'));
    return { status: 200, body: this.o.view.metadata() };
  }

  private async watch(req: IncomingMessage, url: URL, signal: AbortSignal): Promise<Answer> {
    const raw = await readBody(req, this.o.limits.maxRequestBodyBytes);
    let body: Record<string, unknown>;
    const text = raw.toString('utf8').trim();
    if (isFormBody(req) && !text.startsWith('{')) {
      // Seata's client form: one field per group (name=term), optional timeout.
      const form = parseForm(raw);
      const groupTerms: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(form))
        if (k !== 'timeout' && k !== 'timeoutMs')
          groupTerms[k] = /^\d{1,15}$/.test(v) ? Number(v) : v;
      body = { groupTerms };
      const t = form.timeoutMs ?? form.timeout;
      if (t !== undefined) body.timeoutMs = /^\d{1,9}$/.test(t) ? Number(t) : t;
    } else {
      body = parseJsonObject(raw);
    }
    const qt = url.searchParams.get('timeoutMs') ?? url.searchParams.get('timeout');
    if (body.timeoutMs === undefined && qt !== null)
      body.timeoutMs = /^\d{1,9}$/.test(qt) ? Number(qt) : qt;
    const w = parseWatchRequest(body, this.o.view.group, this.o.limits.watchTimeoutMs);
    const outcome = await this.hub.wait(w, signal);
    if ('changed' in outcome) {
      const metadata = this.o.view.metadata();
      const answer: WatchChanged = {
        changed: outcome.changed,
        groupTerms: { [this.o.view.group]: metadata.term },
        metadata,
      };
      return { status: 200, body: answer };
    }
    if ('closed' in outcome && this.stopping) throw new StoppedError();
    // Seata answers an unchanged watch with 304 Not Modified.
    return { status: 304 };
  }

  private async changeCluster(req: IncomingMessage, url: URL): Promise<Answer> {
    // Authenticate before reading or validating anything: an unauthenticated caller learns nothing.
    requireBearer(req, this.o.authToken);
    this.checkGroup(url.searchParams.get('group'));
    const membership = this.o.membership;
    if (membership === null) throw new DbModeUnsupportedError('changeCluster');
    const body = await this.readJson(req);
    const str = url.searchParams.get('raftClusterStr');
    let desired: DesiredMember[];
    if (str !== null && body.members !== undefined)
      throw new BadRequestError('give either raftClusterStr or a JSON body with members, not both');
    if (str !== null) desired = parseRaftClusterStr(str, this.o.view);
    else if (body.members !== undefined) desired = parseMembersBody(body);
    else
      throw new BadRequestError(
        'missing member list: give ?raftClusterStr=host:port,... or a JSON body {"members":[...]}',
      );
    this.requireLeader();
    try {
      const report = await membership.change(desired);
      this.o.metrics.countMembershipOp('change', 'ok');
      const result: ChangeClusterResult = {
        ok: true,
        steps: report.steps,
        metadata: this.o.view.metadata(),
      };
      return { status: 200, body: result };
    } catch (err) {
      this.o.metrics.countMembershipOp('change', 'error');
      throw err;
    }
  }

  private async transferLeader(req: IncomingMessage, url: URL): Promise<Answer> {
    requireBearer(req, this.o.authToken);
    this.checkGroup(url.searchParams.get('group'));
    const membership = this.o.membership;
    if (membership === null) throw new DbModeUnsupportedError('transferLeader');
    const body = await this.readJson(req);
    const given =
      url.searchParams.get('nodeId') ?? (typeof body.nodeId === 'string' ? body.nodeId : null);
    if (given === null || given === '')
      throw new BadRequestError('missing nodeId: the voter to hand leadership to');
    this.requireLeader();
    const to = requireNodeId(given, 'nodeId');
    try {
      await membership.transfer(to);
      this.o.metrics.countMembershipOp('transfer', 'ok');
    } catch (err) {
      this.o.metrics.countMembershipOp('transfer', 'error');
      throw err;
    }
    return {
      status: 200,
      body: { ok: true, leader: this.o.view.leaderInfo(to), metadata: this.o.view.metadata() },
    };
  }

  /** Liveness: 200 whenever the process answers; the body says what the node is doing. */
  private health(): Answer {
    const st = this.o.view.status();
    const role = st.conf.learners.includes(st.id) ? 'learner' : st.role;
    return {
      status: 200,
      body: {
        status: 'UP',
        storeMode: this.o.view.storeMode,
        nodeId: st.id,
        pid: process.pid,
        group: this.o.view.group,
        role,
        term: st.term,
        leader: this.o.view.leaderInfo(st.leader),
        member: st.conf.voters.includes(st.id) || st.conf.learners.includes(st.id),
        commitIndex: st.commit,
        appliedIndex: st.applied,
        lastIndex: st.lastIndex,
        watchers: this.hub.watchers,
        // raft: the Raft node fail-stopped (the process exits); db: the database is unreachable.
        stopped: st.stopped === true,
      },
    };
  }

  /** Readiness: 200 when the node may take clients, 503 with the reasons when not. */
  private ready(): Answer {
    const st = this.o.view.status();
    const lifecycle = this.stopping ? 'stopping' : (this.o.lifecycle?.() ?? 'serving');
    const r = readinessOf(st, this.o.view.storeMode, lifecycle);
    return {
      status: r.ready ? 200 : 503,
      body: {
        ready: r.ready,
        reasons: r.reasons,
        storeMode: this.o.view.storeMode,
        nodeId: st.id,
        role: st.conf.learners.includes(st.id) ? 'learner' : st.role,
        term: st.term,
        leader: st.leader,
        commitIndex: st.commit,
        appliedIndex: st.applied,
      },
    };
  }

  private async metricsText(): Promise<Answer> {
    const m = await this.o.metrics.render();
    return { status: 200, text: m.body, contentType: m.contentType };
  }

  private requireLeader(): void {
    const st = this.o.view.status();
    if (st.role !== 'leader') throw new NotLeaderError(st.leader);
  }
}
