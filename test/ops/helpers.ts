/** Shared helpers of the ops tests: free ports, polling, processes, HTTP. */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { fetchNode } from '../support/node-http.ts';
import { freePort, freePorts } from '../support/ports.ts';
import { killPid } from '../support/process.ts';
import { sleep, waitFor } from '../support/wait.ts';

export { freePort, freePorts, killPid, sleep, waitFor };

export const REPO_ROOT = resolve(import.meta.dirname, '../..');

export interface HttpAnswer {
  status: number;
  body: any;
  headers: Headers;
}

export async function http(
  method: string,
  url: string,
  opts: {
    body?: unknown;
    raw?: string;
    token?: string;
    headers?: Record<string, string>;
    timeoutMs?: number;
  } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] ??= 'application/json';
  }
  // https:// (a secure test node) trusts the run's CA: support/node-http.ts.
  const res = await fetchNode(url, {
    method,
    headers,
    ...(body !== undefined ? { body } : {}),
    signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Runs the concord CLI (through tsx) as a child process. */
export function spawnCli(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; capture?: boolean } = {},
): ChildProcess & { output: () => string } {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', resolve(REPO_ROOT, 'src/cli/main.ts'), ...args],
    {
      cwd: opts.cwd ?? REPO_ROOT,
      env: {
        ...process.env,
        CONCORD_LOG_LEVEL: process.env.CONCORD_LOG_LEVEL ?? 'info',
        NO_COLOR: '1',
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return Object.assign(child, { output: () => out });
}

/** Runs the CLI to completion; resolves with its exit code and output. */
export async function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; out: string }> {
  const child = spawnCli(args, opts);
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  clearTimeout(timer);
  return { code, out: child.output() };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
