/**
 * TLS for a client of the TC (docs/security.md, docs/sdk.md): the cluster's CA certificate
 * (whom to trust) and this application's client certificate and key (who it is: the
 * certificate names the application, concord://app/<name>). PEM text or bytes.
 *
 * Without options, a client reads them from the environment:
 *   CONCORD_TLS_CA, CONCORD_TLS_CERT, CONCORD_TLS_KEY   paths of the three files
 *   CONCORD_TLS_DIR                                     a pki dir (ca.pem, client-dev.pem,
 *                                                       client-dev-key.pem), e.g. ./data/pki
 *   CONCORD_INSECURE=1                                  plaintext (insecure mode)
 * With none set, a client speaks plaintext (and a secure node refuses it).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { certificateNamesANode, type NodeHttpTls } from '../shared/node-fetch.ts';

export type Pem = string | Buffer;

export interface ClientTls {
  ca: Pem;
  cert: Pem;
  key: Pem;
}

export const TLS_ENV = {
  ca: 'CONCORD_TLS_CA',
  cert: 'CONCORD_TLS_CERT',
  key: 'CONCORD_TLS_KEY',
  dir: 'CONCORD_TLS_DIR',
  insecure: 'CONCORD_INSECURE',
} as const;

/** The client TLS the environment names, or null (plaintext). Throws if a named file is missing. */
export function clientTlsFromEnv(env: NodeJS.ProcessEnv = process.env): ClientTls | null {
  const insecure = env[TLS_ENV.insecure];
  if (insecure !== undefined && ['1', 'true', 'yes'].includes(insecure.trim().toLowerCase()))
    return null;
  const dir = env[TLS_ENV.dir];
  const ca = env[TLS_ENV.ca] || (dir ? join(dir, 'ca.pem') : undefined);
  const cert = env[TLS_ENV.cert] || (dir ? join(dir, 'client-dev.pem') : undefined);
  const key = env[TLS_ENV.key] || (dir ? join(dir, 'client-dev-key.pem') : undefined);
  if (!ca && !cert && !key) return null;
  if (!ca || !cert || !key)
    throw new TypeError(
      `client TLS needs ${TLS_ENV.ca}, ${TLS_ENV.cert} and ${TLS_ENV.key} together (or ${TLS_ENV.dir})`,
    );
  return { ca: readFileSync(ca), cert: readFileSync(cert), key: readFileSync(key) };
}

const bytes = (p: Pem): Buffer => (typeof p === 'string' ? Buffer.from(p) : p);

/** The CA file the environment names for a node's HTTP port, read once per path. */
const caCache = new Map<string, Buffer>();

/**
 * What a client of a node's HTTP port (the SDK's discovery, the CLI) trusts when not told:
 * the CA of CONCORD_TLS_CA, else CONCORD_TLS_DIR's ca.pem; null (plain HTTP) with neither,
 * or with CONCORD_INSECURE=1. Throws if the named file cannot be read.
 */
export function nodeHttpTlsFromEnv(env: NodeJS.ProcessEnv = process.env): NodeHttpTls | null {
  const insecure = env[TLS_ENV.insecure];
  if (insecure !== undefined && ['1', 'true', 'yes'].includes(insecure.trim().toLowerCase()))
    return null;
  const dir = env[TLS_ENV.dir];
  const file = env[TLS_ENV.ca] || (dir ? join(dir, 'ca.pem') : undefined);
  if (!file) return null;
  let ca = caCache.get(file);
  if (ca === undefined) {
    ca = readFileSync(file);
    caCache.clear();
    caCache.set(file, ca);
  }
  return { ca };
}

/** The HTTPS trust of a TC client's TLS (its CA), or null for plaintext. */
export function nodeHttpTlsOf(tls: ClientTls | null): NodeHttpTls | null {
  return tls === null ? null : { ca: tls.ca };
}

/** gRPC credentials for a TC connection: TLS with this client's certificate, or plaintext. */
export function tcChannelCredentials(tls: ClientTls | null): grpc.ChannelCredentials {
  if (tls === null) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(bytes(tls.ca), bytes(tls.key), bytes(tls.cert), {
    checkServerIdentity: (_host, cert) =>
      certificateNamesANode(cert)
        ? undefined
        : new Error('the server certificate names no Concord node'),
  });
}

/** Channel options with TLS: a fixed server name (an IP is none; the node id is checked). */
export function tcTlsChannelOptions(tls: ClientTls | null): grpc.ChannelOptions {
  return tls === null ? {} : { 'grpc.ssl_target_name_override': 'concord-node' };
}
