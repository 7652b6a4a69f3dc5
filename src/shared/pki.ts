/**
 * A small certificate authority for Concord's mutual TLS (docs/security.md): one CA per
 * cluster, a certificate per node and per application. node:crypto makes keys but cannot
 * make X.509 certificates, so they are assembled and signed with node-forge (RSA 2048 keys
 * generated natively by node:crypto, certificates signed with SHA-256).
 *
 * Identities live in the certificate's subject alternative names, as URIs:
 *   concord://node/<nodeId>   a cluster member (Raft port; also client and server auth)
 *   concord://app/<app>       an application (TM/RM) on the TC port and the openapi
 *   concord://role/admin      an operator (operator methods, reads of every app's data)
 * and in the common name (CN = the node id or the application name) for tools that show it.
 */
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import forge from 'node-forge';

/** PEM text of a certificate and its private key. */
export interface CertKeyPem {
  cert: string;
  key: string;
}

export const NODE_URI_PREFIX = 'concord://node/';
export const APP_URI_PREFIX = 'concord://app/';
export const ADMIN_ROLE_URI = 'concord://role/admin';

/** Names that may appear in an identity URI: the node id pattern. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const DAY_MS = 24 * 3600 * 1000;
/** The dev CA and the certificates it issues are valid this long. */
export const DEFAULT_VALIDITY_DAYS = 825;

function newKeyPair(): {
  forgeKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.PublicKey;
  pem: string;
} {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const forgeKey = forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey;
  const publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  return { forgeKey, publicKey, pem: privateKey };
}

function serial(): string {
  // Positive: the high bit clear.
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

function validity(cert: forge.pki.Certificate, days: number, now: Date): void {
  cert.validity.notBefore = new Date(now.getTime() - 5 * 60 * 1000);
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS);
}

/** Makes a self-signed CA certificate and key. */
export function createCa(
  commonName: string,
  options: { days?: number; now?: Date } = {},
): CertKeyPem {
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, options.days ?? DEFAULT_VALIDITY_DAYS, options.now ?? new Date());
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'Concord' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.forgeKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keys.pem };
}

export interface IssueOptions {
  /** Identity URIs (concord://node/…, concord://app/…, concord://role/admin). */
  uris: string[];
  commonName: string;
  /** Host names and IP addresses a server certificate answers for. */
  dnsNames?: string[];
  ips?: string[];
  days?: number;
  now?: Date;
}

/** Issues a certificate signed by `ca`, usable as both TLS server and client. */
export function issueCertificate(ca: CertKeyPem, options: IssueOptions): CertKeyPem {
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const caKey = forge.pki.privateKeyFromPem(ca.key);
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, options.days ?? DEFAULT_VALIDITY_DAYS, options.now ?? new Date());
  cert.setSubject([
    { name: 'commonName', value: options.commonName },
    { name: 'organizationName', value: 'Concord' },
  ]);
  cert.setIssuer(caCert.subject.attributes);
  const altNames: Array<{ type: number; value?: string; ip?: string }> = [
    ...options.uris.map((value) => ({ type: 6, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(options.ips ?? []).map((ip) => ({ type: 7, ip })),
  ];
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keys.pem };
}

function checkName(kind: string, name: string): void {
  if (!NAME_PATTERN.test(name))
    throw new RangeError(
      `${kind} ${JSON.stringify(name)} is not 1-64 letters, digits, ".", "_" or "-"`,
    );
}

/** A node's certificate: identity concord://node/<id>, server names for its addresses. */
export function issueNodeCertificate(
  ca: CertKeyPem,
  nodeId: string,
  hosts: { dnsNames?: string[]; ips?: string[] } = {},
): CertKeyPem {
  checkName('node id', nodeId);
  return issueCertificate(ca, {
    uris: [`${NODE_URI_PREFIX}${nodeId}`],
    commonName: nodeId,
    dnsNames: hosts.dnsNames ?? ['localhost'],
    ips: hosts.ips ?? ['127.0.0.1', '::1'],
  });
}

/** An application's client certificate (with the admin role if asked). */
export function issueAppCertificate(
  ca: CertKeyPem,
  app: string,
  options: { admin?: boolean } = {},
): CertKeyPem {
  checkName('application', app);
  return issueCertificate(ca, {
    uris: [`${APP_URI_PREFIX}${app}`, ...(options.admin ? [ADMIN_ROLE_URI] : [])],
    commonName: app,
  });
}

/** The URIs among a certificate's subject alternative names (node:crypto's parse). */
export function certificateUris(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((part) => part.startsWith('URI:'))
    .map((part) => part.slice(4));
}

/** Who a certificate names: its node id, application and admin role (from the SAN URIs). */
export interface CertificateIdentity {
  nodeId: string | null;
  app: string | null;
  admin: boolean;
}

/** Reads the identity URIs of a peer certificate's subject alternative names. */
export function identityOfSubjectAltName(subjectAltName: string | undefined): CertificateIdentity {
  const uris = certificateUris(subjectAltName);
  const one = (prefix: string): string | null => {
    const names = uris
      .filter((u) => u.startsWith(prefix))
      .map((u) => u.slice(prefix.length))
      .filter((n) => NAME_PATTERN.test(n));
    // A certificate naming two different identities of one kind names none.
    return names.length === 1 ? names[0]! : null;
  };
  return {
    nodeId: one(NODE_URI_PREFIX),
    app: one(APP_URI_PREFIX),
    admin: uris.includes(ADMIN_ROLE_URI),
  };
}

/** The identity of a PEM certificate (for tools and tests). */
export function identityOfPem(pem: string): CertificateIdentity {
  return identityOfSubjectAltName(new X509Certificate(pem).subjectAltName);
}
