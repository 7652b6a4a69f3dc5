/**
 * Child processes of a test: waiting for one to exit, stopping one (a signal, then SIGKILL
 * after a grace), killing one known only by its pid, and running a fixture that says on a
 * line of its stdout when it is ready (`READY <port>`: test/support/rm-fixture.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { sleep, waitFor } from './wait.ts';

const REPO_ROOT = resolve(import.meta.dirname, '../..');

/** Resolves when the process has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Sends `signal`, then SIGKILL if the process is still there after `graceMs`. */
export async function stopProcess(
  child: ChildProcess,
  signal: NodeJS.Signals,
  graceMs: number,
): Promise<void> {
  const done = exited(child);
  child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>(
    (resolve) => (timer = setTimeout(() => resolve('late'), graceMs)),
  );
  if ((await Promise.race([done, late])) === 'late') {
    child.kill('SIGKILL');
    await done;
  }
  clearTimeout(timer);
}

/** SIGKILLs the process and resolves once it has exited. */
export function killHard(child: ChildProcess): Promise<void> {
  const done = exited(child);
  child.kill('SIGKILL');
  return done;
}

/** Kills a process (by pid) and waits until it is gone. */
export async function killPid(
  pid: number,
  signal: NodeJS.Signals = 'SIGKILL',
  timeoutMs = 10_000,
): Promise<void> {
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(50);
  }
}

/** A fixture running in a process of its own, past the line that says it is ready. */
export interface FixtureRun {
  child: ChildProcess;
  /** The first group of its ready line. */
  ready: string;
  /** Its stdout and stderr so far, interleaved. */
  out(): string;
  /** Its stdout alone so far. */
  stdout(): string;
}

/** A fixture service, listening on the port of its `READY <port>` line. */
export interface FixtureProcess extends FixtureRun {
  port: number;
}

export interface FixtureOptions {
  /** Added to the test's own environment. */
  env: NodeJS.ProcessEnv;
  /** How long it may take to print its ready line, ms. */
  readyTimeoutMs: number;
  /** The whole line on stdout that says it is ready; its first group is kept. */
  readyLine?: RegExp;
  /** Named in the error should it not get ready. */
  label?: string;
  /** Where the child is recorded, for the suite's afterAll to kill what is left. */
  children?: Set<ChildProcess>;
}

/**
 * Runs `file` (a TypeScript fixture, through tsx from the repository root) and waits until
 * it prints its ready line (default `READY <port>`).
 */
export async function runFixture(file: string, o: FixtureOptions): Promise<FixtureRun> {
  const label = o.label ?? 'the RM service';
  const readyLine = o.readyLine ?? /^READY (\d+)$/m;
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  o.children?.add(child);
  let out = '';
  let stdout = '';
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    stdout += b.toString();
  });
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const ready = await waitFor(
    `${label} to print ${String(readyLine)}`,
    () => {
      // Complete lines only: a line still being written may be cut short.
      const m = readyLine.exec(stdout.slice(0, stdout.lastIndexOf('\n') + 1));
      if (m) return m[1] ?? '';
      if (child.exitCode !== null) throw new Error(`${label} exited: ${out}`);
      return undefined;
    },
    o.readyTimeoutMs,
    50,
  );
  return { child, ready, out: () => out, stdout: () => stdout };
}

/** Starts a fixture service (`READY <port>` once it listens: test/support/rm-fixture.ts). */
export async function startFixture(file: string, o: FixtureOptions): Promise<FixtureProcess> {
  const run = await runFixture(file, o);
  return { ...run, port: Number(run.ready) };
}

/** SIGKILLs every child of the set that is still running (a suite's afterAll). */
export function killAll(children: Iterable<ChildProcess>): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
