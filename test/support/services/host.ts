/**
 * What the service step needs from the machine: progress lines, free ports, binaries on
 * the PATH or in the usual sbin folders, child processes and their exit
 * (test/support/process.ts).
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { freePort } from '../ports.ts';
import { exited, stopProcess } from '../process.ts';

export { exited, freePort, stopProcess };

/** One line of progress on stderr (vitest shows a global setup's stderr as it comes). */
export function progress(line: string): void {
  process.stderr.write(`[services] ${line}\n`);
}

export function seconds(sinceMs: number): string {
  return `${((Date.now() - sinceMs) / 1000).toFixed(1)} s`;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

export const isDebian = (): boolean => existsSync('/etc/debian_version');

/** Server binaries live in sbin, which a non-root PATH often lacks. */
export const SBIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin', '/sbin'];

/** Where to look for binaries (a test points it at an empty folder). */
export interface BinarySearch {
  path: string;
  extraDirs: readonly string[];
}

export const SYSTEM_SEARCH: BinarySearch = { path: process.env.PATH ?? '', extraDirs: SBIN_DIRS };

/** The first executable of these names on the PATH or in the sbin folders, or undefined. */
export function findBinary(
  names: readonly string[],
  where: BinarySearch = SYSTEM_SEARCH,
): string | undefined {
  const dirs = [...where.path.split(delimiter).filter(Boolean), ...where.extraDirs];
  for (const name of names)
    for (const dir of dirs) {
      const file = join(dir, name);
      try {
        accessSync(file, constants.X_OK);
        return file;
      } catch {
        // not here
      }
    }
  return undefined;
}

export interface RunResult {
  code: number | null;
  output: string;
}

/** Runs a command to its end; its output is kept (and shown line by line if `show`). */
export function run(
  file: string,
  args: readonly string[],
  options: SpawnOptions & { show?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const take = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output += text;
      if (options.show)
        for (const line of text.split('\n')) if (line.trim()) progress(`  ${line.trimEnd()}`);
    };
    child.stdout?.on('data', take);
    child.stderr?.on('data', take);
    child.on('error', (err) => resolve({ code: -1, output: `${output}${err.message}\n` }));
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** The last lines of a log, for an error message. */
export function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
