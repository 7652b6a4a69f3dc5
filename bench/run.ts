/**
 * Benchmark dispatcher: `npm run bench -- <name> [args...]` (= `tsx bench/run.ts <name>`)
 * runs bench/<name>.ts, whose exported `main(args)` does the work.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const BENCH_DIR = import.meta.dirname;

function available(): string[] {
  return readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts')
    .map((f) => f.slice(0, -3))
    .sort();
}

const [name, ...args] = process.argv.slice(2);
if (!name || !/^[a-z0-9][a-z0-9-]*$/.test(name) || !existsSync(join(BENCH_DIR, `${name}.ts`))) {
  process.stderr.write(
    `usage: npm run bench -- <name> [args]\navailable: ${available().join(', ') || '(none)'}\n`,
  );
  process.exit(2);
}
const mod = (await import(pathToFileURL(join(BENCH_DIR, `${name}.ts`)).href)) as {
  main?: (args: string[]) => Promise<void>;
};
if (typeof mod.main !== 'function') {
  process.stderr.write(`bench/${name}.ts exports no main(args)\n`);
  process.exit(2);
}
await mod.main(args);
