/**
 * Vitest global setup: one dev PKI for the whole run (src/server/security/pki-dir.ts), so
 * that every test cluster runs TLS on every port by default. Nodes started through
 * test/support/cluster.ts make their certificates in it; clients in the test processes
 * (and their children) find the operator credential through CONCORD_TLS_* — tests of
 * authorization pass their own application credentials instead.
 */
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentialFiles, ensureCa, ensureDevPki } from '../../src/server/security/pki-dir.ts';

export const TEST_PKI_DIR_ENV = 'CONCORD_TEST_PKI_DIR';

/** The run's pki dir: one per checkout (worktrees do not share it). */
export function testPkiDir(): string {
  const tag = createHash('sha256').update(process.cwd()).digest('hex').slice(0, 12);
  return join(tmpdir(), `concord-test-pki-${process.getuid?.() ?? 0}-${tag}`);
}

export default function setup(): void {
  const dir = testPkiDir();
  ensureCa(dir);
  ensureDevPki(
    {
      dir,
      auto: true,
      ca: join(dir, 'ca.pem'),
      cert: join(dir, 'node-setup.pem'),
      key: join(dir, 'node-setup-key.pem'),
    },
    'setup',
    [],
  );
  const admin = credentialFiles(dir, 'admin');
  process.env[TEST_PKI_DIR_ENV] = dir;
  process.env.CONCORD_TLS_CA = admin.ca;
  process.env.CONCORD_TLS_CERT = admin.cert;
  process.env.CONCORD_TLS_KEY = admin.key;
}
