/**
 * Start-up time of the `concord` command: how long a process takes to print `--help`, and
 * how long `concord start` takes from spawn to answering `GET /health` (a one-node raft
 * cluster on a fresh data dir, free loopback ports), with the CPU time the process used
 * until then (Linux: /proc; the figure to compare on a loaded machine), and then to lead
 * its group.
 *
 *   npm run bench -- startup [--runs 10] [--modes bin,tsx]
 *
 * Modes: `bin` is `node bin/concord.js` (the package's bin: compiled JS from dist/, so run
 * `npm run build` first), `tsx` is `node --import tsx src/cli/main.ts` (the dev loop).
 * Prints the median and min/max of each measure per mode.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { freePort, REPO_ROOT } from './lib/cluster.ts';
import { nodeGet } from './lib/node-http.ts';

/** How often the health endpoint is polled while a node starts, ms. */
const POLL_MS = 5;
/** Give up on a node that has not answered (or led) after this long, ms. */
const START_TIMEOUT_MS = 30_000;
/** Raft tick of the measured node, ms: a one-node group elects itself in 10–20 ticks. */
const TICK_MS = 20;

type Mode = 'bin' | 'tsx';

function command(mode: Mode): string[] {
  return mode === 'bin'
    ? [join(REPO_ROOT, 'bin/concord.js')]
    : ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts')];
}

function run(mode: Mode, args: string[]): ChildProcess {
  return spawn(process.execPath, [...command(mode), ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

async function timeHelp(mode: Mode): Promise<number> {
  const t0 = performance.now();
  const child = run(mode, ['--help']);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`concord --help exited with ${code}`);
  return performance.now() - t0;
}

async function health(port: number, caFile: string): Promise<{ role?: string } | null> {
  try {
    // HTTPS with the node's own dev CA (made at its first start): lib/node-http.ts.
    const res = await nodeGet(`127.0.0.1:${port}`, '/health', 1_000, caFile);
    return (await res.json()) as { role?: string };
  } catch {
    return null;
  }
}

/** CPU time (user + system) a live process has used so far, ms; null off Linux. */
function cpuMs(pid: number): number | null {
  try {
    // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks, 100 per second.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

async function timeStart(
  mode: Mode,
): Promise<{ health: number; cpu: number | null; leader: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'concord-startup-'));
  const [httpPort, tcPort, raftPort] = [await freePort(), await freePort(), await freePort()];
  const config = join(dir, 'node1.yaml');
  writeFileSync(
    config,
    stringify({
      node: { id: 'node1' },
      server: { host: '127.0.0.1', httpPort, tcPort, raftPort },
      raft: {
        dataDir: join(dir, 'data'),
        tickMs: TICK_MS,
        peers: [{ nodeId: 'node1', host: '127.0.0.1', raftPort, tcPort, httpPort }],
      },
      log: { level: 'warn' },
    }),
  );
  const t0 = performance.now();
  const child = run(mode, ['start', '--config', config]);
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  try {
    let healthAt = 0;
    let cpu: number | null = null;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`node exited: ${stderr.slice(-2000)}`);
      if (performance.now() - t0 > START_TIMEOUT_MS) throw new Error('node did not start');
      const h = await health(httpPort, join(dir, 'pki', 'ca.pem'));
      if (h !== null && healthAt === 0) {
        healthAt = performance.now() - t0;
        cpu = cpuMs(child.pid!);
      }
      if (h?.role === 'leader') return { health: healthAt, cpu, leader: performance.now() - t0 };
      await sleep(POLL_MS);
    }
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const median = s[Math.floor(s.length / 2)]!;
  return `${median.toFixed(0)} ms (min ${s[0]!.toFixed(0)}, max ${s[s.length - 1]!.toFixed(0)})`;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '10' },
      modes: { type: 'string', default: 'bin,tsx' },
    },
  });
  const runs = Number(values.runs);
  const modes = values.modes.split(',') as Mode[];
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
  for (const m of modes) if (m !== 'bin' && m !== 'tsx') throw new Error(`unknown mode ${m}`);
  if (
    modes.includes('bin') &&
    existsSync(join(REPO_ROOT, 'src')) &&
    !existsSync(join(REPO_ROOT, 'dist'))
  )
    process.stdout.write('note: no dist/ (run `npm run build` to measure the compiled bin)\n');
  type Samples = { help: number[]; health: number[]; cpu: number[]; leader: number[] };
  const results = new Map<Mode, Samples>();
  for (const m of modes) results.set(m, { help: [], health: [], cpu: [], leader: [] });
  // Modes alternate run by run, so that noise on a shared machine hits both alike.
  for (let i = 0; i < runs; i++) {
    for (const m of modes) {
      const r = results.get(m)!;
      r.help.push(await timeHelp(m));
      const s = await timeStart(m);
      r.health.push(s.health);
      if (s.cpu !== null) r.cpu.push(s.cpu);
      r.leader.push(s.leader);
    }
    process.stdout.write(`run ${i + 1}/${runs} done\n`);
  }
  for (const m of modes) {
    const r = results.get(m)!;
    process.stdout.write(
      `${m}: --help ${summary(r.help)}; start → /health ${summary(r.health)}` +
        (r.cpu.length > 0 ? ` using ${summary(r.cpu)} of CPU` : '') +
        `; start → leader ${summary(r.leader)}\n`,
    );
  }
}
