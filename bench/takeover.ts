/**
 * A new leader's takeover at scale (issue 19 item 3): the phase-two driver's first sweep
 * over N live transactions (one AT branch, one row lock, 100 B of application data each,
 * as `bench scale` fills, each waiting for its deadline). In-process: the state machine, a
 * memory store that shows it, and the driver on the node's wall clock; no cluster.
 *
 *   npm run bench -- takeover [--live 100000,300000]
 *
 * Measures, from driver.start() until every session has its deadline planned, the longest
 * synchronous step (the largest gap between two turns of a setImmediate probe: what a
 * heartbeat or a TM call would wait) and the whole re-drive's wall time and the process's
 * CPU time; with `node --expose-gc --import tsx bench/run.ts takeover`, also the heap the
 * driver holds per planned session (its entry and deadline timer). Prints a table and
 * `[bench takeover] live N: longest step N ms, re-drive N ms`.
 */
import { Command as Cli } from 'commander';
import { fillLive } from './lib/live-fill.ts';
import { PhaseTwoDriver } from '../src/coordinator/phase-two-driver.ts';
import type { BranchGateway, Clock } from '../src/coordinator/ports.ts';
import { CoordinatorStateMachine } from '../src/coordinator/state-machine.ts';
import { wallClock } from '../src/server/wall-clock.ts';
import { silentLogger } from '../src/shared/logger.ts';
import { MemoryStore } from '../src/store/memory/index.ts';

const HOUR = 3_600_000;

function fill(machine: CoordinatorStateMachine, live: number, now: number): void {
  fillLive(machine, live, { timeoutMs: HOUR, at: () => now, requestId: () => null });
}

const noRm: BranchGateway = {
  commitBranch: () => Promise.reject(new Error('no RM in this bench')),
  rollbackBranch: () => Promise.reject(new Error('no RM in this bench')),
};

interface Figures {
  live: number;
  longestStepMs: number;
  redriveMs: number;
  cpuMs: number;
  turns: number;
  /** Heap the driver holds per planned session after the walk (with --expose-gc), bytes. */
  driverBytesPerTx: number | null;
}

async function takeover(live: number): Promise<Figures> {
  const machine = new CoordinatorStateMachine();
  fill(machine, live, Date.now());
  let planned = 0;
  // The node's clock; deadline waits (an hour out) are counted as the sweep plans them.
  const clock: Clock = {
    ...wallClock,
    after(ms, fn) {
      if (ms > HOUR / 2) planned += 1;
      return wallClock.after(ms, fn);
    },
  };
  const store = new MemoryStore({ machine, leader: true, term: 2 });
  const driver = new PhaseTwoDriver({ store, gateway: noRm, clock, logger: silentLogger() });
  global.gc?.();
  await new Promise((r) => setTimeout(r, 50));
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  let longest = 0;
  let turns = 0;
  let last = performance.now();
  let probing = true;
  const probe = () => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    if (process.env.GAPS && now - last > 3)
      console.log(`gap ${(now - last).toFixed(1)} ms at turn ${turns}, planned ${planned}`);
    last = now;
    turns += 1;
    if (probing) setImmediate(probe);
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  setImmediate(probe);
  driver.start(2);
  // Planned: a timer per session (main before the DueQueue) or the lead's DueQueue's size.
  const lead = () => (driver as unknown as { state: { due?: { size: number } } }).state;
  while (planned < live && (lead().due?.size ?? 0) < live)
    await new Promise((r) => setImmediate(r));
  const redriveMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  probing = false;
  let driverBytesPerTx: number | null = null;
  if (global.gc) {
    await new Promise((r) => setTimeout(r, 50));
    global.gc();
    driverBytesPerTx = (process.memoryUsage().heapUsed - heap0) / live;
  }
  driver.stop();
  return {
    live,
    longestStepMs: longest,
    redriveMs,
    cpuMs: (cpu.user + cpu.system) / 1000,
    turns,
    driverBytesPerTx,
  };
}

export async function main(args: string[]): Promise<void> {
  const o = new Cli('takeover')
    .option('--live <list>', 'live transactions, comma-separated', '100000,300000')
    .parse(['node', 'takeover', ...args])
    .opts<{ live: string }>();
  const sizes = o.live.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 1) throw new Error(`--live: ${s} is no positive integer`);
    return n;
  });
  const rows: Figures[] = [];
  for (const live of sizes) rows.push(await takeover(live));
  console.log(
    '| live | longest synchronous step | re-drive (all planned) | CPU | probe turns | driver heap per tx |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(
      `| ${r.live.toLocaleString('en-US')} | ${r.longestStepMs.toFixed(1)} ms | ${r.redriveMs.toFixed(0)} ms | ${r.cpuMs.toFixed(0)} ms | ${r.turns} | ${r.driverBytesPerTx === null ? 'n/a (--expose-gc)' : `${r.driverBytesPerTx.toFixed(0)} B`} |`,
    );
  for (const r of rows)
    console.log(
      `[bench takeover] live ${r.live}: longest step ${r.longestStepMs.toFixed(1)} ms, re-drive ${r.redriveMs.toFixed(0)} ms`,
    );
}
