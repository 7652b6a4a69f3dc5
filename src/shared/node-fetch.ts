/**
 * Requests to a node's HTTP port (openapi, console, /metrics), over HTTPS when the cluster
 * runs secure. Node's global fetch takes no CA per request, so HTTPS goes through
 * node:https with the cluster's CA; the answer is a standard `Response` either way, and a
 * failure a `TypeError('fetch failed')` whose `cause` is the socket or TLS error (as
 * fetch's are: `cause.code` is e.g. ECONNREFUSED, or UNABLE_TO_VERIFY_LEAF_SIGNATURE for a
 * server certificate of another CA).
 *
 * The server is checked as the TC port checks it (src/client/tls.ts): its certificate must
 * be of the trusted CA and name a Concord node (SAN URI concord://node/<id>); the host name
 * is not compared, as an address a member advertises need not be in its certificate.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import type { PeerCertificate } from 'node:tls';
import { formatHostPort, type HostPort } from './metadata.ts';

/** Whom an HTTPS client of a node trusts: the cluster's CA (PEM). */
export interface NodeHttpTls {
  ca: string | Buffer;
}

export interface NodeFetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}

/** "https" with TLS, "http" without. */
export function nodeScheme(tls: NodeHttpTls | null): 'http' | 'https' {
  return tls === null ? 'http' : 'https';
}

/** The URL of `path` on a node's HTTP port. */
export function nodeUrl(tls: NodeHttpTls | null, base: HostPort, path: string): string {
  return `${nodeScheme(tls)}://${formatHostPort(base)}${path}`;
}

/** True when the certificate names a Concord node (concord://node/<id>). */
export function certificateNamesANode(cert: PeerCertificate | undefined): boolean {
  const san = typeof cert?.subjectaltname === 'string' ? cert.subjectaltname : '';
  return san.split(/,\s*/).some((part) => part.startsWith('URI:concord://node/'));
}

/** Statuses whose answer has no body (the Response constructor refuses one). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

function headersOf(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) out.append(name, v);
  }
  return out;
}

/**
 * fetch(url, init) for a node: an https: URL with `tls` goes through node:https trusting
 * `tls.ca` only; anything else is the global fetch.
 */
export function nodeFetch(
  url: string,
  init: NodeFetchInit,
  tls: NodeHttpTls | null,
): Promise<Response> {
  const target = new URL(url);
  if (tls === null || target.protocol !== 'https:') return fetch(url, init);
  return new Promise<Response>((resolve, reject) => {
    const fail = (err: unknown) => reject(new TypeError('fetch failed', { cause: err }));
    const method = init.method ?? 'GET';
    const req = httpsRequest(
      target,
      {
        method,
        headers: init.headers,
        ca: tls.ca,
        checkServerIdentity: (_host, cert) =>
          certificateNamesANode(cert)
            ? undefined
            : Object.assign(new Error('the server certificate names no Concord node'), {
                code: 'ERR_TLS_CERT_NOT_A_NODE',
              }),
        ...(init.signal ? { signal: init.signal } : {}),
      },
      (res) => {
        const status = res.statusCode ?? 0;
        const empty = NULL_BODY_STATUS.has(status) || method === 'HEAD';
        if (empty) res.resume();
        try {
          const body = empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
          resolve(
            new Response(body, {
              status,
              statusText: res.statusMessage ?? '',
              headers: headersOf(res.headers),
            }),
          );
        } catch (err) {
          res.destroy();
          fail(err);
        }
      },
    );
    req.once('error', fail);
    req.end(init.body);
  });
}
