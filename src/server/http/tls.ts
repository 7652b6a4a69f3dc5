/**
 * HTTPS for the openapi and the console (docs/security.md). A secure node serves its HTTP
 * port with its node certificate — the one its TC and Raft ports present, of the cluster's
 * CA — and asks no client certificate (the membership and transaction routes keep their
 * bearer token, the console its session cookie). Insecure mode keeps plain HTTP.
 *
 * A plaintext request on the HTTPS port is answered, not dropped: the first byte of a
 * connection tells a TLS handshake (0x16) from anything else, and anything else gets a
 * `400` saying the port speaks HTTPS — and nothing of the node's data — then the close
 * (curl without `https://` says why it failed, and the SDK still recognises an HTTP port
 * given where a TC port belongs: src/client/wrong-port.ts).
 */
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from '../../shared/logger.ts';

/** The first byte of a TLS record carrying a handshake (a ClientHello). */
const TLS_HANDSHAKE_RECORD = 0x16;

/** PEM bytes of the node's certificate and key (and the CA, unused by an HTTPS server). */
export interface OpenApiTls {
  cert: Buffer | string;
  key: Buffer | string;
}

const PLAINTEXT_BODY = JSON.stringify({
  error: {
    name: 'PlaintextOnHttpsPortError',
    code: 'HTTPS_REQUIRED',
    message: 'this port speaks HTTPS: use https:// and trust the cluster CA (e.g. data/pki/ca.pem)',
    retryable: false,
  },
});

const PLAINTEXT_ANSWER =
  'HTTP/1.1 400 Bad Request\r\n' +
  'content-type: application/json; charset=utf-8\r\n' +
  `content-length: ${Buffer.byteLength(PLAINTEXT_BODY)}\r\n` +
  'connection: close\r\n\r\n' +
  PLAINTEXT_BODY;

/**
 * Puts a first-byte check in front of an HTTPS server's TLS handshake: a TLS connection goes
 * on to the server's own connection handling, a plaintext one gets the 400 above. A
 * connection that sends nothing within `firstByteTimeoutMs` is closed. Returns a function
 * that destroys the connections still waiting for their first byte (for close()).
 */
export function answerPlaintextOnTlsPort(
  server: HttpsServer,
  firstByteTimeoutMs: number,
  log: Logger,
): () => void {
  const tlsListeners = server.listeners('connection') as Array<(s: Socket) => void>;
  server.removeAllListeners('connection');
  const waiting = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    waiting.add(socket);
    const done = () => {
      waiting.delete(socket);
      socket.setTimeout(0);
    };
    socket.setTimeout(firstByteTimeoutMs, () => socket.destroy());
    socket.once('close', done);
    socket.once('error', done);
    const onReadable = () => {
      const first = socket.read(1) as Buffer | null;
      if (first === null) {
        socket.once('readable', onReadable);
        return;
      }
      done();
      socket.off('close', done);
      socket.off('error', done);
      socket.unshift(first);
      if (first[0] === TLS_HANDSHAKE_RECORD) {
        for (const l of tlsListeners) l.call(server, socket);
        return;
      }
      log.debug({ peer: socket.remoteAddress }, 'plaintext request on the HTTPS port refused');
      socket.on('error', () => undefined);
      socket.setTimeout(firstByteTimeoutMs, () => socket.destroy());
      socket.resume();
      socket.end(PLAINTEXT_ANSWER);
    };
    socket.once('readable', onReadable);
  });
  return () => {
    for (const s of waiting) s.destroy();
    waiting.clear();
  };
}
