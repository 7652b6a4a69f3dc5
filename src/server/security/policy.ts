/**
 * What a node refuses to start with (docs/security.md): the shipped development token on
 * an address other hosts can reach, unless insecure mode is named. Without insecure mode
 * every port speaks TLS (config.ts), so "non-loopback without TLS" can only be asked for
 * by name.
 */
import { isIP } from 'node:net';
import { ConfigError } from '../../shared/errors.ts';
import type { NodeConfig } from '../config.ts';

/** The tokens the repository's example configs carry: known to everyone. */
export const SHIPPED_DEV_TOKENS: readonly string[] = [
  'concord-dev-token-change-me',
  'concord-dev-viewer-change-me',
];

/** 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  return bare === '::1';
}

/** Throws a ConfigError if the node must not start as configured. */
export function checkStartPolicy(config: NodeConfig): void {
  if (config.security.insecure) return;
  const exposed = [config.server.host, config.server.advertiseHost].find((h) => !isLoopbackHost(h));
  if (exposed === undefined) return;
  for (const [key, env] of [
    ['authToken', 'CONCORD_HTTP_AUTH_TOKEN'],
    ['viewerToken', 'CONCORD_HTTP_VIEWER_TOKEN'],
  ] as const) {
    const token = config.http[key];
    if (token !== null && SHIPPED_DEV_TOKENS.includes(token))
      throw new ConfigError(
        `http.${key}`,
        `is the shipped development token and the node is reachable at ${exposed}: ` +
          `set a token of your own (http.${key} or ${env}), ` +
          `or name insecure mode (--insecure or CONCORD_INSECURE=1)`,
      );
  }
}
