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
import { clientTlsFromEnv, nodeHttpTlsFromEnv, TLS_ENV, type ClientTls } from '../client/tls.ts';
import { BadRequestError } from '../shared/errors.ts';
import type { NodeHttpTls } from '../shared/node-fetch.ts';
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
  if (isInsecureEnv(env)) return null;
  const dir = env[TLS_ENV.dir];
  if (dir) return adminOf(resolve(cwd, dir), TLS_ENV.dir);
  const dev = resolve(cwd, DEFAULT_PKI_DIR);
  if (existsSync(credentialFiles(dev, DEV_ADMIN_APP).cert)) return adminOf(dev, DEFAULT_PKI_DIR);
  return null;
}

function isInsecureEnv(env: NodeJS.ProcessEnv): boolean {
  const v = env[TLS_ENV.insecure];
  return v !== undefined && ['1', 'true', 'yes'].includes(v.trim().toLowerCase());
}

function readCa(file: string, source: string): NodeHttpTls {
  try {
    return { ca: readFileSync(file) };
  } catch (err) {
    throw new BadRequestError(
      `${source}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`,
    );
  }
}

/**
 * Whom the CLI trusts on a node's HTTP port (HTTPS on a secure node: cluster status and
 * membership commands, tx list and show, the leader discovery of tx actions), first match
 * wins:
 *
 *   --insecure, or CONCORD_INSECURE=1         plain HTTP (a node in insecure mode)
 *   --pki <dir>                               <dir>/ca.pem
 *   CONCORD_TLS_CA, or CONCORD_TLS_DIR        that CA file, or the dir's ca.pem
 *   ./data/pki/ca.pem (npm start's dev CA)    if it exists
 *
 * With none of these: plain HTTP (a secure node answers it with 400, "use https://").
 */
export function cliHttpTls(
  o: OperatorTlsOptions,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): NodeHttpTls | null {
  if (o.insecure || isInsecureEnv(env)) return null;
  if (o.pki !== undefined) return readCa(resolve(cwd, o.pki, 'ca.pem'), '--pki');
  const fromEnv = nodeHttpTlsFromEnv(env);
  if (fromEnv !== null) return fromEnv;
  const dev = resolve(cwd, DEFAULT_PKI_DIR, 'ca.pem');
  return existsSync(dev) ? readCa(dev, DEFAULT_PKI_DIR) : null;
}
