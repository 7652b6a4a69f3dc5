/**
 * The packages as a user gets them: `npm pack` (which builds them through `prepare`), the
 * tarballs installed into two fresh projects outside the repo — an application that
 * installs only the SDK (`@concord/client`), and an operator's that installs the server
 * (`concord`) — then, with no loader and nothing from the repo on the module path:
 *
 *  - the SDK's dependency tree holds none of the server's dependencies;
 *  - `npx concord --help` runs the compiled CLI;
 *  - `concord cluster up` from the installed package starts a real three-node cluster on
 *    free ports, and plain `node` scripts (ESM, and CJS through require(esm)) begin and
 *    commit global transactions against it, one with a TCC branch confirmed over the RM
 *    channel;
 *  - a TypeScript file type-checks against the shipped .d.ts (strict, no skipLibCheck),
 *    and the main entry's declarations reach for no database driver's types.
 *
 * Dependencies come from the npm cache (the repo's own `npm ci` filled it) or the registry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { stopClusterUp, testSecurity } from '../support/cluster.ts';
import { freePorts, REPO_ROOT, waitFor } from '../ops/helpers.ts';

/** Packing (two tsc builds) and two installs, on a loaded two-core machine, ms. */
const SETUP_TIMEOUT_MS = 600_000;
/** One npm or tsc command, ms. */
const COMMAND_TIMEOUT_MS = 300_000;
const CLUSTER_START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;
/** Raft tick of the test cluster, ms: elections in ~0.5–1 s. */
const TICK_MS = 50;

/** What a package for users must never contain. */
const NOT_SHIPPED = /^package\/(src|test|bench|chaos|examples|docs|scripts|node_modules)\//;
/** The server's dependencies (and the SQL drivers): none may be in the SDK's install. */
const SERVER_ONLY = [
  'level',
  'classic-level',
  'prom-client',
  'commander',
  'yaml',
  'msgpackr',
  'pg',
  'mysql2',
  'tsx',
  'concord',
];

interface Ran {
  code: number | null;
  /** stdout and stderr, interleaved. */
  out: string;
  stdout: string;
}

/** The environment of a child npm: none of the `npm test` run's own npm_* settings. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, NO_COLOR: '1', npm_config_update_notifier: 'false', ...extra };
}

function run(cmd: string, args: string[], cwd: string, env = cleanEnv()): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, stdout });
    });
  });
}

async function ok(cmd: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv) {
  const r = await run(cmd, args, cwd, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.out}`);
  return r.stdout;
}

/** `npm pack --json` (runs `prepare`, which builds); the tarball's path and file list. */
async function pack(dest: string, workspace?: string) {
  const args = ['pack', '--json', '--pack-destination', dest];
  if (workspace) args.push('--workspace', workspace);
  // stdout: the build's own lines (prepare), then the JSON array.
  const out = await ok('npm', args, REPO_ROOT);
  const json = JSON.parse(out.slice(out.search(/^\[/m))) as {
    filename: string;
    files: { path: string }[];
  }[];
  return { file: join(dest, json[0]!.filename), files: json[0]!.files.map((f) => f.path) };
}

/** The exact version the repo's lockfile installed, so the user project hits the cache. */
function repoVersion(name: string): string {
  const pkg = JSON.parse(
    readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8'),
  );
  return `${name}@${pkg.version}`;
}

/**
 * `import … from 'x'`, `export … from 'x'`, `import 'x'`, `import('x')` of a package (not `./`).
 */
const IMPORT_SPECIFIER =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*'([^'.][^']*)'|(?:^|\n)\s*import\s*'([^'.][^']*)'|import\('([^'.][^']*)'\)/g;

/** Package names imported at run time by the .js files under `dir` (not node: builtins). */
function bareImports(dir: string): Set<string> {
  const names = new Set<string>();
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) =>
    f.endsWith('.js'),
  );
  for (const f of files) {
    const text = readFileSync(join(dir, f), 'utf8');
    for (const m of text.matchAll(IMPORT_SPECIFIER)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      if (spec.startsWith('node:')) continue;
      const parts = spec.split('/');
      names.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!);
    }
  }
  return names;
}

function newProject(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  const pkg = { name: 'user-project', version: '1.0.0', private: true, type: 'module' };
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

function npmInstall(dir: string, specs: string[]) {
  return ok(
    'npm',
    ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...specs],
    dir,
  );
}

/** Every package installed in the tree (`npm ls --all --json`), unmet optional peers left out. */
async function installedNames(dir: string): Promise<Set<string>> {
  const tree = JSON.parse(await ok('npm', ['ls', '--all', '--json'], dir)) as {
    dependencies?: Record<string, unknown>;
  };
  const names = new Set<string>();
  const walk = (deps: Record<string, any> | undefined) => {
    for (const [name, d] of Object.entries(deps ?? {})) {
      if (d?.missing === true || typeof d?.version !== 'string') continue; // an unmet optional peer
      names.add(name);
      walk(d?.dependencies);
    }
  };
  walk(tree.dependencies);
  return names;
}

/** The application: a TM and a TCC action, as a user writes them in plain ESM. */
const ESM_APP = `
import { createClient, isValidXid } from '@concord/client';
import { createPgFence } from '@concord/client/pg';
import { createMysqlFence } from '@concord/client/mysql';
if (typeof createPgFence !== 'function' || typeof createMysqlFence !== 'function') throw new Error('fences');

const concord = createClient({ servers: process.env.CONCORD_SERVERS, applicationId: 'pkg-esm' });
const tx = await concord.begin({ name: 'pkg-esm-begin', timeoutMs: 30000 });
if (!isValidXid(tx.xid)) throw new Error('not an xid: ' + tx.xid);
const committed = await tx.commit();

let confirmed;
const confirmedOnce = new Promise((resolve) => (confirmed = resolve));
const reserve = concord.tcc.register({
  name: 'pkg.reserve',
  try: async ({ n }) => n * 2,
  confirm: async (args) => confirmed(args),
  cancel: async () => { throw new Error('cancel of a committed transaction'); },
});
const reserved = await concord.transaction({ name: 'pkg-esm-tcc' }, () => reserve({ n: 21 }));
const timeout = setTimeout(() => { throw new Error('no confirm within 30 s'); }, 30000);
const confirmedArg = await confirmedOnce;
clearTimeout(timeout);
await concord.close();
console.log(JSON.stringify({ xid: tx.xid, committed, reserved, confirmedArg }));
`;

const CJS_APP = `
const { createClient } = require('@concord/client');

(async () => {
  const concord = createClient({ servers: process.env.CONCORD_SERVERS, applicationId: 'pkg-cjs' });
  const tx = await concord.begin({ name: 'pkg-cjs-begin' });
  const committed = await tx.commit();
  await concord.close();
  console.log(JSON.stringify({ xid: tx.xid, committed }));
})().catch((err) => { console.error(err); process.exit(1); });
`;

/** Type-checked against the shipped .d.ts; the @ts-expect-error lines fail if types were any. */
const TS_APP = `
import { createClient, type ConcordClient, type GlobalTransaction, TransactionRolledBackError } from '@concord/client';
import { createPgFence, type PgFenceTx } from '@concord/client/pg';
import pg from 'pg';

const concord: ConcordClient = createClient({ servers: ['127.0.0.1:7091'], applicationId: 'ts-app' });
const fence = createPgFence(new pg.Pool());
const debit = concord.tcc.register<{ userId: string; amount: number }, number, PgFenceTx>({
  name: 'account.debit',
  fence,
  try: async ({ amount }, { tx }) => (await tx.query('SELECT $1::int AS n', [amount])).rowCount ?? 0,
  confirm: async () => undefined,
  cancel: async () => undefined,
});
export async function pay(): Promise<number> {
  const tx: GlobalTransaction = await concord.begin({ name: 'pay' });
  try {
    await tx.commit();
  } catch (err) {
    if (err instanceof TransactionRolledBackError && err.status === 'Rollbacked') return 0;
  }
  // @ts-expect-error: servers must be a string or a string array
  createClient({ servers: 42, applicationId: 'x' });
  // @ts-expect-error: the action takes its declared arguments
  await debit({ userId: 'u1' });
  return concord.transaction({ name: 'pay' }, () => debit({ userId: 'u1', amount: 5 }));
}
`;

/** Imports only the main entry: its declarations must not need pg's or mysql2's types. */
const TS_CORE = `
import { createClient, xidFetch } from '@concord/client';
export const c = createClient({ servers: '127.0.0.1:7091', applicationId: 'core' });
export const f: typeof fetch = xidFetch;
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    skipLibCheck: false,
    noEmit: true,
    types: ['node'],
  },
};

let root: string;
let app: string;
let ops: string;
let serverPack: { file: string; files: string[] };
let clientPack: { file: string; files: string[] };
let cluster: { up: ChildProcess; out: () => string; servers: string[]; httpPorts: number[] };

async function startClusterFromPackage(): Promise<typeof cluster> {
  const ports = await freePorts(9);
  const nodes = [0, 1, 2].map((i) => ({
    nodeId: `node${i + 1}`,
    host: '127.0.0.1',
    httpPort: ports[i * 3]!,
    tcPort: ports[i * 3 + 1]!,
    raftPort: ports[i * 3 + 2]!,
  }));
  mkdirSync(join(ops, 'configs'));
  for (const n of nodes) {
    const config = {
      node: { id: n.nodeId },
      server: { host: n.host, httpPort: n.httpPort, tcPort: n.tcPort, raftPort: n.raftPort },
      raft: { dataDir: join(ops, 'data', n.nodeId), tickMs: TICK_MS, peers: nodes },
      log: { level: 'warn' },
      // TLS with the run's pki: the apps below present its operator credential (CONCORD_TLS_*).
      security: testSecurity(),
    };
    writeFileSync(join(ops, 'configs', `${n.nodeId}.yaml`), stringify(config));
  }
  // The bin npm linked (what `npx concord` runs), with plain node and no loader.
  const up = spawn(join(ops, 'node_modules/.bin/concord'), ['cluster', 'up', '--dir', 'configs'], {
    cwd: ops,
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  up.stdout.on('data', (d: Buffer) => (out += d.toString()));
  up.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const started = { up, out: () => out, servers: [] as string[], httpPorts: [] as number[] };
  started.httpPorts = nodes.map((n) => n.httpPort);
  started.servers = nodes.map((n) => `127.0.0.1:${n.httpPort}`);
  cluster = started;
  await waitFor(
    'the packaged cluster ("Cluster is up")',
    () =>
      out.includes('Cluster is up')
        ? true
        : up.exitCode !== null
          ? Promise.reject(new Error(out))
          : undefined,
    CLUSTER_START_TIMEOUT_MS,
    100,
  );
  return started;
}

async function stopCluster(): Promise<void> {
  if (cluster) await stopClusterUp(cluster.up, cluster.httpPorts, STOP_GRACE_MS);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'concord-package-'));
  serverPack = await pack(root);
  clientPack = await pack(root, 'packages/client');
  app = newProject(join(root, 'app'), {
    'esm.mjs': ESM_APP,
    'cjs.cjs': CJS_APP,
    'app.ts': TS_APP,
    'core.ts': TS_CORE,
    'tsconfig.json': JSON.stringify({ ...TSCONFIG, files: ['app.ts', 'core.ts'] }),
    'tsconfig.core.json': JSON.stringify({ ...TSCONFIG, files: ['core.ts'] }),
  });
  // The SDK, and what a TypeScript user of its PostgreSQL fence adds (the optional peer).
  await npmInstall(app, [
    clientPack.file,
    repoVersion('pg'),
    repoVersion('@types/pg'),
    repoVersion('@types/node'),
  ]);
  ops = newProject(join(root, 'ops'), {});
  await npmInstall(ops, [serverPack.file]);
  await startClusterFromPackage();
}, SETUP_TIMEOUT_MS);

afterAll(async () => {
  await stopCluster();
  if (root) rmSync(root, { recursive: true, force: true });
}, 60_000);

describe('the packages as a user installs them', () => {
  it('ship compiled JS, .d.ts and source maps, and none of the repo’s sources, tests or docs', () => {
    for (const { files } of [serverPack, clientPack]) {
      expect(files.filter((f) => NOT_SHIPPED.test(`package/${f}`))).toEqual([]);
      expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    }
    expect(clientPack.files).toEqual(
      expect.arrayContaining([
        'dist/index.js',
        'dist/index.d.ts',
        'dist/index.js.map',
        'dist/pg.js',
        'dist/mysql.js',
        'proto/tc.proto',
      ]),
    );
    // The SDK holds its entry points, src/client and src/shared: none of the server's layers.
    const outside = clientPack.files.filter(
      (f) =>
        f.startsWith('dist/') &&
        !/^dist\/(client|shared)\//.test(f) &&
        !/^dist\/(index|pg|mysql)\.(js|js\.map|d\.ts)$/.test(f),
    );
    expect(outside).toEqual([]);
    expect(serverPack.files).toEqual(
      expect.arrayContaining(['bin/concord.js', 'dist/cli/main.js', 'proto/raft.proto']),
    );
  });

  it('every package the compiled code imports is a dependency (or a peer) of its package', () => {
    for (const dir of [
      join(app, 'node_modules/@concord/client'),
      join(ops, 'node_modules/concord'),
    ]) {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      const declared = new Set([
        ...Object.keys(pkg.dependencies ?? {}),
        ...Object.keys(pkg.peerDependencies ?? {}),
      ]);
      const imported = bareImports(join(dir, 'dist'));
      expect(imported.size).toBeGreaterThan(0);
      expect(
        [...imported].filter((name) => !declared.has(name)),
        pkg.name,
      ).toEqual([]);
    }
  });

  it(
    'the SDK installs none of the server’s dependencies, nor the SQL drivers',
    async () => {
      const sdkOnly = newProject(join(root, 'sdk-only'), {});
      await npmInstall(sdkOnly, [clientPack.file]);
      const names = await installedNames(sdkOnly);
      expect(names.has('@concord/client')).toBe(true);
      expect(SERVER_ONLY.filter((n) => names.has(n))).toEqual([]);
    },
    COMMAND_TIMEOUT_MS,
  );

  it(
    'npx concord --help runs the compiled CLI, with no TypeScript loader installed',
    async () => {
      const out = await ok('npx', ['--no-install', 'concord', '--help'], ops);
      expect(out).toContain('Usage: concord');
      expect(out).toContain('cluster');
      const names = await installedNames(ops);
      expect(names.has('tsx')).toBe(false);
      expect(names.has('typescript')).toBe(false);
    },
    COMMAND_TIMEOUT_MS,
  );

  it(
    'plain node ESM: begin and commit, and a TCC branch confirmed, against the cluster',
    async () => {
      const env = cleanEnv({ CONCORD_SERVERS: cluster.servers.join(',') });
      const out = await ok(process.execPath, ['esm.mjs'], app, env);
      const result = JSON.parse(out.trim().split('\n').pop()!);
      expect(result.committed).toBe('Committed');
      expect(result.reserved).toBe(42);
      expect(result.confirmedArg).toEqual({ n: 21 });
    },
    COMMAND_TIMEOUT_MS,
  );

  it(
    'plain node CJS (require of the ESM package): begin and commit',
    async () => {
      const env = cleanEnv({ CONCORD_SERVERS: cluster.servers.join(',') });
      const out = await ok(process.execPath, ['cjs.cjs'], app, env);
      expect(out).not.toContain('ExperimentalWarning');
      expect(JSON.parse(out.trim().split('\n').pop()!).committed).toBe('Committed');
    },
    COMMAND_TIMEOUT_MS,
  );

  it(
    'a TypeScript file type-checks against the shipped declarations',
    async () => {
      const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
      await ok(process.execPath, [tsc, '-p', 'tsconfig.json'], app);
      // The main entry alone: no pg or mysql2 declaration file enters the program.
      const files = await ok(
        process.execPath,
        [tsc, '-p', 'tsconfig.core.json', '--listFilesOnly'],
        app,
      );
      expect(files).toContain('@concord/client/dist/index.d.ts');
      expect(
        files.split('\n').filter((f) => /node_modules\/(pg|@types\/pg|mysql2)\//.test(f)),
      ).toEqual([]);
    },
    COMMAND_TIMEOUT_MS,
  );
});
