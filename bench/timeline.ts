/**
 * `npm run bench -- timeline <prefix> [--skip-ms N] [--shapes K] [--show N]`: merges the
 * latency traces every process wrote with CONCORD_LATENCY_TRACE=<prefix>
 * (src/shared/latency-trace.ts; one monotonic clock for all of them) into one timeline per
 * transaction — from the bench's `bench.tx.start` to its `bench.tx.end` — and prints, for
 * the most common sequence of events (a transaction that no tick or heartbeat crossed), the
 * median time of each event since the start and since the event before it, with the
 * process it happened in. Meant for `npm run bench -- tc --concurrency 1` (one transaction
 * at a time); see bench/README.md, "Where the milliseconds of one transaction go".
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Command } from 'commander';

interface TraceEvent {
  t: bigint;
  proc: string;
  stage: string;
  n: number;
}

function readTraces(prefix: string): TraceEvent[] {
  const dir = dirname(prefix);
  const base = basename(prefix);
  const events: TraceEvent[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(`${base}.`) || !name.endsWith('.trace')) continue;
    const lines = readFileSync(join(dir, name), 'utf8').split('\n');
    let proc = name.slice(base.length + 1, -'.trace'.length);
    for (const line of lines) {
      if (line === '') continue;
      const [t, stage, n] = line.split(' ');
      if (t === undefined || stage === undefined) continue;
      if (stage.startsWith('label:')) {
        proc = stage.slice('label:'.length);
        continue;
      }
      events.push({ t: BigInt(t), proc, stage, n: Number(n ?? 0) });
    }
  }
  events.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  return events;
}

/**
 * The stages of one TC call inside a transaction, found in order from the client's call:
 * the client's batch write, the leader's receipt, its proposal of the entry, its own write,
 * the followers' receipt and write, the answers' arrival at the leader, its apply, the
 * outcome in the store, the answer leaving the TC and reaching the client.
 */
const STAGES = [
  ['client: call → batch written', 'c.write'],
  ['wire: client → leader s.recv', 's.recv'],
  ['leader: recv → proposed', 'd.propose'],
  ['leader: proposed → appends written', 't.write'],
  ['wire: → 1st follower recv app', 'F d.recv.app'],
  ['1st follower: recv → persisted', 'F d.persisted'],
  ['wire: → leader recv 1st appResp', 'L d.recv.appResp'],
  ['leader: appResp → applied', 'd.apply'],
  ['leader: applied → outcome in store', 'st.outcome'],
  ['leader: outcome → answered', 's.answered'],
  ['leader: answered → result written', 's.write'],
  ['wire: leader → client recv', 'c.recv'],
] as const;

function callStages(tx: TraceEvent[], from: number): { ms: number[]; end: number } | null {
  const ms: number[] = [];
  let i = from;
  let prev = tx[from]!.t;
  let leader = '';
  let index = 0;
  let proposedAt = -1;
  for (const [, want] of STAGES) {
    let found = -1;
    for (let j = i + 1; j < tx.length; j++) {
      const e = tx[j]!;
      const ok =
        want === 's.recv'
          ? e.stage === 's.recv'
          : want === 'F d.recv.app'
            ? e.proc !== leader && e.stage === 'd.recv.app' && e.n >= index
            : want === 'F d.persisted'
              ? e.proc !== leader && e.proc !== 'client' && e.stage === 'd.persisted' && e.n > 0
              : want === 'L d.recv.appResp'
                ? e.proc === leader && e.stage === 'd.recv.appResp' && e.n >= index
                : want === 'd.apply'
                  ? e.proc === leader && e.stage === 'd.apply' && e.n === index
                  : want.startsWith('c.')
                    ? e.proc === 'client' && e.stage === want
                    : e.proc === leader && e.stage === want;
      if (ok) {
        found = j;
        break;
      }
    }
    if (found < 0) return null;
    const e = tx[found]!;
    if (want === 's.recv') leader = e.proc;
    if (want === 'd.propose') {
      index = e.n;
      proposedAt = found;
    }
    ms.push(Number(e.t - prev) / 1e6);
    prev = e.t;
    // The followers' events and the leader's own write overlap: search on from the proposal.
    i =
      want === 't.write' || want === 'F d.recv.app' || want === 'F d.persisted'
        ? proposedAt
        : found;
    if (want === 'F d.persisted' || want === 'L d.recv.appResp') i = found;
  }
  return { ms, end: i };
}

function printStages(txs: TraceEvent[][]): void {
  for (const call of ['begin', 'commit']) {
    const rows: number[][] = [];
    for (const tx of txs) {
      const at = tx.findIndex((e) => e.proc === 'client' && e.stage === `c.call.${call}`);
      if (at < 0) continue;
      const r = callStages(tx, at);
      if (r !== null) rows.push(r.ms);
    }
    if (rows.length === 0) continue;
    process.stdout.write(`\n${call} (${rows.length} calls): ms per stage   median     mean\n`);
    let sum = 0;
    let sumMean = 0;
    STAGES.forEach(([label], k) => {
      const xs = rows.map((r) => r[k]!);
      const m = median(xs);
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      sum += m;
      sumMean += mean;
      process.stdout.write(
        `  ${label.padEnd(38)} ${m.toFixed(3).padStart(7)}  ${mean.toFixed(3).padStart(7)}\n`,
      );
    });
    process.stdout.write(
      `  ${'sum'.padEnd(38)} ${sum.toFixed(3).padStart(7)}  ${sumMean.toFixed(3).padStart(7)}\n`,
    );
  }
}

/**
 * The Raft commit of each proposal, from the leader's `d.propose`: when the leader's own
 * write, each follower's write and its answer at the leader came, and when the leader
 * applied the entry — and how often the apply waited for the leader's own write (a quorum
 * of 3 is the leader and one follower, or both followers).
 */
function printCommits(txs: TraceEvent[][]): void {
  const cols: Record<string, number[]> = {
    'leader persisted': [],
    'follower A persisted': [],
    'follower B persisted': [],
    '1st appResp at leader': [],
    '2nd appResp at leader': [],
    'leader applied': [],
  };
  let waitedForLeader = 0;
  let n = 0;
  for (const tx of txs) {
    for (let i = 0; i < tx.length; i++) {
      const p = tx[i]!;
      if (p.stage !== 'd.propose') continue;
      const leader = p.proc;
      const index = p.n;
      const after = tx.slice(i + 1);
      const ms = (e: TraceEvent | undefined) => (e === undefined ? NaN : Number(e.t - p.t) / 1e6);
      const own = after.find((e) => e.proc === leader && e.stage === 'd.persisted' && e.n > 0);
      const fpersisted = after.filter(
        (e) => e.proc !== leader && e.proc !== 'client' && e.stage === 'd.persisted' && e.n > 0,
      );
      const acks = after.filter(
        (e) => e.proc === leader && e.stage === 'd.recv.appResp' && e.n >= index,
      );
      const applied = after.find(
        (e) => e.proc === leader && e.stage === 'd.apply' && e.n === index,
      );
      if (applied === undefined || own === undefined) continue;
      n++;
      cols['leader persisted']!.push(ms(own));
      cols['follower A persisted']!.push(ms(fpersisted[0]));
      cols['follower B persisted']!.push(ms(fpersisted[1]));
      cols['1st appResp at leader']!.push(ms(acks[0]));
      cols['2nd appResp at leader']!.push(ms(acks[1]));
      cols['leader applied']!.push(ms(applied));
      if (acks[0] !== undefined && own.t > acks[0].t) waitedForLeader++;
    }
  }
  if (n === 0) return;
  process.stdout.write(`\nraft commits (${n}): ms after the proposal   median     mean\n`);
  for (const [label, xs] of Object.entries(cols)) {
    const ok = xs.filter((x) => !Number.isNaN(x));
    const mean = ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length);
    process.stdout.write(
      `  ${label.padEnd(38)} ${median(ok).toFixed(3).padStart(7)}  ${mean.toFixed(3).padStart(7)}\n`,
    );
  }
  process.stdout.write(
    `  the leader's own write came after the 1st answer in ${((100 * waitedForLeader) / n).toFixed(0)} % of them\n`,
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
}

/** One transaction: the events between a start and the end that follows it (c=1). */
function splitTransactions(events: TraceEvent[], skipMs: number): TraceEvent[][] {
  const t0 = events[0]!.t + BigInt(Math.round(skipMs * 1e6));
  const txs: TraceEvent[][] = [];
  let open: TraceEvent[] | null = null;
  for (const e of events) {
    if (e.stage === 'bench.tx.start') {
      open = e.t >= t0 ? [e] : null;
      continue;
    }
    if (open === null) continue;
    open.push(e);
    if (e.stage === 'bench.tx.end') {
      txs.push(open);
      open = null;
    }
  }
  return txs;
}

/** Per process, how many rounds, writes and frames one transaction costs (the mean). */
const COUNTED = [
  'd.round',
  'd.persist.sync',
  'd.persist.nosync',
  't.write',
  'd.recv.app',
  'd.recv.appResp',
];

function printCounts(txs: TraceEvent[][]): void {
  const counts = new Map<string, number>();
  for (const tx of txs)
    for (const e of tx)
      if (COUNTED.includes(e.stage)) {
        const key = `${e.proc}|${e.stage}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
  const procs = [...new Set([...counts.keys()].map((k) => k.split('|')[0]!))].sort();
  process.stdout.write(
    `\nper transaction (mean)  ${COUNTED.map((c) => c.padStart(18)).join('')}\n`,
  );
  for (const p of procs)
    process.stdout.write(
      `  ${p.padEnd(21)} ${COUNTED.map((c) => ((counts.get(`${p}|${c}`) ?? 0) / txs.length).toFixed(2).padStart(18)).join('')}\n`,
    );
}

/**
 * Each event of a transaction is named by its process, stage and occurrence (`node1
 * d.round #2`: that node's second round in the transaction); every name is placed at the
 * median of its times since the start over the transactions that have it.
 */
function printEvents(txs: TraceEvent[][], minShare: number): void {
  const byName = new Map<string, { at: number[]; proc: string; stage: string; k: number }>();
  for (const tx of txs) {
    const seen = new Map<string, number>();
    for (const e of tx) {
      const base = `${e.proc} ${e.stage}`;
      const k = (seen.get(base) ?? 0) + 1;
      seen.set(base, k);
      const name = `${base} #${k}`;
      let rec = byName.get(name);
      if (rec === undefined) byName.set(name, (rec = { at: [], proc: e.proc, stage: e.stage, k }));
      rec.at.push(Number(e.t - tx[0]!.t) / 1e6);
    }
  }
  const rows = [...byName.values()]
    .filter((r) => r.at.length >= minShare * txs.length)
    .map((r) => ({ ...r, atMs: median(r.at) }))
    .sort((a, b) => a.atMs - b.atMs);
  process.stdout.write(
    `\nevents in at least ${(100 * minShare).toFixed(0)} % of the transactions, by median time since the start:\n` +
      `${'since start'.padStart(12)} ${'gap'.padStart(7)}  ${'share'.padStart(5)}  process  stage #occurrence\n`,
  );
  let last = 0;
  for (const r of rows) {
    process.stdout.write(
      `${r.atMs.toFixed(3).padStart(12)} ${(r.atMs - last).toFixed(3).padStart(7)}  ${((100 * r.at.length) / txs.length).toFixed(0).padStart(4)}%  ${r.proc.padEnd(7)}  ${r.stage} #${r.k}\n`,
    );
    last = r.atMs;
  }
}

export async function main(args: string[]): Promise<void> {
  const program = new Command('timeline')
    .argument('<prefix>', 'the CONCORD_LATENCY_TRACE prefix the processes wrote under')
    .option('--skip-ms <n>', 'ignore transactions in the first N ms of the trace', '1500')
    .option('--min-share <x>', 'print events found in at least this share of transactions', '0.5')
    .option('--events', 'print every event by its median time since the start')
    .option('--show <n>', 'also print the raw events of the first N transactions', '0')
    .exitOverride();
  program.parse(args, { from: 'user' });
  const prefix = program.args[0]!;
  const o = program.opts<{ skipMs: string; minShare: string; events?: boolean; show: string }>();
  const events = readTraces(prefix);
  if (events.length === 0) throw new Error(`no trace files ${prefix}.*.trace`);
  const txs = splitTransactions(events, Number(o.skipMs));
  const total = txs.map((tx) => Number(tx.at(-1)!.t - tx[0]!.t) / 1e6);
  process.stdout.write(
    `${txs.length} transactions; whole transaction ms: p50 ${median(total).toFixed(2)}, ` +
      `mean ${(total.reduce((a, b) => a + b, 0) / Math.max(1, total.length)).toFixed(2)}\n`,
  );
  printStages(txs);
  printCommits(txs);
  printCounts(txs);
  if (o.events === true) printEvents(txs, Number(o.minShare));
  for (const tx of txs.slice(0, Number(o.show))) {
    process.stdout.write('\n');
    for (const e of tx)
      process.stdout.write(
        `${(Number(e.t - tx[0]!.t) / 1e6).toFixed(3).padStart(9)}  ${e.proc.padEnd(7)}  ${e.stage} ${e.n}\n`,
      );
  }
}
