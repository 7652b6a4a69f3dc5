/**
 * The operator credential of the CLI's TC calls (`concord tx retry|stop|resume|resolve`):
 * the TC port runs mutual TLS by default and its operator methods need the admin role
 * (docs/security.md). Where it comes from, first match wins:
 *
 *   --insecure, or CONCORD_INSECURE=1         plaintext (a node in insecure mode)
 *   --pki <dir>                               <dir>/ca.pem, admin.pem, admin-key.pem
 *   CONCORD_TLS_CA, CONCORD_TLS_CERT, _KEY    those files (an operator's own credential)
 *   CONCORD_TLS_DIR                           its ca.pem, admin.pem, admin-key.pem
 *   ./data/pki (npm start's dev PKI)          its ca.pem, admin.pem, admin-key.pem
 *
 * With none of these, the call is plaintext, and a secure node refuses it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { clientTlsFromEnv, TLS_ENV, type ClientTls } from '../client/tls.ts';
import { BadRequestError } from '../shared/errors.ts';
import { credentialFiles, DEV_ADMIN_APP } from '../server/security/pki-dir.ts';

/** The pki dir `npm start` makes (relative to the working directory). */
export const DEFAULT_PKI_DIR = 'data/pki';

export interface OperatorTlsOptions {
  /** A pki dir holding ca.pem, admin.pem and admin-key.pem. */
  pki?: string;
  insecure?: boolean;
}

function adminOf(dir: string, source: string): ClientTls {
  const files = credentialFiles(dir, DEV_ADMIN_APP);
  for (const f of [files.ca, files.cert, files.key])
    if (!existsSync(f))
      throw new BadRequestError(
        `${source}: ${f} is missing (an operator credential needs all three)`,
      );
  return {
    ca: readFileSync(files.ca),
    cert: readFileSync(files.cert),
    key: readFileSync(files.key),
  };
}

/** The TLS of an operator's TC calls, or null for plaintext. */
export function operatorTls(
  o: OperatorTlsOptions,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): ClientTls | null {
  if (o.insecure) return null;
  if (o.pki !== undefined) return adminOf(resolve(cwd, o.pki), '--pki');
  const files = clientTlsFromEnv({ ...env, [TLS_ENV.dir]: undefined });
  if (files !== null) return files;
  const insecureEnv = env[TLS_ENV.insecure];
  if (insecureEnv !== undefined && ['1', 'true', 'yes'].includes(insecureEnv.trim().toLowerCase()))
    return null;
  const dir = env[TLS_ENV.dir];
  if (dir) return adminOf(resolve(cwd, dir), TLS_ENV.dir);
  const dev = resolve(cwd, DEFAULT_PKI_DIR);
  if (existsSync(credentialFiles(dev, DEV_ADMIN_APP).cert)) return adminOf(dev, DEFAULT_PKI_DIR);
  return null;
}
