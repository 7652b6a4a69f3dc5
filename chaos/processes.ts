/**
 * The process manager: every process a chaos run starts (nodes, clients) goes through
 * here, so every one of them is stopped at the end — on success, on an error, on Ctrl-C,
 * and even when the harness itself is SIGKILLed.
 *
 * - Each child runs in its OWN process group (`detached`), so a signal to the group (-pid)
 *   reaches it and anything it spawned, and a Ctrl-C in the terminal (SIGINT to the
 *   terminal's foreground group) reaches the harness only: the harness decides the order
 *   of shutdown, not the terminal.
 * - Children get an IPC channel; Concord nodes exit when it closes (src/cli/start.ts), and
 *   so do chaos clients. That covers a dead harness, except for a child that is SIGSTOPped
 *   at that moment: it cannot run its 'disconnect' handler. For that case a tiny REAPER
 *   process holds the list of process groups and, when its own IPC channel to the harness
 *   closes (the harness died, however), sends SIGCONT + SIGKILL to every group left.
 * - stdout and stderr go to a log file per process (pino JSON for nodes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { STOP_GRACE_MS } from './limits.ts';

/** The `--import` argument that lets plain `node` run TypeScript (the tsx loader). */
export function tsxImport(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
}

export interface SpawnSpec {
  /** For logs: `node2`, `c3.1`. */
  name: string;
  /** Arguments after `node` (e.g. ['--import', tsx, 'src/cli/main.ts', 'start', ...]). */
  args: string[];
  logFile: string;
  cwd: string;
  env?: NodeJS.ProcessEnv;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
}

/** One started process (one incarnation: a restart is a new ManagedProcess). */
export class ManagedProcess {
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | null = null;
  private paused = false;
  /** Set when the harness itself ends the process: any other exit is a crash worth reporting. */
  expectingExit = false;

  constructor(
    readonly spec: SpawnSpec,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal, at: Date.now() };
        resolve(this.exitInfo);
      });
    });
  }

  get name(): string {
    return this.spec.name;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.exitInfo === null;
  }

  get isPaused(): boolean {
    return this.paused && this.alive;
  }

  get exit(): ExitInfo | null {
    return this.exitInfo;
  }

  /** Signals the whole process group; false if it is gone. */
  signal(sig: NodeJS.Signals): boolean {
    if (!this.alive || this.pid <= 0) return false;
    try {
      process.kill(-this.pid, sig);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGKILL, and wait until it is reaped. */
  async kill(): Promise<ExitInfo> {
    this.expectingExit = true;
    this.signal('SIGKILL');
    this.paused = false;
    return this.exited;
  }

  /** SIGSTOP: the process stays, holds its sockets, answers nothing. */
  pause(): void {
    if (this.signal('SIGSTOP')) this.paused = true;
  }

  /** SIGCONT. */
  resume(): void {
    this.signal('SIGCONT');
    this.paused = false;
  }

  /** SIGCONT + SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = STOP_GRACE_MS): Promise<ExitInfo> {
    if (!this.alive) return this.exitInfo!;
    this.expectingExit = true;
    this.resume();
    this.signal('SIGTERM');
    const done = await Promise.race([this.exited, sleep(graceMs).then(() => null)]);
    if (done) return done;
    return this.kill();
  }

  send(message: unknown): boolean {
    if (!this.alive || !this.child.connected) return false;
    try {
      return this.child.send(message as object);
    } catch {
      return false;
    }
  }
}

/**
 * The reaper, run with plain `node -e` (no loader: it must start fast and depend on
 * nothing). It learns process groups over IPC and, when the channel closes, kills them.
 */
const REAPER_SCRIPT = `
const groups = new Set();
process.on('message', (m) => { if (m && m.add) groups.add(m.add); if (m && m.remove) groups.delete(m.remove); });
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
process.on('disconnect', () => {
  for (const g of groups) { try { process.kill(-g, 'SIGCONT'); } catch {} try { process.kill(-g, 'SIGKILL'); } catch {} }
  process.exit(0);
});
`;

/**
 * A process that exited without the harness asking: a crash (or a fail-stop) of the code under
 * test.
 */
export interface UnexpectedExit {
  name: string;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  logFile: string;
}

export class ProcessManager {
  readonly unexpectedExits: UnexpectedExit[] = [];
  private readonly procs = new Set<ManagedProcess>();
  private reaper: ChildProcess | null = null;
  private closed = false;

  constructor(private readonly log: Logger) {}

  /** Starts the reaper (once). */
  startReaper(): void {
    if (this.reaper) return;
    this.reaper = spawn(process.execPath, ['-e', REAPER_SCRIPT], {
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    // The reaper must not keep the harness alive, nor die with it in an orderly way first.
    this.reaper.unref();
    this.reaper.channel?.unref();
    this.reaper.on('error', (err) => this.log.warn({ err }, 'reaper failed'));
  }

  spawn(spec: SpawnSpec): ManagedProcess {
    if (this.closed) throw new Error(`process manager is closed; not starting ${spec.name}`);
    mkdirSync(dirname(spec.logFile), { recursive: true });
    const fd = openSync(spec.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, spec.args, {
        cwd: spec.cwd,
        env: spec.env ?? process.env,
        stdio: ['ignore', fd, fd, 'ipc'],
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    const p = new ManagedProcess(spec, child);
    child.on('error', (err) => this.log.error({ err, name: spec.name }, 'could not start process'));
    // Keep the IPC channel from holding the harness's event loop open on its own.
    child.channel?.unref();
    this.procs.add(p);
    if (p.pid > 0) this.reaper?.send({ add: p.pid });
    void p.exited.then((e) => {
      this.procs.delete(p);
      if (!p.expectingExit) {
        this.unexpectedExits.push({
          name: spec.name,
          pid: p.pid,
          code: e.code,
          signal: e.signal,
          at: e.at,
          logFile: spec.logFile,
        });
        this.log.error(
          { name: spec.name, pid: p.pid, code: e.code, signal: e.signal, log: spec.logFile },
          'process exited unexpectedly',
        );
      }
      if (p.pid > 0 && this.reaper?.connected) this.reaper.send({ remove: p.pid });
      this.log.debug(
        { name: spec.name, pid: p.pid, code: e.code, signal: e.signal },
        'process exited',
      );
    });
    this.log.debug({ name: spec.name, pid: p.pid, log: spec.logFile }, 'process started');
    return p;
  }

  /** Processes still running. */
  running(): ManagedProcess[] {
    return [...this.procs].filter((p) => p.alive);
  }

  /** Stops everything (SIGTERM, then SIGKILL after the grace) and the reaper. Idempotent. */
  async stopAll(graceMs = STOP_GRACE_MS): Promise<void> {
    this.closed = true;
    await Promise.all(this.running().map((p) => p.stop(graceMs)));
    this.reaper?.disconnect();
    this.reaper = null;
  }

  /** Synchronous last resort for `process.on('exit')`: SIGCONT + SIGKILL every group. */
  killAllSync(): void {
    this.closed = true;
    for (const p of this.procs) {
      p.expectingExit = true;
      p.signal('SIGCONT');
      p.signal('SIGKILL');
    }
  }
}
