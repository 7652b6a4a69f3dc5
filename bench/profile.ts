/**
 * Where the leader's CPU goes (issue 12 item 7): runs the tc bench with `--cpu-prof` on the
 * node processes and prints the leader's top self-time functions and the share of each
 * part of the code (our folders, each dependency, GC, idle), counted over the measured
 * window only (warm-up and start-up left out).
 *
 *   npm run bench -- profile [--top 30] [--all-nodes] [--keep-profiles] [tc options]
 *   npm run bench -- profile --scenarios lock --duration 10
 *
 * tc options default to `--scenarios empty --transports stream --duration 5 --warmup 2`
 * (`--node-args` is this script's own). The profiles are written when the nodes exit
 * (V8's sampling profiler, every `--interval-us`, default 500 µs). Sample times are on the
 * monotonic clock the bench reads (process.hrtime), so the window is cut exactly.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { runTcBench } from './tc.ts';

const log = (msg: string) => process.stdout.write(`[bench profile] ${msg}\n`);

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface Options {
  top: number;
  allNodes: boolean;
  keepProfiles: boolean;
  intervalUs: number;
  /** Print the call paths that lead to functions whose name contains one of these. */
  callers: string[];
  tcArgs: string[];
}

function parseOptions(args: string[]): Options {
  const o: Options = {
    top: 30,
    allNodes: false,
    keepProfiles: false,
    intervalUs: 500,
    callers: [],
    tcArgs: [],
  };
  const tc: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--top') o.top = Number(args[++i]);
    else if (a === '--all-nodes') o.allNodes = true;
    else if (a === '--keep-profiles') o.keepProfiles = true;
    else if (a === '--interval-us') o.intervalUs = Number(args[++i]);
    else if (a === '--callers') o.callers.push(args[++i] ?? '');
    else if (a === '--node-args') throw new Error('profile sets --node-args itself');
    else tc.push(a);
  }
  if (!Number.isInteger(o.top) || o.top < 1) throw new Error('--top takes a positive integer');
  if (!Number.isInteger(o.intervalUs) || o.intervalUs < 50)
    throw new Error('--interval-us takes an integer ≥ 50');
  const has = (flag: string) => tc.includes(flag);
  if (!has('--scenarios')) tc.push('--scenarios', 'empty');
  if (!has('--transports')) tc.push('--transports', 'stream');
  if (!has('--duration')) tc.push('--duration', '5');
  if (!has('--warmup')) tc.push('--warmup', '2');
  o.tcArgs = tc;
  return o;
}

/** Where a frame's code lives: our folder (src/raft, …), a dependency, node's own, or V8's. */
export function partOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName.startsWith('(')) return functionName; // (garbage collector), (idle), (program)
    return '(native)';
  }
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const src = url.indexOf('/src/');
  if (src >= 0) {
    const parts = url.slice(src + 1).split('/');
    return parts.length > 2 ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  return basename(url);
}

interface Tally {
  /** Samples in the window. */
  total: number;
  /** Sampled microseconds in the window. */
  totalUs: number;
  byFunction: Map<string, number>;
  byPart: Map<string, number>;
}

/** Self time per function and per part, over samples whose time falls in one of the windows. */
export function tally(p: CpuProfile, windows: readonly { from: number; to: number }[]): Tally {
  const frames = new Map<number, CallFrame>(p.nodes.map((n) => [n.id, n.callFrame]));
  const t: Tally = { total: 0, totalUs: 0, byFunction: new Map(), byPart: new Map() };
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const delta = p.timeDeltas[i] ?? 0;
    at += delta;
    if (!windows.some((w) => at >= w.from && at <= w.to)) continue;
    const frame = frames.get(p.samples[i]!);
    if (!frame) continue;
    // The time up to the next sample is this one's (V8 attributes it so).
    const us = p.timeDeltas[i + 1] ?? delta;
    t.total += 1;
    t.totalUs += us;
    const fn = frameName(frame);
    t.byFunction.set(fn, (t.byFunction.get(fn) ?? 0) + us);
    const part = partOf(frame);
    t.byPart.set(part, (t.byPart.get(part) ?? 0) + us);
  }
  return t;
}

function frameName(frame: CallFrame): string {
  const where = frame.url
    ? `${frame.url.replace(/^.*\/(node_modules|src|bench|test)\//, '$1/')}:${frame.lineNumber + 1}`
    : '';
  return `${frame.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
}

/**
 * The call paths (up to `depth` frames, innermost first) whose sampled frames include a
 * function named like `pattern`, by the time spent at and under it (inclusive).
 */
export function callers(
  p: CpuProfile,
  windows: readonly { from: number; to: number }[],
  pattern: string,
  depth = 8,
): Map<string, number> {
  const byId = new Map<number, ProfileNode>(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = new Map<string, number>();
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const delta = p.timeDeltas[i] ?? 0;
    at += delta;
    if (!windows.some((w) => at >= w.from && at <= w.to)) continue;
    const us = p.timeDeltas[i + 1] ?? delta;
    // Walk up from the sampled frame to the outermost frame matching the pattern.
    let id: number | undefined = p.samples[i];
    let hit: number | undefined;
    while (id !== undefined) {
      const n = byId.get(id);
      if (n && n.callFrame.functionName.includes(pattern)) hit = id;
      id = parent.get(id);
    }
    if (hit === undefined) continue;
    const path: string[] = [];
    for (
      let j: number | undefined = hit;
      j !== undefined && path.length < depth;
      j = parent.get(j)
    ) {
      const n = byId.get(j);
      if (n) path.push(frameName(n.callFrame));
    }
    const key = path.join(' < ');
    out.set(key, (out.get(key) ?? 0) + us);
  }
  return out;
}

function top(map: Map<string, number>, n: number, totalUs: number, busyUs: number): string[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(
      ([k, us]) =>
        `${((us / totalUs) * 100).toFixed(1).padStart(5)}% ${((us / busyUs) * 100).toFixed(1).padStart(5)}%  ${k}`,
    );
}

export async function main(args: string[]): Promise<void> {
  const o = parseOptions(args);
  const dir = await mkdtemp(join(tmpdir(), 'concord-profile-'));
  log(`profiles in ${dir}; tc ${o.tcArgs.join(' ')}`);
  const outcome = await runTcBench([
    ...o.tcArgs,
    '--node-args',
    `--cpu-prof --cpu-prof-dir=${dir} --cpu-prof-interval=${o.intervalUs}`,
  ]);
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  const windows = outcome.results.map((r) => r.windowUs);
  const tx = outcome.results.reduce((a, r) => a + r.tx, 0);
  try {
    for (const [nodeId, pid] of outcome.pids) {
      if (!o.allNodes && nodeId !== outcome.leaderId) continue;
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: the main thread is 0 (tsx's
      // module loader thread writes its own).
      const mine = files.filter((f) => f.split('.')[3] === String(pid));
      const main = mine.find((f) => f.split('.')[4] === '0');
      const t = main
        ? tally(JSON.parse(await readFile(join(dir, main), 'utf8')) as CpuProfile, windows)
        : null;
      if (!t || t.total === 0) {
        log(
          `${nodeId}: no profile samples in the measured window (files: ${mine.join(', ') || 'none'})`,
        );
        continue;
      }
      const idleUs = t.byPart.get('(idle)') ?? 0;
      const busyUs = Math.max(1, t.totalUs - idleUs);
      log(
        `${nodeId}${nodeId === outcome.leaderId ? ' (leader)' : ''}: ${(t.totalUs / 1000).toFixed(0)} ms sampled in the window, ` +
          `${((busyUs / t.totalUs) * 100).toFixed(0)}% busy; ${tx} tx → ${(busyUs / Math.max(1, tx)).toFixed(0)} µs busy per tx (profiled: slower than unprofiled)`,
      );
      log(`${nodeId}: by part (% of window, % of busy):`);
      for (const l of top(t.byPart, 20, t.totalUs, busyUs)) log(`  ${l}`);
      log(`${nodeId}: top ${o.top} functions by self time (% of window, % of busy):`);
      for (const l of top(t.byFunction, o.top, t.totalUs, busyUs)) log(`  ${l}`);
      for (const pattern of o.callers) {
        const profile = JSON.parse(await readFile(join(dir, main!), 'utf8')) as CpuProfile;
        log(`${nodeId}: call paths into "${pattern}" (inclusive, % of window, % of busy):`);
        for (const l of top(callers(profile, windows, pattern), 12, t.totalUs, busyUs))
          log(`  ${l}`);
      }
    }
  } finally {
    if (!o.keepProfiles) await rm(dir, { recursive: true, force: true });
    else log(`profiles kept in ${dir}`);
  }
}
