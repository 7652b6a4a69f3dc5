/**
 * The layering of DESIGN.md, enforced: dependencies point down only, the coordinator and
 * the Raft never import each other, the Raft core touches no clock, disk, network or
 * global randomness, and the client SDK shares only plain types with the server.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

function filesUnder(dir: string): string[] {
  const abs = join(root, dir);
  let entries: string[];
  try {
    entries = readdirSync(abs);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const p = join(abs, name);
    if (statSync(p).isDirectory()) return filesUnder(relative(root, p));
    return p.endsWith('.ts') ? [relative(root, p)] : [];
  });
}

/** Every import specifier of a file, resolved to a repo path when relative. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const specs = [
    ...text.matchAll(
      /(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
    ),
  ].map((m) => m[1] ?? m[2] ?? '');
  return specs.map((s) =>
    s.startsWith('.') ? relative(root, resolve(dirname(join(root, file)), s)) : s,
  );
}

function violations(dir: string, forbidden: (spec: string) => boolean): string[] {
  return filesUnder(dir).flatMap((f) =>
    importsOf(f)
      .filter(forbidden)
      .map((s) => `${f} imports ${s}`),
  );
}

const under = (prefix: string) => (spec: string) =>
  spec === prefix || spec.startsWith(`${prefix}/`);

describe('layering', () => {
  it('the raft layer imports nothing of the coordinator, stores, server or client', () => {
    const bad = ['src/coordinator', 'src/store', 'src/server', 'src/client', 'src/cli'].map(under);
    expect(violations('src/raft', (s) => bad.some((b) => b(s)))).toEqual([]);
  });

  it('the coordinator imports no Raft, store, server or client', () => {
    const bad = ['src/raft', 'src/store', 'src/server', 'src/client', 'src/cli'].map(under);
    expect(violations('src/coordinator', (s) => bad.some((b) => b(s)))).toEqual([]);
  });

  it('stores import neither the server nor the client', () => {
    const bad = ['src/server', 'src/client', 'src/cli'].map(under);
    expect(violations('src/store', (s) => bad.some((b) => b(s)))).toEqual([]);
  });

  it('the client SDK shares only shared types and protos with the server', () => {
    const bad = ['src/raft', 'src/coordinator', 'src/store', 'src/server', 'src/cli'].map(under);
    expect(violations('src/client', (s) => bad.some((b) => b(s)))).toEqual([]);
  });

  it('the Raft core is pure: no clock, timers, disk, network or global randomness', () => {
    const impure =
      /\b(Date\.now|new Date\(|setTimeout|setInterval|setImmediate|performance\.now|Math\.random|process\.)/;
    const nodeModules = (s: string) =>
      s.startsWith('node:') || ['fs', 'net', 'http', 'level', '@grpc/grpc-js'].includes(s);
    const files = filesUnder('src/raft/core');
    expect(files.length).toBeGreaterThan(0);
    const found = files.flatMap((f) => {
      const text = readFileSync(join(root, f), 'utf8');
      const hits = text
        .split('\n')
        .flatMap((line, i) =>
          impure.test(line) && !line.trim().startsWith('//') && !line.trim().startsWith('*')
            ? [`${f}:${i + 1}: ${line.trim()}`]
            : [],
        );
      return [
        ...hits,
        ...importsOf(f)
          .filter(nodeModules)
          .map((s) => `${f} imports ${s}`),
      ];
    });
    expect(found).toEqual([]);
  });

  it('library code logs through pino, not console.log', () => {
    const files = [
      'src/raft',
      'src/coordinator',
      'src/store',
      'src/server',
      'src/client',
      'src/shared',
    ].flatMap(filesUnder);
    const hits = files.filter((f) =>
      /console\.(log|info|warn|error)\(/.test(readFileSync(join(root, f), 'utf8')),
    );
    expect(hits).toEqual([]);
  });
});
