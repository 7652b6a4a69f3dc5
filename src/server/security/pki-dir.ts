/**
 * The dev PKI directory (`security.tls.dir`, ./data/pki by default): what the first start
 * makes when `security.tls.auto` is on, so that `npm ci && npm start` runs with TLS.
 *
 *   ca.pem                      the cluster's CA certificate (every node and client trusts it)
 *   ca-key.pem                  the CA's key and certificate (0600; signs what follows)
 *   node-<id>.pem, -key.pem     a node's certificate (concord://node/<id>)
 *   client-dev.pem, -key.pem    the dev application credential (concord://app/dev)
 *   admin.pem, admin-key.pem    an operator credential (concord://app/admin + admin role)
 *
 * Several nodes may start at once on one directory: the CA is made once (written to a
 * temporary file and linked into place, so exactly one maker wins) and read back by all.
 * The directory is 0700, keys 0600.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ConfigError } from '../../shared/errors.ts';
import {
  createCa,
  issueAppCertificate,
  issueNodeCertificate,
  type CertKeyPem,
} from '../../shared/pki.ts';
import type { TlsFilesConfig } from './config.ts';

/** The CA's subject. */
export const DEV_CA_NAME = 'Concord dev CA';
/** The dev client credential's application and the operator credential's. */
export const DEV_APP = 'dev';
export const DEV_ADMIN_APP = 'admin';

/** PEM bytes of a CA, a certificate and its key (what TLS options take). */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface CredentialFiles {
  ca: string;
  cert: string;
  key: string;
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** Writes a file through a temporary name and a rename (readers never see half of it). */
function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

function splitBundle(text: string): CertKeyPem {
  const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\s*/.exec(text)?.[0];
  const key = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----\s*/.exec(
    text,
  )?.[0];
  if (!cert || !key)
    throw new ConfigError('security.tls', 'ca-key.pem holds no certificate and key');
  return { cert, key };
}

/** The directory's CA, made now if it has none (one maker wins when several race). */
export function ensureCa(dir: string): CertKeyPem {
  ensureDir(dir);
  const bundleFile = join(dir, 'ca-key.pem');
  if (!existsSync(bundleFile)) {
    const ca = createCa(DEV_CA_NAME);
    const tmp = `${bundleFile}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, ca.key + ca.cert, { mode: 0o600 });
    try {
      linkSync(tmp, bundleFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  const ca = splitBundle(readFileSync(bundleFile, 'utf8'));
  const caFile = join(dir, 'ca.pem');
  if (!existsSync(caFile) || readFileSync(caFile, 'utf8') !== ca.cert)
    writeAtomic(caFile, ca.cert, 0o644);
  return ca;
}

function writeCredential(dir: string, name: string, pem: CertKeyPem): CredentialFiles {
  const files = credentialFiles(dir, name);
  writeAtomic(files.key, pem.key, 0o600);
  writeAtomic(files.cert, pem.cert, 0o644);
  return files;
}

/** Where credential `name` lives in a pki dir. */
export function credentialFiles(dir: string, name: string): CredentialFiles {
  return {
    ca: join(dir, 'ca.pem'),
    cert: join(dir, `${name}.pem`),
    key: join(dir, `${name}-key.pem`),
  };
}

/** The host names and addresses a node certificate answers for. */
export function nodeCertificateHosts(hosts: string[]): { dnsNames: string[]; ips: string[] } {
  const dnsNames = new Set(['localhost']);
  const ips = new Set(['127.0.0.1', '::1']);
  for (const h of hosts) {
    const bare = h.replace(/^\[|\]$/g, '');
    if (isIP(bare)) ips.add(bare);
    else if (bare !== '') dnsNames.add(bare);
  }
  return { dnsNames: [...dnsNames], ips: [...ips] };
}

/**
 * Makes what is missing of a node's dev PKI: the CA, the node's certificate (for `hosts`),
 * the dev client and operator credentials. Returns what it made, for the start banner.
 */
export function ensureDevPki(
  tls: TlsFilesConfig,
  nodeId: string,
  hosts: string[],
): { made: string[] } {
  ensureDir(tls.dir);
  return withDirLock(tls.dir, () => makeMissing(tls, nodeId, hosts));
}

/** How long a start waits for another process making the same directory's certificates. */
export const PKI_LOCK_WAIT_MS = 30_000;
/** A lock older than this was left by a process that died while holding it. */
export const PKI_LOCK_STALE_MS = 60_000;

/** Runs `fn` holding `<dir>/.lock` (a directory: its creation is atomic). */
function withDirLock<T>(dir: string, fn: () => T): T {
  const lock = join(dir, '.lock');
  const deadline = Date.now() + PKI_LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > PKI_LOCK_STALE_MS)
          rmSync(lock, { recursive: true, force: true });
      } catch {
        // gone meanwhile
      }
      if (Date.now() > deadline)
        throw new ConfigError(
          'security.tls.dir',
          `${lock} is held by another process; remove it if none runs`,
        );
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function makeMissing(tls: TlsFilesConfig, nodeId: string, hosts: string[]): { made: string[] } {
  const made: string[] = [];
  const hadCa = existsSync(join(tls.dir, 'ca-key.pem'));
  const ca = ensureCa(tls.dir);
  if (!hadCa) made.push(join(tls.dir, 'ca.pem'));
  if (!existsSync(tls.cert) || !existsSync(tls.key)) {
    const pem = issueNodeCertificate(ca, nodeId, nodeCertificateHosts(hosts));
    ensureDir(join(tls.cert, '..'));
    writeAtomic(tls.key, pem.key, 0o600);
    writeAtomic(tls.cert, pem.cert, 0o644);
    made.push(tls.cert);
  }
  for (const [name, app, admin] of [
    ['client-dev', DEV_APP, false],
    ['admin', DEV_ADMIN_APP, true],
  ] as const) {
    const files = credentialFiles(tls.dir, name);
    if (existsSync(files.cert) && existsSync(files.key)) continue;
    writeCredential(tls.dir, name, issueAppCertificate(ca, app, { admin }));
    made.push(files.cert);
  }
  return { made };
}

/** Reads a node's TLS files; a missing one is a ConfigError naming it. */
export function readTlsMaterial(tls: TlsFilesConfig): TlsMaterial {
  const read = (key: 'ca' | 'cert' | 'key'): Buffer => {
    try {
      return readFileSync(tls[key]);
    } catch (err) {
      throw new ConfigError(
        `security.tls.${key}`,
        `cannot read ${tls[key]}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` +
          (tls.auto ? '' : ' (security.tls.auto is off: make the certificates, or turn it on)'),
      );
    }
  };
  return { ca: read('ca'), cert: read('cert'), key: read('key') };
}
