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

/**
 * A client's TLS does not match the node's HTTP port: HTTPS to a node in insecure mode,
 * plain HTTP to a secure one, or a server certificate of another CA. Definite: a
 * configuration error, retrying cannot help.
 */
export class TlsMismatchError extends ConcordError {
  readonly address: string;
  constructor(address: string, message: string, options: ConcordErrorOptions = {}) {
    super('CONFIG_INVALID', message, options);
    this.address = address;
  }
}

/** The socket or TLS error code under a failed fetch, if any. */
function causeCode(err: unknown): string {
  const code = (err as { cause?: { code?: unknown } }).cause?.code;
  return typeof code === 'string' ? code : '';
}

/** The server answered the TLS handshake with bytes that are no TLS (OpenSSL's words). */
function notTls(code: string, err: unknown): boolean {
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG')
    return true;
  const message = String((err as { cause?: { message?: unknown } }).cause?.message ?? '');
  return code === 'EPROTO' && /wrong version number|packet length too long/.test(message);
}

/** Server certificates the client's CA does not vouch for (OpenSSL's verify codes). */
const UNTRUSTED_CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_NOT_A_NODE',
]);

/**
 * An HTTPS request failed for a reason of TLS configuration (not of reachability): the typed
 * error saying what to change, else null. A port that asks the client for a certificate is
 * a node's TC or Raft port (the HTTP port asks none).
 */
export function httpsFailure(host: string, port: number, err: unknown): ConcordError | null {
  const code = causeCode(err);
  const at = `${host}:${port}`;
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED')
    return grpcPortGivenForHttp(host, port, err, 'TLS');
  if (notTls(code, err))
    return new TlsMismatchError(
      at,
      `${at} does not speak TLS: the node runs in insecure mode (plain HTTP), or this is not its HTTP port. For an insecure cluster give the client no TLS (tls: false, CONCORD_INSECURE=1, or the CLI's --insecure).`,
      { cause: err },
    );
  if (UNTRUSTED_CERT_CODES.has(code))
    return new TlsMismatchError(
      at,
      `${at}: the server's certificate is not one of a Concord node of the trusted CA (${code}): give the cluster's CA (data/pki/ca.pem with npm start).`,
      { cause: err },
    );
  return null;
}

/** The error for plain HTTP sent to a secure node's HTTPS port (its 400 HTTPS_REQUIRED). */
export function httpsRequired(host: string, port: number): TlsMismatchError {
  const at = `${host}:${port}`;
  return new TlsMismatchError(
    at,
    `${at} speaks HTTPS (the node runs secure): give the client the cluster's CA — tls: { ca } in the SDK, CONCORD_TLS_CA or CONCORD_TLS_DIR, or the CLI's --pki (data/pki with npm start).`,
  );
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
