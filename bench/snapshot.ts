/**
 * The coordinator's snapshot at scale (issues 19 and 12): how long it takes to encode and to
 * restore the state of N live transactions (one AT branch, one row lock, 100 B of application
 * data each, as `bench scale` fills), and how large it is. In-process: the state machine
 * alone, fed through the log's codec as on a node; no cluster.
 *
 *   npm run bench -- snapshot [--live 100000] [--runs 3]
 *
 * Prints a table and `[bench snapshot] live N: encode N ms, restore N ms, N MB` (medians).
 * Encode includes the invariant check a node runs before every snapshot; restore includes
 * decoding, rebuilding the lock table and the check after it.
 */
import { Command as Cli } from 'commander';
import { fillLive } from './lib/live-fill.ts';
import { CoordinatorStateMachine } from '../src/coordinator/state-machine.ts';
import { positive } from './lib/options.ts';

function fill(machine: CoordinatorStateMachine, live: number): void {
  fillLive(machine, live, {
    timeoutMs: 3_600_000,
    at: (i) => 1_000 + i,
    requestId: () => crypto.randomUUID(),
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function main(args: string[]): Promise<void> {
  const o = new Cli('snapshot')
    .option('--live <n>', 'live transactions', positive('--live'), 100_000)
    .option('--runs <n>', 'encode/restore rounds', positive('--runs'), 3)
    .parse(['node', 'snapshot', ...args])
    .opts<{ live: number; runs: number }>();
  const machine = new CoordinatorStateMachine();
  const t0 = performance.now();
  fill(machine, o.live);
  const fillMs = performance.now() - t0;
  const rows: string[] = [];
  const encode: number[] = [];
  const restore: number[] = [];
  const sliced: number[] = [];
  const longestSlice: number[] = [];
  let bytes = 0;
  for (let r = 0; r < o.runs; r++) {
    const a = performance.now();
    const snap = machine.snapshot();
    const b = performance.now();
    new CoordinatorStateMachine().restore(snap);
    const c = performance.now();
    bytes = snap.length;
    encode.push(b - a);
    restore.push(c - b);
    // The sliced encode a node runs (one slice per event-loop turn): its sum and longest slice.
    const capture = machine.snapshotInSlices();
    let longest = 0;
    let count = 0;
    let total = 0;
    for (;;) {
      const s0 = performance.now();
      const done = capture.step();
      const ms = performance.now() - s0;
      total += ms;
      longest = Math.max(longest, ms);
      count++;
      if (done !== null) break;
    }
    sliced.push(total);
    longestSlice.push(longest);
    rows.push(
      `| ${r + 1} | ${(b - a).toFixed(0)} | ${total.toFixed(0)} in ${count} slices, longest ${longest.toFixed(0)} | ${(c - b).toFixed(0)} |`,
    );
  }
  const mb = (bytes / 1e6).toFixed(1);
  console.log(`live ${o.live}: filled in ${fillMs.toFixed(0)} ms; snapshot ${mb} MB`);
  console.log('| run | encode ms | sliced encode ms | restore ms |\n| --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
  console.log(
    `[bench snapshot] live ${o.live}: encode ${median(encode).toFixed(0)} ms, restore ${median(restore).toFixed(0)} ms, ${mb} MB`,
  );
  console.log(
    `sliced encode: ${median(sliced).toFixed(0)} ms in all, longest slice ${median(longestSlice).toFixed(0)} ms (medians)`,
  );
}
