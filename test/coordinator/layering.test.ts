/**
 * The coordinator is the domain layer: it imports only src/shared and npm packages, never
 * Raft, a store, the server or the client (DESIGN.md, "Layers"). This test keeps it so.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const COORDINATOR = join(ROOT, 'src/coordinator');
const ALLOWED_PACKAGES = new Set(['msgpackr', 'pino']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [join(dir, entry.name)]
        : [],
  );
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [
    ...text.matchAll(
      /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
    ),
  ].map((m) => (m[1] ?? m[2])!);
}

describe('coordinator layering', () => {
  it('imports only itself, src/shared, node builtins and its npm packages', () => {
    const offences: string[] = [];
    const files = sourceFiles(COORDINATOR);
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      for (const spec of importsOf(file)) {
        if (spec.startsWith('.')) {
          const target = relative(ROOT, resolve(file, '..', spec));
          if (!target.startsWith('src/coordinator/') && !target.startsWith('src/shared/'))
            offences.push(`${relative(ROOT, file)} → ${spec}`);
        } else if (!spec.startsWith('node:') && !ALLOWED_PACKAGES.has(spec)) {
          offences.push(`${relative(ROOT, file)} → package ${spec}`);
        }
      }
    }
    expect(offences).toEqual([]);
  });
});
