/**
 * The one temporary folder that holds everything the service step starts (data directories,
 * sockets, logs), and the watchdog that removes it, with the servers, if the test run dies
 * before its teardown. Nothing of a run stays behind: not a process, not a file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exited } from './host.ts';

/** Every private root's name starts so; the watchdog refuses any other folder. */
export const ROOT_PREFIX = 'concord-services-';
const WATCHDOG = join(import.meta.dirname, 'watchdog.mjs');

export interface Registered {
  pid: number;
  /** The signal that shuts the server down cleanly and soon. */
  signal: NodeJS.Signals;
}

export class PrivateRoot {
  private readonly servers: Registered[] = [];

  private constructor(
    readonly dir: string,
    private readonly watchdog: ChildProcess,
  ) {}

  static async create(): Promise<PrivateRoot> {
    const dir = await mkdtemp(join(tmpdir(), ROOT_PREFIX));
    // Servers may run as another user (PostgreSQL refuses root): they must reach their folder.
    await chmod(dir, 0o755);
    const watchdog = spawn(process.execPath, [WATCHDOG, dir], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return new PrivateRoot(dir, watchdog);
  }

  /** Tells the watchdog about a server it must stop if this process dies. */
  async register(server: Registered): Promise<void> {
    this.servers.push(server);
    await writeFile(join(this.dir, 'watchdog.json'), JSON.stringify(this.servers));
  }

  /**
   * After the servers were stopped: closes the watchdog's pipe, so it stops whatever of ours
   * still runs (a server that failed half-way through its start), removes the folder and exits.
   */
  async remove(): Promise<void> {
    const done = exited(this.watchdog);
    this.watchdog.ref(); // keep this process alive until the watchdog is done
    this.watchdog.stdin?.end();
    await done;
    await rm(this.dir, { recursive: true, force: true }); // had the watchdog died early
  }
}
