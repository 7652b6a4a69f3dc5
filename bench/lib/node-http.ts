/**
 * The benchmarks' requests to a node's HTTP port (metadata, /health, /metrics). Nodes run
 * secure by default: their HTTP port speaks HTTPS with a certificate of the cluster's CA,
 * which these requests trust — the CA CONCORD_TLS_CA names (lib/cluster.ts sets it to the
 * bench cluster's), or the one given. Plain HTTP under CONCORD_INSECURE=1.
 */
import { readFileSync } from 'node:fs';
import { nodeHttpTlsFromEnv } from '../../src/client/tls.ts';
import { nodeFetch, nodeScheme, type NodeHttpTls } from '../../src/shared/node-fetch.ts';

/** GET `path` on `hostPort` ("127.0.0.1:7091"); `caFile`: trust this CA instead of the env's. */
export function nodeGet(
  hostPort: string,
  path: string,
  timeoutMs: number,
  caFile?: string,
): Promise<Response> {
  let tls: NodeHttpTls | null;
  try {
    tls =
      caFile !== undefined && !process.env.CONCORD_INSECURE
        ? { ca: readFileSync(caFile) }
        : nodeHttpTlsFromEnv();
  } catch (err) {
    // The node has not made its CA yet: as if it did not answer.
    return Promise.reject(err as Error);
  }
  return nodeFetch(
    `${nodeScheme(tls)}://${hostPort}${path}`,
    { signal: AbortSignal.timeout(timeoutMs) },
    tls,
  );
}
