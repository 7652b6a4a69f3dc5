/**
 * Requests to a test node's HTTP port. Test nodes run secure by default (support/tls.ts),
 * so their openapi, /metrics and console speak HTTPS with a certificate of the run's CA;
 * these helpers trust that CA (CONCORD_TLS_CA) the way the SDK and the CLI do
 * (src/shared/node-fetch.ts). A node started with `insecure: true` is reached with
 * `{ insecure: true }`: plain HTTP.
 */
import { nodeHttpTlsFromEnv } from '../../src/client/tls.ts';
import {
  nodeFetch,
  nodeScheme,
  type NodeFetchInit,
  type NodeHttpTls,
} from '../../src/shared/node-fetch.ts';

export interface NodeHttpOptions {
  /** The node runs in insecure mode: plain HTTP. */
  insecure?: boolean;
}

/** The run's CA (null: plain HTTP). */
export function testHttpTls(o: NodeHttpOptions = {}): NodeHttpTls | null {
  return o.insecure ? null : nodeHttpTlsFromEnv();
}

/** `https://127.0.0.1:<port>` (http:// for an insecure node). */
export function nodeBase(port: number, o: NodeHttpOptions & { host?: string } = {}): string {
  const host = o.host ?? '127.0.0.1';
  return `${nodeScheme(testHttpTls(o))}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** fetch for a test node's URL (https:// trusts the run's CA). */
export function fetchNode(url: string, init: NodeFetchInit = {}): Promise<Response> {
  return nodeFetch(url, init, url.startsWith('https:') ? nodeHttpTlsFromEnv() : null);
}

/**
 * One metric's value from a node's /metrics on `httpPort`: the sum over its label sets whose
 * line contains `labels` (all of them by default); 0 when the node exports none.
 */
export async function nodeMetric(httpPort: number, name: string, labels = ''): Promise<number> {
  const text = await (await fetchNode(`${nodeBase(httpPort)}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
