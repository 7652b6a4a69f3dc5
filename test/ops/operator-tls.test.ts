/**
 * Where `concord tx retry|stop|resume|resolve` finds its operator credential
 * (src/cli/operator-tls.ts): flags first, then the environment, then npm start's ./data/pki.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliHttpTls, operatorTls } from '../../src/cli/operator-tls.ts';
import { BadRequestError } from '../../src/shared/errors.ts';

/** A pki dir whose three admin files hold `<tag>:<file>`. */
function pkiDir(parent: string, name: string, tag: string): string {
  const dir = join(parent, name);
  mkdirSync(dir, { recursive: true });
  for (const f of ['ca.pem', 'admin.pem', 'admin-key.pem'])
    writeFileSync(join(dir, f), `${tag}:${f}`);
  return dir;
}

const text = (tls: ReturnType<typeof operatorTls>) =>
  tls === null ? null : [tls.ca, tls.cert, tls.key].map(String);

describe('the operator credential of concord tx', () => {
  const root = mkdtempSync(join(tmpdir(), 'concord-operator-tls-'));
  const flagDir = pkiDir(root, 'flag', 'flag');
  const envDir = pkiDir(root, 'env', 'env');
  const cwd = join(root, 'cwd');
  pkiDir(cwd, 'data/pki', 'dev');
  const own = pkiDir(root, 'own', 'own');
  const ownEnv = {
    CONCORD_TLS_CA: join(own, 'ca.pem'),
    CONCORD_TLS_CERT: join(own, 'admin.pem'),
    CONCORD_TLS_KEY: join(own, 'admin-key.pem'),
  };

  it('--insecure is plaintext whatever else is set', () => {
    expect(operatorTls({ insecure: true, pki: flagDir }, ownEnv, cwd)).toBeNull();
  });

  it('--pki wins over the environment', () => {
    expect(text(operatorTls({ pki: flagDir }, ownEnv, cwd))).toEqual([
      'flag:ca.pem',
      'flag:admin.pem',
      'flag:admin-key.pem',
    ]);
  });

  it('CONCORD_TLS_CA/CERT/KEY, then CONCORD_TLS_DIR (its admin credential), then ./data/pki', () => {
    expect(text(operatorTls({}, { ...ownEnv, CONCORD_TLS_DIR: envDir }, cwd))?.[1]).toBe(
      'own:admin.pem',
    );
    expect(text(operatorTls({}, { CONCORD_TLS_DIR: envDir }, cwd))?.[1]).toBe('env:admin.pem');
    expect(text(operatorTls({}, {}, cwd))?.[1]).toBe('dev:admin.pem');
  });

  it('CONCORD_INSECURE=1 is plaintext; no credential anywhere is plaintext too', () => {
    expect(operatorTls({}, { CONCORD_INSECURE: '1' }, cwd)).toBeNull();
    expect(operatorTls({}, {}, root)).toBeNull();
  });

  it('a pki dir without the admin credential is a BadRequestError naming the file', () => {
    const empty = join(root, 'empty');
    mkdirSync(empty);
    expect(() => operatorTls({ pki: empty }, {}, cwd)).toThrow(BadRequestError);
    expect(() => operatorTls({ pki: empty }, {}, cwd)).toThrow(/empty\/ca\.pem is missing/);
  });
});

describe('the CA the CLI trusts on a node HTTPS port', () => {
  const root = mkdtempSync(join(tmpdir(), 'concord-cli-https-'));
  const flagDir = pkiDir(root, 'flag', 'flag');
  const envDir = pkiDir(root, 'env', 'env');
  const cwd = join(root, 'cwd');
  pkiDir(cwd, 'data/pki', 'dev');
  const ca = (tls: ReturnType<typeof cliHttpTls>) => (tls === null ? null : String(tls.ca));

  it('--insecure or CONCORD_INSECURE=1: plain HTTP, whatever else is set', () => {
    expect(cliHttpTls({ insecure: true, pki: flagDir }, {}, cwd)).toBeNull();
    expect(cliHttpTls({ pki: flagDir }, { CONCORD_INSECURE: '1' }, cwd)).toBeNull();
  });

  it('--pki, then CONCORD_TLS_CA, then CONCORD_TLS_DIR, then ./data/pki, else plain HTTP', () => {
    const env = { CONCORD_TLS_CA: join(envDir, 'ca.pem') };
    expect(ca(cliHttpTls({ pki: flagDir }, env, cwd))).toBe('flag:ca.pem');
    expect(ca(cliHttpTls({}, env, cwd))).toBe('env:ca.pem');
    expect(ca(cliHttpTls({}, { CONCORD_TLS_DIR: flagDir }, cwd))).toBe('flag:ca.pem');
    expect(ca(cliHttpTls({}, {}, cwd))).toBe('dev:ca.pem');
    expect(cliHttpTls({}, {}, root)).toBeNull();
  });

  it('a --pki dir without ca.pem is a BadRequestError naming the file', () => {
    expect(() => cliHttpTls({ pki: join(root, 'nowhere') }, {}, cwd)).toThrow(BadRequestError);
    expect(() => cliHttpTls({ pki: join(root, 'nowhere') }, {}, cwd)).toThrow(/nowhere\/ca\.pem/);
  });
});
