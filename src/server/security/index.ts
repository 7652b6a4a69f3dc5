/**
 * A node's security at start (docs/security.md): the start policy, then its TLS material —
 * made first under `security.tls.dir` when `auto` is on and something is missing.
 */
import type { Logger } from '../../shared/logger.ts';
import type { NodeConfig } from '../config.ts';
import { ensureDevPki, readTlsMaterial, type TlsMaterial } from './pki-dir.ts';
import { checkStartPolicy } from './policy.ts';

export type { TlsMaterial } from './pki-dir.ts';
export { checkStartPolicy, isLoopbackHost, SHIPPED_DEV_TOKENS } from './policy.ts';
export { INSECURE_ENV, envInsecure, type SecurityConfig } from './config.ts';

/** Checks the start policy and returns the node's TLS material, or null in insecure mode. */
export function prepareNodeSecurity(config: NodeConfig, logger: Logger): TlsMaterial | null {
  checkStartPolicy(config);
  const tls = config.security.tls;
  if (tls === null) {
    logger.warn(
      { host: config.server.host },
      'insecure mode: plaintext on every port, no client authentication (named by security.insecure, CONCORD_INSECURE or --insecure)',
    );
    return null;
  }
  if (tls.auto) {
    const { made } = ensureDevPki(tls, config.node.id, [
      config.server.host,
      config.server.advertiseHost,
    ]);
    if (made.length > 0) logger.info({ dir: tls.dir, made }, 'made dev certificates');
  }
  const material = readTlsMaterial(tls);
  logger.info({ ca: tls.ca, cert: tls.cert }, 'tls on every port');
  return material;
}
