/**
 * The web console every node serves on its HTTP port at /console (docs/console.md): the
 * page and its libraries (assets.ts), and its JSON API under /console/api, behind the
 * console's sign-in (auth.ts). Reads and actions that only the leader answers are forwarded
 * to it by followers (forward.ts).
 *
 *   POST /console/api/signin        { token, name? } → session cookie
 *   POST /console/api/signout
 *   GET  /console/api/me            role, name, CSRF token
 *   GET  /console/api/cluster       members (cluster.ts)
 *   GET  /console/api/samples       the leader's chart samples (samples.ts)
 *   GET  /console/api/transactions  a page of live ones, stuck first, and recently finished
 *   GET  /console/api/transaction   one: summary, branches, timeline, locks
 *   GET  /console/api/locks         a page of held rows
 *   POST /console/api/action        an operator action (admin; actions.ts)
 */
import type { IncomingMessage } from 'node:http';
import type { Coordinator } from '../../coordinator/index.ts';
import { UnauthorizedError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { NodeHttpTls } from '../../shared/node-fetch.ts';
import type { ClusterView } from '../cluster-view.ts';
import { parseJsonObject, readBody } from '../http/body.ts';
import type { Answer, Route } from '../http/server.ts';
import type { TcStoreAccess } from '../tc/service.ts';
import type { TxQuery } from '../tc/tx-query.ts';
import { parseAction, runAction } from './actions.ts';
import { loadAssets, type Asset } from './assets.ts';
import { ConsoleAuth, type Principal } from './auth.ts';
import { clusterAnswer } from './cluster.ts';
import { SignInRefusedError } from './errors.ts';
import { LeaderForwarder, operatorOf, peerOf } from './forward.ts';
import type { MetricSampler } from './samples.ts';
import { SAMPLE_INTERVAL_MS } from './samples.ts';
import { TxReads } from './tx-reads.ts';
import type { TimelineRecorder } from './timeline.ts';

export { TimelineRecorder } from './timeline.ts';
export { MetricSampler } from './samples.ts';

/** Characters of a sign-in name kept. */
const MAX_NAME_CHARS = 64;
/** Bytes of a console request body at most. */
const MAX_CONSOLE_BODY_BYTES = 64 * 1024;

export interface ConsoleOptions {
  nodeId: string;
  group: string;
  view: ClusterView;
  store: TcStoreAccess;
  coordinator: Coordinator;
  query: Pick<TxQuery, 'get' | 'summary'>;
  timeline: TimelineRecorder;
  sampler: MetricSampler;
  adminToken: string | null;
  viewerToken: string | null;
  logger: Logger;
  /**
   * The cluster's CA when the node serves HTTPS (secure mode): the session cookie is
   * `Secure`, and the console reaches the other members' HTTPS ports trusting it. Null:
   * plain HTTP (insecure mode).
   */
  httpTls: NodeHttpTls | null;
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** The console's routes by path, for OpenApiServer.mount. */
export function consoleRoutes(o: ConsoleOptions): Array<[string, Route]> {
  const api = new ConsoleApi(o);
  const routes: Array<[string, Route]> = [];
  let assets: Map<string, Asset>;
  try {
    assets = loadAssets();
  } catch (err) {
    // The node serves without its console rather than not at all.
    o.logger.error({ err }, 'console: its files could not be read; /console is unavailable');
    assets = new Map([
      [
        '/console',
        { body: 'the console is unavailable: see the node log', contentType: 'text/plain' },
      ],
    ]);
  }
  for (const [path, asset] of assets)
    routes.push([
      path,
      {
        method: 'GET',
        handle: async () => ({
          status: 200,
          text: asset.body,
          contentType: asset.contentType,
          headers: SECURITY_HEADERS,
        }),
      },
    ]);
  return routes.concat(api.routes());
}

class ConsoleApi {
  private readonly auth: ConsoleAuth;
  private readonly forwarder: LeaderForwarder;
  private readonly reads: TxReads;
  private readonly log: Logger;

  constructor(private readonly o: ConsoleOptions) {
    this.auth = new ConsoleAuth(o.adminToken, o.viewerToken, Date.now, {
      secureCookie: o.httpTls !== null,
    });
    this.forwarder = new LeaderForwarder(o.nodeId, o.view, o.httpTls);
    this.reads = new TxReads(o.store, o.query, o.timeline);
    this.log = o.logger.child({ component: 'console' });
  }

  routes(): Array<[string, Route]> {
    const get = (fn: (req: IncomingMessage, url: URL) => Promise<Answer>): Route => ({
      method: 'GET',
      handle: (req, url) => fn(req, url),
    });
    const post = (fn: (req: IncomingMessage, url: URL) => Promise<Answer>): Route => ({
      method: 'POST',
      handle: (req, url) => fn(req, url),
    });
    return [
      ['/console/api/signin', post((req) => this.signIn(req))],
      ['/console/api/signout', post(async () => this.signOut())],
      ['/console/api/me', get(async (req) => this.me(req))],
      ['/console/api/cluster', get((req) => this.cluster(req))],
      ['/console/api/samples', get((req, url) => this.leaderRead(req, url, () => this.samples()))],
      [
        '/console/api/transactions',
        get((req, url) => this.leaderRead(req, url, () => this.reads.list(url))),
      ],
      [
        '/console/api/transaction',
        get((req, url) =>
          this.leaderRead(req, url, (p) => this.reads.one(url, p.role === 'admin')),
        ),
      ],
      [
        '/console/api/locks',
        get((req, url) => this.leaderRead(req, url, () => this.reads.locks(url))),
      ],
      ['/console/api/action', post((req, url) => this.action(req, url))],
    ];
  }

  private async readObject(req: IncomingMessage): Promise<Record<string, unknown>> {
    const raw = await readBody(req, MAX_CONSOLE_BODY_BYTES);
    return parseJsonObject(raw);
  }

  private async signIn(req: IncomingMessage): Promise<Answer> {
    const body = await this.readObject(req);
    const token = typeof body.token === 'string' ? body.token : '';
    const name = typeof body.name === 'string' ? body.name.trim().slice(0, MAX_NAME_CHARS) : '';
    const role = token === '' ? null : this.auth.roleOf(token);
    const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`;
    if (role === null) {
      this.log.warn({ peer }, 'console sign-in refused');
      throw new SignInRefusedError();
    }
    this.log.info({ peer, role, name }, 'console sign-in');
    const cookie = this.auth.issue(role, name);
    return {
      status: 200,
      body: { role, name },
      headers: { 'set-cookie': this.auth.cookieHeader(cookie) },
    };
  }

  private signOut(): Answer {
    return {
      status: 200,
      body: { ok: true },
      headers: { 'set-cookie': this.auth.cookieHeader(null) },
    };
  }

  private me(req: IncomingMessage): Answer {
    const p = this.auth.require(req, 'viewer');
    return {
      status: 200,
      body: {
        role: p.role,
        name: p.name,
        csrf: p.csrf,
        nodeId: this.o.nodeId,
        group: this.o.group,
        viewerConfigured: this.o.viewerToken !== null,
      },
    };
  }

  private async cluster(req: IncomingMessage): Promise<Answer> {
    this.auth.require(req, 'viewer');
    return {
      status: 200,
      body: await clusterAnswer(this.o.view, this.o.nodeId, this.o.httpTls),
    };
  }

  private async samples(): Promise<Answer> {
    return {
      status: 200,
      body: {
        node: this.o.nodeId,
        intervalMs: SAMPLE_INTERVAL_MS,
        samples: this.o.sampler.samples(),
      },
    };
  }

  /** A read only the leader answers: here, or forwarded to it. */
  private leaderRead(
    req: IncomingMessage,
    url: URL,
    local: (p: Principal) => Promise<Answer>,
  ): Promise<Answer> {
    const p = this.auth.require(req, 'viewer');
    return this.forwarder.onLeader(this.o.store.hasLeaderRole(), req, url, p, null, () => local(p));
  }

  private async action(req: IncomingMessage, url: URL): Promise<Answer> {
    const p = this.auth.require(req, 'admin', 'an operator action');
    this.auth.checkCsrf(req, p);
    const body = await this.readObject(req);
    const a = parseAction(body);
    if (this.o.adminToken === null) throw new UnauthorizedError();
    const ctx = {
      coordinator: this.o.coordinator,
      selfHttp: () => this.o.view.leaderInfo(this.o.nodeId)?.control ?? null,
      adminToken: this.o.adminToken,
      group: this.o.group,
      log: this.log,
      httpTls: this.o.httpTls,
    };
    const who = { operator: operatorOf(req, p), peer: peerOf(req, p) };
    return this.forwarder.onLeader(
      this.o.store.hasLeaderRole(),
      req,
      url,
      p,
      JSON.stringify(body),
      () => runAction(ctx, a, who),
    );
  }
}
