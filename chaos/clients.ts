/**
 * The client processes of a run (chaos/client.ts), as the harness sees them: start,
 * SIGKILL mid-transaction and restart (a new incarnation writing a new history file),
 * drain, exit.
 *
 * Clients come in pairs sharing an application id (c0 and c1 are `chaos-app0`, …): when
 * one is killed, the TC hands the phase two of its branches to its sibling, which serves
 * the same resources — and then to its own next incarnation.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ClientConfig } from './client.ts';
import type { ChaosTables } from './db.ts';
import { CLIENT_DRAIN_TIMEOUT_MS, CLIENT_START_TIMEOUT_MS, STOP_GRACE_MS } from './limits.ts';
import { tsxImport, type ManagedProcess, type ProcessManager } from './processes.ts';
import type { Sabotage } from './workload.ts';

export interface ClientPoolOptions {
  pm: ProcessManager;
  runDir: string;
  repoRoot: string;
  seed: number;
  count: number;
  concurrency: number;
  txnTimeoutMs: number;
  servers: string[];
  tables: ChaosTables;
  logLevel: string;
  logger: Logger;
  sabotage: Sabotage | null;
}

interface Slot {
  index: number;
  incarnation: number;
  proc: ManagedProcess | null;
  ready: Promise<void> | null;
  drained: Promise<unknown> | null;
}

export function applicationIdOf(index: number): string {
  return `chaos-app${Math.floor(index / 2)}`;
}

export class ClientPool {
  private readonly slots: Slot[];
  private readonly log: Logger;

  constructor(private readonly o: ClientPoolOptions) {
    this.slots = Array.from({ length: o.count }, (_, index) => ({
      index,
      incarnation: 0,
      proc: null,
      ready: null,
      drained: null,
    }));
    this.log = o.logger.child({ component: 'clients' });
  }

  get historyDir(): string {
    return join(this.o.runDir, 'history');
  }

  /** Starts (or restarts) client `index`; resolves when it reports ready. */
  async start(index: number): Promise<void> {
    const slot = this.slots[index];
    if (!slot) throw new Error(`no client ${index}`);
    if (slot.proc?.alive) throw new Error(`client ${index} is already running`);
    slot.incarnation++;
    const name = `c${index}.${slot.incarnation}`;
    const config: ClientConfig = {
      index,
      incarnation: slot.incarnation,
      process: name,
      applicationId: applicationIdOf(index),
      servers: this.o.servers,
      seed: this.o.seed,
      concurrency: this.o.concurrency,
      txnTimeoutMs: this.o.txnTimeoutMs,
      historyFile: join(this.historyDir, `${name}.jsonl`),
      tables: this.o.tables,
      logLevel: this.o.logLevel,
      sabotage: this.o.sabotage,
    };
    const proc = this.o.pm.spawn({
      name,
      args: ['--import', tsxImport(), join(this.o.repoRoot, 'chaos/client.ts')],
      logFile: join(this.o.runDir, 'logs', `${name}.log`),
      cwd: this.o.repoRoot,
      env: { ...process.env, CHAOS_CLIENT_CONFIG: JSON.stringify(config) },
    });
    slot.proc = proc;
    slot.drained = null;
    slot.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `client ${name} not ready within ${CLIENT_START_TIMEOUT_MS} ms; see ${proc.spec.logFile}`,
            ),
          ),
        CLIENT_START_TIMEOUT_MS,
      );
      proc.child.on('message', (m: { type?: string }) => {
        if (m?.type === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
      void proc.exited.then((e) => {
        clearTimeout(timer);
        reject(
          new Error(
            `client ${name} exited before it was ready (${JSON.stringify(e)}); see ${proc.spec.logFile}`,
          ),
        );
      });
    });
    // A rejection after ready (the exit) must not surface as unhandled.
    slot.ready.catch(() => undefined);
    await slot.ready;
    this.log.info({ client: name, pid: proc.pid }, 'client ready');
  }

  async startAll(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.start(s.index)));
  }

  /** The current incarnation's process name. */
  nameOf(index: number): string {
    return `c${index}.${this.slots[index]?.incarnation ?? 0}`;
  }

  /** SIGKILL: the client dies wherever it is, transactions in flight included. */
  async kill(index: number): Promise<void> {
    await this.slots[index]?.proc?.kill();
  }

  isRunning(index: number): boolean {
    return this.slots[index]?.proc?.alive === true;
  }

  /** Restarts every client that is not running (after the faults). */
  async reviveAll(): Promise<void> {
    await Promise.all(this.slots.filter((s) => !s.proc?.alive).map((s) => this.start(s.index)));
  }

  /**
   * Asks every client to stop starting transactions; resolves when all in-flight ones ended
   * (bounded).
   */
  async drainAll(): Promise<{ drained: number; timedOut: string[] }> {
    const running = this.slots.filter((s) => s.proc?.alive);
    const results = await Promise.all(
      running.map(async (s) => {
        const proc = s.proc!;
        const done = new Promise<boolean>((resolve) => {
          proc.child.on('message', (m: { type?: string }) => {
            if (m?.type === 'drained') resolve(true);
          });
          void proc.exited.then(() => resolve(false));
        });
        proc.send({ type: 'drain' });
        const ok = await Promise.race([done, sleep(CLIENT_DRAIN_TIMEOUT_MS).then(() => false)]);
        return ok ? null : proc.name;
      }),
    );
    const timedOut = results.filter((r): r is string => r !== null);
    return { drained: running.length - timedOut.length, timedOut };
  }

  /** Asks every client to close its SDK and exit; kills the ones that do not within the grace. */
  async exitAll(): Promise<void> {
    await Promise.all(
      this.slots.map(async (s) => {
        const proc = s.proc;
        if (!proc?.alive) return;
        proc.expectingExit = true;
        proc.send({ type: 'exit' });
        const done = await Promise.race([proc.exited, sleep(STOP_GRACE_MS * 2).then(() => null)]);
        if (!done) {
          this.log.warn({ client: proc.name }, 'client did not exit; killing it');
          await proc.kill();
        }
      }),
    );
  }

  async killAll(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.proc?.kill()));
  }
}
