/**
 * Recognising the wrong port. A node has three: the HTTP openapi (server.httpPort, 7091 in
 * the shipped configs: what `servers` / seeds name), the TC gRPC port (server.tcPort, 8091:
 * the client learns it from the metadata) and the Raft peer port (9091). Pointed at the
 * wrong one, a client would otherwise fail with a parser error (HPE_INVALID_CONSTANT) or
 * retry a "connection failure" until its budget runs out. Both directions are recognised:
 *
 *  - an HTTP/1.1 request answered with HTTP/2 bytes: a gRPC port (TC or Raft) given where
 *    the openapi port belongs (httpAnswerIsGrpc); under TLS (the default) such a port
 *    closes a plaintext request without a byte, and a TLS handshake tells it apart
 *    (closedWithoutAnswer, probeTls);
 *  - a gRPC endpoint that answers HTTP/1.1: an HTTP port given where the TC port belongs
 *    (probeHttp1).
 *
 * Either way the call fails at once with WrongPortError (definite: retrying cannot help),
 * whose message says which port to give.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { ConcordError, type ConcordErrorOptions } from '../shared/errors.ts';

/** How long the HTTP/1.1 probe of a TC endpoint waits for the first bytes, ms. */
export const WRONG_PORT_PROBE_TIMEOUT_MS = 1_000;

/** A configured address points at the wrong one of a node's ports. */
export class WrongPortError extends ConcordError {
  readonly address: string;
  constructor(address: string, message: string, options: ConcordErrorOptions = {}) {
    super('CONFIG_INVALID', message, options);
    this.address = address;
  }
}

/** The shipped port layout: HTTP 70xx, TC 80xx, Raft 90xx (node1 = 7091/8091/9091). */
function shippedSibling(port: number, kind: 'http' | 'tc'): number | null {
  const base = Math.floor(port / 1000) * 1000;
  const offset = port - base;
  if (![7000, 8000, 9000].includes(base)) return null;
  return (kind === 'http' ? 7000 : 8000) + offset;
}

/**
 * True when a fetch failed because the server answered HTTP/2 (a gRPC server: its first
 * bytes are an HTTP/2 SETTINGS frame, which the HTTP/1.1 parser refuses).
 */
export function httpAnswerIsGrpc(err: unknown): boolean {
  const cause = (err as { cause?: { code?: unknown; data?: unknown } }).cause;
  if (cause?.code !== 'HPE_INVALID_CONSTANT') return false;
  // A frame header: 3 bytes of length, then the type (4 = SETTINGS).
  const data = typeof cause.data === 'string' ? cause.data : '';
  return data.length === 0 || (data.length >= 4 && data.charCodeAt(3) === 4);
}

/** True when a fetch failed because the server closed the connection without a byte. */
export function closedWithoutAnswer(err: unknown): boolean {
  const cause = (err as { cause?: { code?: unknown; socket?: { bytesRead?: unknown } } }).cause;
  return cause?.code === 'UND_ERR_SOCKET' && cause.socket?.bytesRead === 0;
}

/**
 * Starts a TLS handshake with `host:port` (trusting nothing: it only asks whether the port
 * speaks TLS) and resolves true if the server answered it — with a certificate, or with a
 * TLS alert (a mutual-TLS port refusing a client without a certificate). False otherwise.
 */
export function probeTls(
  host: string,
  port: number,
  timeoutMs = WRONG_PORT_PROBE_TIMEOUT_MS,
): Promise<boolean> {
  const socket = tlsConnect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
  return probe(socket, timeoutMs, (finish) => {
    socket.once('secureConnect', () => finish(true));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      finish(typeof err.code === 'string' && err.code.startsWith('ERR_SSL_')),
    );
  });
}

/** The error for a seed that turned out to be a gRPC port. */
export function grpcPortGivenForHttp(
  host: string,
  port: number,
  cause?: unknown,
  over: 'TLS' | null = null,
): WrongPortError {
  const sibling = shippedSibling(port, 'http');
  return new WrongPortError(
    `${host}:${port}`,
    `${host}:${port} speaks gRPC (HTTP/2${over === 'TLS' ? ' over TLS' : ''}): it is a node's TC port or Raft port, but the client needs the node's HTTP openapi port (server.httpPort)` +
      (sibling !== null && sibling !== port
        ? ` — ${host}:${sibling} with the shipped port layout`
        : ' — 7091 in the shipped configs') +
      '. Give that port in `servers` (or CONCORD_SERVERS); the client finds the TC ports from it.',
    { cause },
  );
}

/** The error for a TC endpoint that turned out to speak HTTP/1.1. */
export function httpPortGivenForTc(host: string, port: number): WrongPortError {
  const sibling = shippedSibling(port, 'tc');
  return new WrongPortError(
    `${host}:${port}`,
    `${host}:${port} answers HTTP/1.1, so it is not a TC gRPC port: it looks like a node's HTTP openapi port. The TC port is the node's server.tcPort (as the cluster metadata and raft.peers[].tcPort advertise it)` +
      (sibling !== null && sibling !== port
        ? ` — ${host}:${sibling} with the shipped port layout.`
        : ' — 8091 in the shipped configs.'),
  );
}

/**
 * Sends an HTTP/1.1 request to `host:port` and resolves true if the first bytes back are
 * an HTTP/1 status line. False on anything else (no answer, a refusal, other bytes).
 */
export function probeHttp1(
  host: string,
  port: number,
  timeoutMs = WRONG_PORT_PROBE_TIMEOUT_MS,
): Promise<boolean> {
  const socket = connect({ host, port });
  return probe(socket, timeoutMs, (finish) => {
    socket.once('connect', () =>
      socket.write(`GET /health HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    socket.once('data', (chunk: Buffer) =>
      finish(chunk.subarray(0, 7).toString('latin1') === 'HTTP/1.'),
    );
    socket.once('error', () => finish(false));
  });
}

/**
 * One probe's life: `listen` wires the socket's events to `finish`; the first answer wins,
 * a close or the timeout answers false, and the socket is destroyed either way.
 */
function probe(
  socket: Socket,
  timeoutMs: number,
  listen: (finish: (answer: boolean) => void) => void,
): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (answer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    listen(finish);
    socket.once('close', () => finish(false));
  });
}
