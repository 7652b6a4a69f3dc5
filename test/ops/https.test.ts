/**
 * The HTTP port over TLS (issue 14, docs/security.md), on real `concord start` processes:
 *  - a secure node (the default) serves its openapi, /metrics and console over HTTPS with its
 *    node certificate; plaintext gets a 400 HTTPS_REQUIRED and none of its data; a client
 *    without the cluster's CA, or with another cluster's, fails its handshake;
 *  - the SDK's discovery finds the leader over HTTPS (and a plaintext or wrong-CA client
 *    fails at once with a typed, definite error); the CLI works over HTTPS; the console's
 *    session cookie is Secure and its follower → leader requests run over HTTPS;
 *  - a node in insecure mode keeps plain HTTP (and a cookie without Secure).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterDiscovery } from '../../src/client/discovery.ts';
import { fetchClusterMetadata } from '../../src/client/http-metadata.ts';
import { TlsMismatchError } from '../../src/client/wrong-port.ts';
import { createCa } from '../../src/shared/pki.ts';
import { nodeFetch, type NodeHttpTls } from '../../src/shared/node-fetch.ts';
import { allocateNodes, raftNodeConfig, writeConfig, type NodePorts } from '../support/cluster.ts';
import { TEST_PKI_DIR_ENV } from '../support/tls.ts';
import { REPO_ROOT, TestCluster, waitFor, type TestNode } from '../tc/helpers.ts';
import { runCli } from './helpers.ts';

const TOKEN = 'tc-test-token-0123456789';

let cluster: TestCluster;
let leader: TestNode;
let follower: TestNode;
let pkiDir: string;
let trusted: NodeHttpTls;
/** The CA of another cluster: its certificates are not this cluster's. */
let foreignDir: string;
let foreign: NodeHttpTls;

beforeAll(async () => {
  pkiDir = process.env[TEST_PKI_DIR_ENV]!;
  trusted = { ca: readFileSync(join(pkiDir, 'ca.pem')) };
  foreignDir = mkdtempSync(join(tmpdir(), 'concord-https-foreign-'));
  const other = createCa('another cluster');
  writeFileSync(join(foreignDir, 'ca.pem'), other.cert);
  foreign = { ca: other.cert };
  cluster = await TestCluster.start('https', { tickMs: 50 });
  leader = await cluster.leader();
  follower = cluster.followers(leader)[0]!;
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  rmSync(foreignDir, { recursive: true, force: true });
}, 60_000);

const httpsUrl = (n: { http: number }, path: string) => `https://127.0.0.1:${n.http}${path}`;

/** The code of the error under a failed fetch. */
async function failureCode(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'the request should have failed').not.toBeNull();
  return String((err as { cause?: { code?: unknown } }).cause?.code);
}

describe("a secure node's HTTP port", () => {
  it('answers plaintext with 400 HTTPS_REQUIRED and none of its data', async () => {
    for (const path of ['/metadata/v1/cluster?group=default', '/metrics', '/health', '/console']) {
      const res = await fetch(`http://127.0.0.1:${leader.http}${path}`, {
        signal: AbortSignal.timeout(5_000),
      });
      const text = await res.text();
      expect([path, res.status]).toEqual([path, 400]);
      expect((JSON.parse(text) as { error: { code: string } }).error.code).toBe('HTTPS_REQUIRED');
      for (const secret of [leader.id, 'concord_', 'leaderId', '<html'])
        expect(text, path).not.toContain(secret);
    }
  });

  it('fails the handshake of a client without the CA, or with another cluster’s', async () => {
    // The global fetch trusts the system's CAs only.
    expect(await failureCode(fetch(httpsUrl(leader, '/health')))).toMatch(
      /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/,
    );
    expect(await failureCode(nodeFetch(httpsUrl(leader, '/health'), {}, foreign))).toBe(
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    );
    // The SDK says what to change, at once.
    const at = { host: '127.0.0.1', port: leader.http };
    const wrongCa = await fetchClusterMetadata(at, { tls: foreign }).catch((e: unknown) => e);
    expect(wrongCa).toBeInstanceOf(TlsMismatchError);
    expect((wrongCa as Error).message).toContain('not one of a Concord node of the trusted CA');
    const plain = await fetchClusterMetadata(at, { tls: null }).catch((e: unknown) => e);
    expect(plain).toBeInstanceOf(TlsMismatchError);
    expect((plain as Error).message).toContain('speaks HTTPS');
  });

  it('serves metadata, health, metrics and the console over HTTPS to a client with the CA', async () => {
    const get = (path: string) =>
      nodeFetch(httpsUrl(follower, path), { signal: AbortSignal.timeout(5_000) }, trusted);
    const md = await get('/metadata/v1/cluster?group=default');
    expect(md.status).toBe(200);
    const body = (await md.json()) as { leaderId: string; nodes: unknown[] };
    expect(body.leaderId).toBe(leader.id);
    expect(body.nodes).toHaveLength(3);
    expect((await get('/health')).status).toBe(200);
    const metrics = await get('/metrics');
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('concord_raft_term');
    const page = await get('/console');
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<html');
  });
});

describe('clients of the HTTPS port', () => {
  it('the SDK discovers the leader over HTTPS and follows it', async () => {
    const d = new ClusterDiscovery({
      seeds: [`127.0.0.1:${follower.http}`],
      tls: trusted,
      watchTimeoutMs: 5_000,
    });
    try {
      const md = await d.start();
      expect(md.leaderId).toBe(leader.id);
      expect(d.leader()?.transaction.port).toBe(leader.tc);
    } finally {
      d.close();
    }
    // A TC client (its CA and credential from CONCORD_TLS_*, support/tls.ts) runs a
    // transaction through the leader it found over HTTPS.
    const tc = cluster.client();
    try {
      const xid = await tc.begin({
        applicationId: 'https',
        transactionServiceGroup: 'default',
        name: 'https',
        timeoutMs: 60_000,
      });
      expect(await tc.commit(xid)).toBe('Committed');
    } finally {
      await tc.close();
    }
  });

  it('a discovery without TLS, or with another CA, fails at once with a typed error', async () => {
    for (const tls of [null, foreign]) {
      const d = new ClusterDiscovery({ seeds: cluster.seeds(), tls, watch: false });
      try {
        const err = await d.start().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TlsMismatchError);
      } finally {
        d.close();
      }
    }
  });

  it('the CLI reaches the HTTPS port with --pki, the environment, and refuses another CA', async () => {
    const server = `127.0.0.1:${follower.http}`;
    // The environment of the test run names the CA (CONCORD_TLS_CA): status from the leader.
    const fromEnv = await runCli(['cluster', 'status', '--server', server]);
    expect(fromEnv.code, fromEnv.out).toBe(0);
    expect(fromEnv.out).toContain(`leader ${leader.id}`);
    const noEnv = { CONCORD_TLS_CA: '', CONCORD_TLS_CERT: '', CONCORD_TLS_KEY: '' };
    const withPki = await runCli(
      ['tx', 'list', '--server', server, '--pki', pkiDir, '--token', TOKEN, '--json'],
      { env: noEnv },
    );
    expect(withPki.code, withPki.out).toBe(0);
    expect(JSON.parse(withPki.out.slice(withPki.out.indexOf('{')))).toHaveProperty('sessions');
    const wrongCa = await runCli(['cluster', 'status', '--server', server, '--pki', foreignDir], {
      env: noEnv,
    });
    expect(wrongCa.code, wrongCa.out).toBe(2);
    expect(wrongCa.out).toContain('not one of a Concord node of the trusted CA');
    const plain = await runCli(['cluster', 'status', '--server', server, '--insecure']);
    expect(plain.code, plain.out).toBe(2);
    expect(plain.out).toContain('speaks HTTPS');
  }, 60_000);

  it('the console: a Secure session cookie, and a follower asks the leader over HTTPS', async () => {
    const signin = await nodeFetch(
      httpsUrl(follower, '/console/api/signin'),
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: TOKEN, name: 'https-test' }),
      },
      trusted,
    );
    expect(signin.status).toBe(200);
    const cookie = signin.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^concord_console=[^;]+;/);
    expect(cookie.split('; ')).toEqual(expect.arrayContaining(['HttpOnly', 'Secure']));
    const session = cookie.slice(0, cookie.indexOf(';'));
    // Transaction reads are the leader's: the follower forwards them (HTTPS, the CA).
    const list = await nodeFetch(
      httpsUrl(follower, '/console/api/transactions'),
      { headers: { cookie: session } },
      trusted,
    );
    expect(list.status, await list.clone().text()).toBe(200);
    expect(list.headers.get('x-concord-answered-by')).toBe(leader.id);
    // The cluster view asks every member's /health (HTTPS): all reachable.
    const view = await nodeFetch(
      httpsUrl(follower, '/console/api/cluster'),
      { headers: { cookie: session } },
      trusted,
    );
    const members = ((await view.json()) as { members: Array<{ reachable: boolean }> }).members;
    expect(members.map((m) => m.reachable)).toEqual([true, true, true]);
  });
});

describe('a node in insecure mode', () => {
  let root: string;
  let node: NodePorts;
  let proc: ChildProcess | null = null;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'concord-https-insecure-'));
    [node] = (await allocateNodes(1)) as [NodePorts];
    const file = join(root, 'node.yaml');
    writeConfig(
      file,
      raftNodeConfig(node, {
        peers: [node],
        dataRoot: join(root, 'data'),
        tickMs: 50,
        authToken: TOKEN,
        insecure: true,
      }),
    );
    const fd = openSync(join(root, 'node.log'), 'a');
    proc = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'start', '--config', file],
      { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    await waitFor(
      'the insecure node to lead',
      async () => {
        const r = await fetch(`http://127.0.0.1:${node.http}/health`).catch(() => null);
        return r?.status === 200 && ((await r.json()) as { role: string }).role === 'leader'
          ? true
          : undefined;
      },
      60_000,
    );
  }, 90_000);

  afterAll(() => {
    proc?.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps plain HTTP, a cookie without Secure, and tells an HTTPS client so', async () => {
    const md = await fetch(`http://127.0.0.1:${node.http}/metadata/v1/cluster?group=default`);
    expect(md.status).toBe(200);
    const signin = await fetch(`http://127.0.0.1:${node.http}/console/api/signin`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: TOKEN }),
    });
    expect(signin.status).toBe(200);
    expect(signin.headers.get('set-cookie')).not.toContain('Secure');
    const err = await fetchClusterMetadata(
      { host: '127.0.0.1', port: node.http },
      { tls: trusted },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TlsMismatchError);
    expect((err as Error).message).toContain('does not speak TLS');
  });
});
