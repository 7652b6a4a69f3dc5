/**
 * What the three example services share: configuration from the environment, a PostgreSQL
 * pool, the Concord client, and a tiny JSON-over-HTTP server whose handlers run with the
 * request's xid bound (wrapHttpHandler reads the TX_XID header, and answers 400 to one that
 * is not a well-formed xid before any handler runs).
 */
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import {
  createClient,
  NoTransactionToJoinError,
  wrapHttpHandler,
  type ClientOptions,
  type ConcordClient,
} from '@concord/client';
// The dev PKI is the server's (npm start makes it); the example issues its services'
// certificates from it, as an operator would with their own CA.
import { ensureCa } from '../../src/server/security/pki-dir.ts';
import { issueAppCertificate } from '../../src/shared/pki.ts';

/** The local cluster of `npm start` (HTTP control ports); CONCORD_SERVERS overrides it. */
export const DEFAULT_SERVERS = '127.0.0.1:7091,127.0.0.1:7092,127.0.0.1:7093';
/** Largest request body a service reads, bytes. */
const MAX_BODY_BYTES = 64 * 1024;

export function servers(): string {
  return process.env.CONCORD_SERVERS ?? DEFAULT_SERVERS;
}

export function exampleLogger(name: string): Logger {
  // Logs go to stderr, so the run's report on stdout stays readable.
  return pino({ name, level: process.env.CONCORD_LOG_LEVEL ?? 'warn' }, pino.destination(2));
}

export function pgPool(): pg.Pool {
  const pool = new pg.Pool({
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    user: process.env.PGUSER ?? 'postgres',
    password: process.env.PGPASSWORD ?? '',
    database: process.env.PGDATABASE ?? 'test',
    max: 8,
  });
  pool.on('error', () => {}); // an idle client that dies is replaced; never crash on it
  return pool;
}

/**
 * TLS credentials for one service (docs/security.md). CONCORD_TLS_* (or CONCORD_INSECURE=1)
 * win; otherwise, for the local `npm start` cluster, each service gets a certificate naming
 * its own application, issued on the spot by the dev CA that the first start made under
 * ./data/pki (CONCORD_TLS_DIR to look elsewhere). A real deployment issues these once.
 */
function tlsFor(applicationId: string): Pick<ClientOptions, 'tls' | 'credentials'> {
  if (process.env.CONCORD_INSECURE || process.env.CONCORD_TLS_CERT) return {};
  const dir = process.env.CONCORD_TLS_DIR ?? 'data/pki';
  if (!existsSync(join(dir, 'ca-key.pem'))) return {};
  const ca = ensureCa(dir);
  const mine = issueAppCertificate(ca, applicationId);
  return { tls: { ca: ca.cert }, credentials: { cert: mine.cert, key: mine.key } };
}

export function concordClient(applicationId: string, logger: Logger): ConcordClient {
  return createClient({ servers: servers(), applicationId, logger, ...tlsFor(applicationId) });
}

/** A business refusal: answered 409 with its message (the caller's transaction rolls back). */
export class Refused extends Error {}

export type Handler = (body: any, params: string[]) => Promise<{ status: number; body: unknown }>;
export type Routes = Record<string, Handler>;

async function readBody(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Refused('body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text === '' ? {} : JSON.parse(text);
}

/**
 * Routes are "METHOD /path/:param" patterns. Prints `READY <port>` once listening, which is
 * how run.ts knows the service is up.
 */
export function serve(name: string, routes: Routes, logger: Logger): Promise<Server> {
  const table = Object.entries(routes).map(([key, handler]) => {
    const [method, path] = key.split(' ') as [string, string];
    const pattern = new RegExp(`^${path.replace(/:[a-zA-Z]+/g, '([^/]+)')}$`);
    return { method, pattern, handler };
  });
  const server = createServer(
    wrapHttpHandler(
      async (req: IncomingMessage, res: ServerResponse) => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        const send = (status: number, body: unknown) =>
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        for (const route of table) {
          const match = route.method === req.method ? route.pattern.exec(url.pathname) : null;
          if (!match) continue;
          try {
            const answer = await route.handler(
              await readBody(req),
              match.slice(1).map(decodeURIComponent),
            );
            send(answer.status, answer.body);
          } catch (err) {
            if (err instanceof Refused) send(409, { error: err.message });
            else if (err instanceof NoTransactionToJoinError) send(400, { error: err.message });
            else {
              logger.error({ err }, 'request failed');
              send(500, { error: (err as Error).message });
            }
          }
          return;
        }
        send(404, { error: 'not found' });
      },
      { logger },
    ),
  );
  return new Promise((resolve) => {
    server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      logger.info({ port }, `${name} listening`);
      process.stdout.write(`READY ${port}\n`);
      resolve(server);
    });
  });
}

/**
 * Stops the service on SIGTERM/SIGINT: the HTTP server, then the Concord client (it drains), then
 * the pool.
 */
export function stopOnSignal(server: Server, client: ConcordClient, pool: pg.Pool): void {
  const stop = () => {
    server.close();
    void client
      .close()
      .then(() => pool.end())
      .finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
