/**
 * Secure by default (issue 14 item 2, docs/security.md): the security section's defaults,
 * insecure mode only by name, the dev PKI a first start makes (modes 0700/0600, one CA when
 * nodes race), and a node that refuses to start with the shipped dev token on a reachable
 * address.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { validateConfig } from '../../src/server/config.ts';
import { credentialFiles, ensureDevPki } from '../../src/server/security/pki-dir.ts';
import { checkStartPolicy, SHIPPED_DEV_TOKENS } from '../../src/server/security/policy.ts';
import { DEFAULT_QUOTAS } from '../../src/server/security/quotas.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import { identityOfPem } from '../../src/shared/pki.ts';
import { freePorts } from '../support/ports.ts';
import { runCli } from './helpers.ts';
import { minimalConfig } from '../support/config.ts';

const root = mkdtempSync(join(tmpdir(), 'concord-security-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const minimal = minimalConfig;

describe('security config', () => {
  it('TLS is the default, its files beside the data directory; insecure mode only by name', () => {
    const c = validateConfig(minimal(), { cwd: '/srv/concord' });
    expect(c.security).toEqual({
      insecure: false,
      quotas: DEFAULT_QUOTAS,
      tls: {
        dir: '/srv/concord/data/pki',
        auto: true,
        ca: '/srv/concord/data/pki/ca.pem',
        cert: '/srv/concord/data/pki/node-node1.pem',
        key: '/srv/concord/data/pki/node-node1-key.pem',
      },
    });
    expect(validateConfig(minimal(), { env: { CONCORD_INSECURE: '1' } }).security).toEqual({
      insecure: true,
      quotas: DEFAULT_QUOTAS,
      tls: null,
    });
    const quotas = validateConfig({
      ...minimal(),
      security: { quotas: { applications: { orders: { maxRmChannels: 3 } } } },
    }).security.quotas;
    expect(quotas.applications.orders).toEqual({
      maxTransactionTimeoutMs: DEFAULT_QUOTAS.maxTransactionTimeoutMs,
      maxRmChannels: 3,
      maxLiveTransactions: DEFAULT_QUOTAS.maxLiveTransactionsPerApplication,
    });
    expect(() =>
      validateConfig({ ...minimal(), security: { quotas: { maxTransactionTimeoutMs: 0 } } }),
    ).toThrow(ConfigError);
    expect(validateConfig({ ...minimal(), security: { insecure: true } }).security.insecure).toBe(
      true,
    );
    expect(() => validateConfig({ ...minimal(), security: { tls: { cert: 5 } } })).toThrow(
      ConfigError,
    );
  });

  it('the shipped dev token is refused on a reachable address unless insecure mode is named', () => {
    const token = SHIPPED_DEV_TOKENS[0]!;
    const exposed = { ...minimal('0.0.0.0'), http: { authToken: token } };
    expect(() => checkStartPolicy(validateConfig(exposed))).toThrow(/shipped development token/);
    // Loopback, another token, or insecure mode named: allowed.
    checkStartPolicy(validateConfig({ ...minimal(), http: { authToken: token } }));
    checkStartPolicy(validateConfig({ ...exposed, http: { authToken: 'a-token-of-my-own-123' } }));
    checkStartPolicy(validateConfig(exposed, { env: { CONCORD_INSECURE: '1' } }));
  });

  it('the dev PKI: one CA when nodes race, node and client identities, private modes', () => {
    const dir = join(root, 'pki');
    const tls = (id: string) => ({
      dir,
      auto: true,
      ca: join(dir, 'ca.pem'),
      cert: join(dir, `node-${id}.pem`),
      key: join(dir, `node-${id}-key.pem`),
    });
    ensureDevPki(tls('n1'), 'n1', ['127.0.0.1']);
    ensureDevPki(tls('n2'), 'n2', ['10.1.2.3', 'tc.example']);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    for (const id of ['n1', 'n2']) {
      const cert = new X509Certificate(readFileSync(tls(id).cert));
      expect(cert.verify(ca.publicKey), id).toBe(true);
      expect(identityOfPem(cert.toString()).nodeId).toBe(id);
    }
    expect(new X509Certificate(readFileSync(tls('n2').cert)).subjectAltName).toMatch(
      /DNS:tc\.example.*IP Address:10\.1\.2\.3/,
    );
    const admin = credentialFiles(dir, 'admin');
    expect(identityOfPem(readFileSync(admin.cert, 'utf8'))).toEqual({
      nodeId: null,
      app: 'admin',
      admin: true,
    });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(admin.key).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
  });

  it('a node on 0.0.0.0 with the shipped dev token does not start; the refusal names the fix, not the token', async () => {
    const [http, tc, raft] = await freePorts(3);
    const file = join(root, 'exposed.yaml');
    writeFileSync(
      file,
      stringify({
        node: { id: 'node1' },
        server: {
          host: '0.0.0.0',
          advertiseHost: '127.0.0.1',
          httpPort: http,
          tcPort: tc,
          raftPort: raft,
        },
        raft: {
          dataDir: join(root, 'exposed', 'node1'),
          peers: [
            { nodeId: 'node1', host: '127.0.0.1', raftPort: raft, tcPort: tc, httpPort: http },
          ],
        },
        http: { authToken: SHIPPED_DEV_TOKENS[0] },
      }),
    );
    const r = await runCli(['start', '--config', file], { timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/shipped development token/);
    expect(r.out).not.toContain(SHIPPED_DEV_TOKENS[0]);
  });
});
