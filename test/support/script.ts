/**
 * A script in a real Node process of its own (ESM, TypeScript through tsx, run from the
 * repository root), with CONCORD_LOG_LEVEL unset so the library's default logger speaks as
 * it would for a user.
 */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const REPO_ROOT = resolve(import.meta.dirname, '../..');

export interface ScriptRun {
  code: number | null;
  out: string;
  err: string;
  /** The JSON lines of stderr (what pino wrote), parsed (throws on a malformed one). */
  logLines(): Record<string, unknown>[];
}

export async function runScript(script: string): Promise<ScriptRun> {
  const env = { ...process.env };
  delete env.CONCORD_LOG_LEVEL;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const code = await new Promise<number | null>((done) => child.once('exit', done));
  const logLines = () =>
    err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code, out, err, logLines };
}
