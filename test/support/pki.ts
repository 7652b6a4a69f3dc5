/**
 * Certificates for test clusters: one CA per cluster (or per attacker), a certificate per
 * node and per application, written as PEM files under a directory (src/shared/pki.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createCa,
  issueAppCertificate,
  issueNodeCertificate,
  type CertKeyPem,
} from '../../src/shared/pki.ts';

/** The files of one certificate: the CA's certificate, the certificate and its key. */
export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  ca: CertKeyPem;
  /** Writes (once) and returns the files of node `id`'s certificate. */
  node(id: string): TlsFiles;
  /** Writes (once) and returns the files of application `app`'s client certificate. */
  app(app: string, options?: { admin?: boolean }): TlsFiles;
}

/** A new CA under `dir` (created), issuing certificates on demand. */
export function createTestPki(dir: string, name = 'Concord test CA'): TestPki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = createCa(name);
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  const issued = new Map<string, TlsFiles>();
  const write = (name: string, make: () => CertKeyPem): TlsFiles => {
    const known = issued.get(name);
    if (known) return known;
    const pem = make();
    const files = { ca: caFile, cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
    writeFileSync(files.cert, pem.cert);
    writeFileSync(files.key, pem.key, { mode: 0o600 });
    issued.set(name, files);
    return files;
  };
  return {
    dir,
    ca,
    node: (id) => write(`node-${id}`, () => issueNodeCertificate(ca, id)),
    app: (app, options = {}) =>
      write(`app-${app}${options.admin ? '-admin' : ''}`, () =>
        issueAppCertificate(ca, app, options),
      ),
  };
}
