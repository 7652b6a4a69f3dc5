/**
 * The `security` section of a node's config (docs/security.md, docs/operations.md):
 *
 *   security:
 *     insecure: false        # plaintext everywhere; also CONCORD_INSECURE=1 or --insecure
 *     tls:
 *       dir: ./data/pki      # default: beside raft.dataDir (./data/node1 → ./data/pki)
 *       auto: true           # make a dev CA and this node's certificate there if missing
 *       ca: <dir>/ca.pem
 *       cert: <dir>/node-<id>.pem
 *       key: <dir>/node-<id>-key.pem
 *
 * Secure by default: without `insecure`, the Raft and TC ports speak mutual TLS with
 * certificates of the cluster's CA, and a node refuses to start on a non-loopback address
 * with the shipped dev token (policy.ts).
 */
import { dirname, join as joinPath, resolve as resolvePath } from 'node:path';
import { ConfigError } from '../../shared/errors.ts';
import { bool, noUnknownKeys, optStr, section, type Obj } from '../config/validate.ts';
import { parseQuotas, type QuotasConfig } from './quotas.ts';

/** Environment variable that names insecure mode (any of 1, true, yes). */
export const INSECURE_ENV = 'CONCORD_INSECURE';

export interface TlsFilesConfig {
  /** Where the dev CA and certificates are made (and found by default). Absolute. */
  dir: string;
  /** Make the CA, this node's certificate and the dev client credentials if missing. */
  auto: boolean;
  ca: string;
  cert: string;
  key: string;
}

export interface SecurityConfig {
  /** Named explicitly: plaintext on every port, no client authentication. */
  insecure: boolean;
  /** Null exactly when insecure. */
  tls: TlsFilesConfig | null;
  /** Per-application quotas on the TC port (quotas.ts); they hold in insecure mode too. */
  quotas: QuotasConfig;
}

export function envInsecure(env: NodeJS.ProcessEnv): boolean {
  const v = env[INSECURE_ENV];
  return v !== undefined && ['1', 'true', 'yes'].includes(v.trim().toLowerCase());
}

/** Parses `security`; `dataDir` (absolute) places the default pki dir beside it. */
export function parseSecuritySection(
  raw: Obj,
  opts: { nodeId: string; dataDir: string | null; cwd: string },
): SecurityConfig {
  const s = section(raw, 'security', '');
  noUnknownKeys(s, ['insecure', 'tls', 'quotas'], 'security');
  const quotas = parseQuotas(s);
  // CONCORD_INSECURE reaches it as security.insecure (config/keys.ts: ENV_ALIASES).
  const insecure = bool(s, 'insecure', 'security', false);
  const t = section(s, 'tls', 'security');
  noUnknownKeys(t, ['dir', 'auto', 'ca', 'cert', 'key'], 'security.tls');
  if (insecure) return { insecure, tls: null, quotas };
  const path = (key: string): string | null => {
    const v = optStr(t, key, 'security.tls', { maxLength: 4096 });
    if (v !== null && v.includes('\0'))
      throw new ConfigError(`security.tls.${key}`, 'is not a path');
    return v === null ? null : resolvePath(opts.cwd, v);
  };
  const dir =
    path('dir') ??
    (opts.dataDir !== null
      ? joinPath(dirname(opts.dataDir), 'pki')
      : resolvePath(opts.cwd, 'data', 'pki'));
  return {
    insecure,
    quotas,
    tls: {
      dir,
      auto: bool(t, 'auto', 'security.tls', true),
      ca: path('ca') ?? joinPath(dir, 'ca.pem'),
      cert: path('cert') ?? joinPath(dir, `node-${opts.nodeId}.pem`),
      key: path('key') ?? joinPath(dir, `node-${opts.nodeId}-key.pem`),
    },
  };
}
