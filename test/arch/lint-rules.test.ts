/**
 * The rules of eslint.config.js that keep the layering of DESIGN.md fire: each fixture below
 * breaks one (an import that points up, a clock read in a pure core, console in library
 * code, a function over 70 lines, a floating promise) and ESLint, through its API with the
 * project's own config, must report exactly that rule; a clean file of the same folder passes.
 * (These rules replace the hand-written layering tests: `npm run lint`, part of `npm test`,
 * applies them to the whole tree.)
 */
import { ESLint } from 'eslint';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

/** The project's config without type information (fixtures given as text are in no tsconfig). */
const untyped = new ESLint({
  cwd: root,
  overrideConfig: { languageOptions: { parserOptions: { projectService: false } } },
  ruleFilter: ({ ruleId }) => !ruleId.startsWith('@typescript-eslint/'),
});

/** The rule ids ESLint reports for `code` as if it were the file `path`. */
async function rulesFired(path: string, code: string): Promise<string[]> {
  const [result] = await untyped.lintText(code, { filePath: resolve(root, path) });
  expect(result, `${path} was linted`).toBeDefined();
  return result!.messages.map((m) => m.ruleId ?? `fatal: ${m.message}`);
}

const CASES: Array<{ name: string; path: string; code: string; rule: string }> = [
  {
    name: 'the Raft layer imports no coordinator',
    path: 'src/raft/node/fixture.ts',
    code: "import { Coordinator } from '../../coordinator/index.ts';\nexport { Coordinator };\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the Raft layer re-exports no store',
    path: 'src/raft/fixture.ts',
    code: "export { MemoryStore } from '../store/memory/index.ts';\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the coordinator imports no Raft',
    path: 'src/coordinator/fixture.ts',
    code: "import type { Role } from '../raft/core/types.ts';\nexport type R = Role;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the coordinator imports no server',
    path: 'src/coordinator/fixture.ts',
    code: "import { wallClock } from '../server/wall-clock.ts';\nexport const c = wallClock;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the coordinator does no I/O',
    path: 'src/coordinator/fixture.ts',
    code: "import { readFileSync } from 'node:fs';\nexport const r = readFileSync;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the coordinator uses only its own packages',
    path: 'src/coordinator/fixture.ts',
    code: "import pg from 'pg';\nexport const p = pg;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the coordinator reads no clock (Date.now)',
    path: 'src/coordinator/fixture.ts',
    code: 'export const now = (): number => Date.now();\n',
    rule: 'no-restricted-properties',
  },
  {
    name: 'the coordinator reads no clock (new Date())',
    path: 'src/coordinator/fixture.ts',
    code: 'export const now = (): Date => new Date();\n',
    rule: 'no-restricted-syntax',
  },
  {
    name: 'the coordinator starts no timer',
    path: 'src/coordinator/fixture.ts',
    code: 'export const later = (fn: () => void): unknown => setTimeout(fn, 1);\n',
    rule: 'no-restricted-globals',
  },
  {
    name: 'the coordinator draws no global randomness',
    path: 'src/coordinator/fixture.ts',
    code: 'export const pick = (): number => Math.random();\n',
    rule: 'no-restricted-properties',
  },
  {
    name: 'the coordinator reaches no process',
    path: 'src/coordinator/fixture.ts',
    code: 'export const env = (): unknown => process.env;\n',
    rule: 'no-restricted-globals',
  },
  {
    name: 'the Raft core counts ticks, not time',
    path: 'src/raft/core/fixture.ts',
    code: 'export const t = (): number => Date.now();\n',
    rule: 'no-restricted-properties',
  },
  {
    name: 'the Raft core starts no timer',
    path: 'src/raft/core/fixture.ts',
    code: 'export const soon = (fn: () => void): unknown => setImmediate(fn);\n',
    rule: 'no-restricted-globals',
  },
  {
    name: 'the Raft core touches no disk',
    path: 'src/raft/core/fixture.ts',
    code: "import { Level } from 'level';\nexport const l = Level;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'stores import no server',
    path: 'src/store/db/fixture.ts',
    code: "import { serveTc } from '../../server/tc/index.ts';\nexport const s = serveTc;\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'the client SDK imports no coordinator',
    path: 'src/client/sdk/fixture.ts',
    code: "import { Coordinator } from '../../coordinator/index.ts';\nexport { Coordinator };\n",
    rule: 'no-restricted-imports',
  },
  {
    name: 'library code logs through pino, not console',
    path: 'src/server/fixture.ts',
    code: "export function f(): void {\n  console.log('x');\n}\n",
    rule: 'no-console',
  },
  {
    name: 'a function is at most 70 lines (blank lines and comments aside)',
    path: 'src/coordinator/fixture.ts',
    code: `export function long(): number {\n  let n = 0;\n${'  n += 1;\n'.repeat(69)}  return n;\n}\n`,
    rule: 'max-lines-per-function',
  },
  {
    name: 'a line is at most 100 columns',
    path: 'src/coordinator/fixture.ts',
    code: `// ${'x'.repeat(100)}\nexport const a = 1;\n`,
    rule: 'max-len',
  },
];

describe('lint rules (eslint.config.js)', () => {
  it.each(CASES)('$name: $rule', async ({ path, code, rule }) => {
    expect(await rulesFired(path, code)).toEqual([rule]);
  });

  it('allowed imports pass: the server assembles every layer, the coordinator uses src/shared', async () => {
    const server = [
      "import { Coordinator } from '../coordinator/index.ts';",
      "import { createRaftSessions } from '../store/raft/index.ts';",
      "import { RaftNode } from '../raft/node/raft-node.ts';",
      'export { Coordinator, createRaftSessions, RaftNode };',
      '',
    ].join('\n');
    expect(await rulesFired('src/server/fixture.ts', server)).toEqual([]);
    const coordinator = [
      "import { requireXid } from '../shared/ids.ts';",
      "import { pack } from 'msgpackr';",
      "import { CoordinatorStateMachine } from './state-machine.ts';",
      '// formatting a time given as input is no clock read',
      'export const at = (ms: number): string => new Date(ms).toISOString();',
      'export { requireXid, pack, CoordinatorStateMachine };',
      '',
    ].join('\n');
    expect(await rulesFired('src/coordinator/fixture.ts', coordinator)).toEqual([]);
  });

  it('tests may have long functions (describe callbacks), library code may not', async () => {
    const long = `export function long(): number {\n  let n = 0;\n${'  n += 1;\n'.repeat(80)}  return n;\n}\n`;
    expect(await rulesFired('test/raft/fixture.test.ts', long)).toEqual([]);
    expect(await rulesFired('src/coordinator/fixture.ts', long)).toEqual([
      'max-lines-per-function',
    ]);
  });

  it('a promise nobody awaits is an error, in tests too (type-aware)', async () => {
    const typed = new ESLint({ cwd: root, ignore: false });
    const [result] = await typed.lintFiles(['test/arch/fixtures/floating-promise.ts']);
    expect(result!.messages.map((m) => m.ruleId)).toEqual([
      '@typescript-eslint/no-floating-promises',
    ]);
  }, 60_000);
});
