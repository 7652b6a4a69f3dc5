/**
 * A runnable Raft node with a tiny replicated KV store and an HTTP API, for the
 * integration tests and the benchmark (not the Concord server).
 *
 *   node --import tsx test/node/kv-main.ts --config node1.yaml
 *   node --import tsx test/node/kv-main.ts --id n1 --raft 127.0.0.1:7001 --http 127.0.0.1:8001 \
 *        --peers n2=127.0.0.1:7002,n3=127.0.0.1:7003 --data-dir /tmp/n1 [--tick-ms 100] \
 *        [--election-ticks 10] [--heartbeat-ticks 1] [--snapshot-interval 10000] [--join]
 *        [--tls-ca ca.pem --tls-cert node.pem --tls-key node-key.pem]
 *
 * The config file (JSON or YAML) holds the keys of RaftNodeConfig plus `httpAddress`;
 * flags override it. Once both ports are bound the process prints one JSON line to
 * stdout: {"event":"listening","nodeId":..,"raftPort":..,"httpPort":..}. Logs go to stderr.
 *
 * HTTP API (JSON answers; errors are {"error":{code,name,message,retryable,leaderId,leaderHttp}}):
 *   PUT  /kv/:key            body = value (text); resolves once applied on this leader → {index}
 *   DELETE /kv/:key          → {index, existed}
 *   GET  /kv/:key            linearizable (ReadIndex via driver.read()) → {key, value} or 404;
 *                            ?stale=1 reads this node's applied state without the barrier
 *   GET  /kv?prefix=p        all keys with the prefix (same read modes) → {count, entries}
 *   GET  /status             role, term, leader, indices, membership, transport counters
 *   POST /membership         {type: addVoter|addLearner|removeNode, nodeId, context?}
 *   POST /transfer           {to}
 *   POST /snapshot           take a local snapshot now
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Command, Option } from 'commander';
import { pino } from 'pino';
import { parse as parseYaml } from 'yaml';
import {
  BadRequestError,
  ConcordError,
  ConfigError,
  NotLeaderError,
} from '../../src/shared/errors.ts';
import { isNodeId, requireNodeId } from '../../src/shared/ids.ts';
import type { Logger } from '../../src/shared/logger.ts';
import type { ConfChange } from '../../src/raft/core/types.ts';
import {
  parseHostPort,
  validateRaftNodeConfig,
  type RaftNodeConfig,
} from '../../src/raft/node/config.ts';
import {
  encodeKvCommand,
  KvStateMachine,
  MAX_KV_KEY_BYTES,
  MAX_KV_VALUE_BYTES,
  type KvCommand,
} from './kv-state-machine.ts';
import { memberContextFields } from '../../src/raft/node/members.ts';
import { RaftNode } from '../../src/raft/node/raft-node.ts';
import type { PeerTls } from '../../src/raft/transport/tls.ts';

/** Largest request body accepted (a value plus room for JSON around it). */
export const MAX_HTTP_BODY_BYTES = MAX_KV_VALUE_BYTES + 4 * 1024;
/** Idle keep-alive connections are kept this long (benchmark clients reuse them). */
export const HTTP_KEEP_ALIVE_MS = 60_000;
/** A graceful stop that takes longer than this is cut short. */
export const STOP_TIMEOUT_MS = 5_000;

interface KvMainConfig {
  node: RaftNodeConfig;
  tls: PeerTls | null;
  httpAddress: string;
  logLevel: string;
}

interface CliFlags {
  config?: string;
  id?: string;
  raft?: string;
  advertiseRaft?: string;
  http?: string;
  peers?: string;
  dataDir?: string;
  tickMs?: string;
  electionTicks?: string;
  heartbeatTicks?: string;
  snapshotInterval?: string;
  join?: boolean;
  logLevel?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

function parsePeers(value: string): Record<string, string> {
  const peers: Record<string, string> = {};
  for (const part of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0)
      throw new ConfigError('peers', `expected id=host:port, got ${JSON.stringify(part)}`);
    peers[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return peers;
}

async function loadConfig(flags: CliFlags): Promise<KvMainConfig> {
  let raw: Record<string, unknown> = {};
  if (flags.config) {
    let text: string;
    try {
      text = await readFile(flags.config, 'utf8');
    } catch (cause) {
      throw new ConfigError('--config', `cannot read ${flags.config}`, { cause });
    }
    let parsed: unknown;
    try {
      parsed = /\.ya?ml$/i.test(flags.config) ? parseYaml(text) : JSON.parse(text);
    } catch (cause) {
      throw new ConfigError(
        '--config',
        `${flags.config} is not valid ${/\.ya?ml$/i.test(flags.config) ? 'YAML' : 'JSON'}`,
        { cause },
      );
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new ConfigError('(root)', 'config file must hold an object');
    raw = { ...(parsed as Record<string, unknown>) };
  }
  const set = (key: string, value: unknown) => {
    if (value !== undefined) raw[key] = value;
  };
  set('nodeId', flags.id);
  set('raftAddress', flags.raft);
  set('advertiseRaftAddress', flags.advertiseRaft);
  set('httpAddress', flags.http);
  if (flags.peers !== undefined) raw.peers = parsePeers(flags.peers);
  set('dataDir', flags.dataDir);
  set('tickMs', flags.tickMs);
  set('electionTicks', flags.electionTicks);
  set('heartbeatTicks', flags.heartbeatTicks);
  set('snapshotIntervalEntries', flags.snapshotInterval);
  if (flags.join) raw.join = true;
  set('logLevel', flags.logLevel);

  const { httpAddress, logLevel, ...nodeRaw } = raw;
  if (typeof httpAddress !== 'string' || !parseHostPort(httpAddress)) {
    throw new ConfigError('httpAddress', `must be "host:port", got ${JSON.stringify(httpAddress)}`);
  }
  const level = logLevel ?? process.env.CONCORD_LOG_LEVEL ?? 'info';
  if (
    typeof level !== 'string' ||
    !['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)
  ) {
    throw new ConfigError(
      'logLevel',
      `must be one of fatal, error, warn, info, debug, trace, silent; got ${JSON.stringify(level)}`,
    );
  }
  const contextExtra = {
    ...((nodeRaw.contextExtra as Record<string, string> | undefined) ?? {}),
    http: httpAddress,
  };
  const node = validateRaftNodeConfig({ ...nodeRaw, contextExtra });
  const tlsFiles = [flags.tlsCa, flags.tlsCert, flags.tlsKey];
  if (tlsFiles.some((f) => f !== undefined) && !tlsFiles.every((f) => f !== undefined))
    throw new ConfigError('tls', '--tls-ca, --tls-cert and --tls-key go together');
  const tls =
    flags.tlsCa && flags.tlsCert && flags.tlsKey
      ? {
          ca: await readFile(flags.tlsCa),
          cert: await readFile(flags.tlsCert),
          key: await readFile(flags.tlsKey),
        }
      : null;
  return { node, tls, httpAddress, logLevel: level };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_HTTP_BODY_BYTES) {
        reject(new HttpError(413, `request body over ${MAX_HTTP_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const body = await readBody(req);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new BadRequestError('request body is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new BadRequestError('request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const STATUS_OF: Partial<Record<string, number>> = {
  BAD_REQUEST: 400,
  NOT_LEADER: 421,
  TIMEOUT: 504,
  UNAVAILABLE: 503,
  PROPOSAL_DROPPED: 503,
  CHANGE_IN_PROGRESS: 503,
  STOPPED: 503,
};

function checkKey(raw: string): string {
  let key: string;
  try {
    key = decodeURIComponent(raw);
  } catch {
    throw new BadRequestError('key is not valid percent-encoding');
  }
  if (key.length === 0) throw new BadRequestError('key is empty');
  if (Buffer.byteLength(key) > MAX_KV_KEY_BYTES)
    throw new BadRequestError(`key over ${MAX_KV_KEY_BYTES} bytes`);
  return key;
}

function checkConfChange(body: Record<string, unknown>): ConfChange {
  const { type, context } = body;
  const nodeId = requireNodeId(body.nodeId, 'nodeId');
  if (type === 'removeNode') return { type, nodeId };
  if (type === 'addVoter' || type === 'addLearner') {
    if (context !== undefined && typeof context !== 'string')
      throw new BadRequestError('context must be a string');
    return { type, nodeId, context: context ?? '' };
  }
  throw new BadRequestError('type must be addVoter, addLearner or removeNode');
}

/** The HTTP address of `leaderId` from the membership context, if known. */
function leaderHttpOf(node: RaftNode, leaderId: string | null): string | null {
  if (!isNodeId(leaderId)) return null;
  const ctx = node.status().conf.context[leaderId];
  return ctx === undefined ? null : (memberContextFields(ctx).http ?? null);
}

/** What the HTTP handlers serve. */
interface KvHttp {
  node: RaftNode;
  sm: KvStateMachine;
  address: string;
}

const propose = async (node: RaftNode, cmd: KvCommand) => node.propose(encodeKvCommand(cmd));

/** `/kv/:key`: PUT, DELETE and GET of one key. */
async function handleKey(
  h: KvHttp,
  req: IncomingMessage,
  res: ServerResponse,
  raw: string,
  stale: boolean,
): Promise<void> {
  const { node, sm } = h;
  const method = req.method ?? 'GET';
  const key = checkKey(raw);
  if (method === 'PUT') {
    const value = await readBody(req);
    if (value.length > MAX_KV_VALUE_BYTES)
      throw new HttpError(413, `value over ${MAX_KV_VALUE_BYTES} bytes`);
    send(res, 200, await propose(node, { op: 'put', key, value: value.toString('utf8') }));
    return;
  }
  if (method === 'DELETE') {
    send(res, 200, await propose(node, { op: 'del', key }));
    return;
  }
  if (method === 'GET') {
    if (!stale) await node.read();
    const value = sm.get(key);
    if (value === undefined)
      send(res, 404, {
        error: { code: 'NOT_FOUND', message: `no key ${JSON.stringify(key)}` },
      });
    else send(res, 200, { key, value });
    return;
  }
  throw new HttpError(405, `${method} not allowed on /kv/:key`);
}

/** The cluster routes: membership, leadership transfer and snapshot; false if none matched. */
async function handleAdmin(
  node: RaftNode,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<boolean> {
  if (req.method !== 'POST') return false;
  if (path === '/membership') {
    const cc = checkConfChange(await readJson(req));
    await node.changeMembership(cc);
    send(res, 200, { conf: node.status().conf });
    return true;
  }
  if (path === '/transfer') {
    const to = requireNodeId((await readJson(req)).to, 'to');
    node.transferLeadership(to);
    send(res, 202, { transferringTo: to });
    return true;
  }
  if (path === '/snapshot') {
    await node.driver.snapshotNow();
    send(res, 200, { snapshotIndex: node.status().snapshotIndex });
    return true;
  }
  return false;
}

async function handle(h: KvHttp, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { node, sm, address } = h;
  // Split by hand: a WHATWG URL per request is a measurable share of a leader's CPU at
  // thousands of writes a second, and only the path and two query parameters are read.
  const target = req.url ?? '/';
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
  const stale = query.get('stale') === '1' || query.get('stale') === 'true';
  const method = req.method ?? 'GET';

  if (path.startsWith('/kv/')) return handleKey(h, req, res, path.slice(4), stale);
  if (path === '/kv' && method === 'GET') {
    if (!stale) await node.read();
    const entries = sm.entries(query.get('prefix') ?? '');
    send(res, 200, { count: entries.length, entries: Object.fromEntries(entries) });
    return;
  }
  if (path === '/status' && method === 'GET') {
    send(res, 200, { ...node.status(), httpAddress: address, kvKeys: sm.size });
    return;
  }
  if (await handleAdmin(node, req, res, path)) return;
  throw new HttpError(404, `no route for ${method} ${path}`);
}

function sendError(
  node: RaftNode,
  logger: Logger,
  req: IncomingMessage,
  res: ServerResponse,
  err: unknown,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof HttpError) {
    send(res, err.status, {
      error: { code: err.status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', message: err.message },
    });
    return;
  }
  if (err instanceof ConcordError) {
    const leaderId = err instanceof NotLeaderError ? err.leaderId : null;
    send(res, STATUS_OF[err.code] ?? 500, {
      error: {
        code: err.code,
        name: err.name,
        message: err.message,
        retryable: err.retryable,
        leaderId,
        leaderHttp: leaderHttpOf(node, leaderId),
      },
    });
    return;
  }
  logger.error({ err, url: req.url }, 'http request failed');
  send(res, 500, { error: { code: 'INTERNAL', message: 'internal error' } });
}

function startHttp(node: RaftNode, sm: KvStateMachine, address: string, logger: Logger) {
  const h: KvHttp = { node, sm, address };
  const server = createServer((req, res) => {
    handle(h, req, res).catch((err: unknown) => sendError(node, logger, req, res, err));
  });
  server.keepAliveTimeout = HTTP_KEEP_ALIVE_MS;
  server.headersTimeout = HTTP_KEEP_ALIVE_MS + 1_000;
  const hp = parseHostPort(address)!;
  return new Promise<typeof server>((resolve, reject) => {
    server.once('error', reject);
    server.listen(hp.port, hp.host.replace(/^\[|\]$/g, ''), () => resolve(server));
  });
}

async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('kv-main')
    .description('A Concord Raft node with a test KV store and HTTP API')
    .option('--config <path>', 'JSON or YAML config file (flags override it)')
    .option('--id <nodeId>', 'node id')
    .option('--raft <host:port>', 'raft listen address')
    .option('--advertise-raft <host:port>', 'raft address peers use, if not --raft')
    .option('--http <host:port>', 'HTTP API listen address')
    .option('--peers <list>', 'other members: id=host:port,id=host:port')
    .option('--data-dir <path>', 'data directory')
    .option('--tick-ms <ms>', 'milliseconds per raft tick')
    .option('--election-ticks <n>', 'election timeout in ticks')
    .option('--heartbeat-ticks <n>', 'heartbeat interval in ticks')
    .option('--snapshot-interval <entries>', 'applied entries between snapshots (0 = never)')
    .option('--join', 'start outside the membership and wait to be added by the leader')
    .option('--tls-ca <path>', 'mutual TLS on the raft port: the cluster CA certificate')
    .option('--tls-cert <path>', "mutual TLS: this node's certificate")
    .option('--tls-key <path>', "mutual TLS: this node's private key")
    .addOption(
      new Option('--log-level <level>', 'log level').choices([
        'fatal',
        'error',
        'warn',
        'info',
        'debug',
        'trace',
        'silent',
      ]),
    )
    .exitOverride();
  program.parse(argv);
  const config = await loadConfig(program.opts<CliFlags>());

  const logger: Logger = pino({ name: 'kv-main', level: config.logLevel }, pino.destination(2));
  const sm = new KvStateMachine();
  const node = new RaftNode({
    config: config.node,
    stateMachine: sm,
    logger,
    tls: config.tls,
    onFatal: (err) => {
      logger.fatal({ err }, 'raft node failed; exiting');
      process.exit(1);
    },
  });
  await node.start();
  const server = await startHttp(node, sm, config.httpAddress, logger);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    setTimeout(() => process.exit(1), STOP_TIMEOUT_MS).unref();
    server.close();
    server.closeAllConnections();
    node.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const httpPort = (server.address() as AddressInfo).port;
  // The one line the test harness and the benchmark wait for.
  process.stdout.write(
    `${JSON.stringify({ event: 'listening', nodeId: config.node.nodeId, raftPort: node.raftPort, httpPort, pid: process.pid })}\n`,
  );
}

main(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string; exitCode?: number };
  if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 2);
  process.stderr.write(
    `kv-main: ${err instanceof ConfigError ? err.message : ((err as Error)?.stack ?? String(err))}\n`,
  );
  process.exit(err instanceof ConfigError ? 2 : 1);
});
