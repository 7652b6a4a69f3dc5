#!/usr/bin/env node
/**
 * `npm run build`: compiles the two packages of this repo with tsc, each from its
 * tsconfig.build.json (one set of options: the root's tsconfig.build.json).
 *
 *   node scripts/build.mjs [server|client]...     (default: both)
 *
 * server: the `concord` package at the repo root (server and CLI): src/cli/main.ts and what
 *         it imports → dist/. It ships proto/ from the repo root.
 * client: the `@concord/client` package (the SDK): src/index.ts and what it imports →
 *         packages/client/dist/, plus the one .proto file the SDK loads at run time
 *         (proto/tc.proto → packages/client/proto/, where the compiled
 *         dist/shared/tc-wire.js looks for it: two folders up).
 *
 * Each output folder is emptied first, so a removed source leaves no stale file behind.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');

const PACKAGES = {
  // The console's own files (HTML, JS, CSS) go beside its compiled module.
  server: {
    dir: ROOT,
    assets: [],
    dirs: [['src/server/console/static', 'dist/server/console/static']],
  },
  client: { dir: join(ROOT, 'packages/client'), assets: ['proto/tc.proto'] },
};

function build(name) {
  const { dir, assets, dirs = [] } = PACKAGES[name];
  const started = Date.now();
  rmSync(join(dir, 'dist'), { recursive: true, force: true });
  const tsc = spawnSync(process.execPath, [TSC, '-p', join(dir, 'tsconfig.build.json')], {
    stdio: 'inherit',
  });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
  for (const asset of assets) {
    mkdirSync(dirname(join(dir, asset)), { recursive: true });
    copyFileSync(join(ROOT, asset), join(dir, asset));
  }
  for (const [from, to] of dirs) cpSync(join(ROOT, from), join(dir, to), { recursive: true });
  process.stdout.write(`built ${name} (${Date.now() - started} ms)\n`);
}

const names = process.argv.slice(2);
for (const name of names.length > 0 ? names : ['client', 'server']) {
  if (!(name in PACKAGES)) {
    process.stderr.write(`unknown package ${name}: server or client\n`);
    process.exit(2);
  }
  build(name);
}
