/**
 * Where the coordinator state's heap goes, per live transaction (issue 19): fills a state
 * machine with `--live` transactions of the scale bench's shape (one AT branch, one row lock,
 * 100 B of application data, UUID request ids, through the log's codec, as on a node), takes
 * a V8 heap snapshot before and after, and prints the difference by kind of object (type and
 * constructor or internal name), with counts and bytes per transaction.
 *
 *   npm run bench -- heap-census [--live 20000] [--keep <dir>]
 *
 * Needs gc: run it through `node --expose-gc` or let it set the flag itself (as
 * test/scale/memory.test.ts does).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CoordinatorStateMachine } from '../src/coordinator/state-machine.ts';
import { decodeCommand, encodeCommand, type Command } from '../src/coordinator/commands.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Command time: wall-clock ms as a leader stamps them (beyond a small integer: boxed numbers). */
const T0 = 1_765_000_000_000;
const DATA = JSON.stringify({ pad: 'x'.repeat(90) });

function requestId(kind: number, i: number): string {
  return `${kind.toString(16).padStart(8, '0')}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}

/** Node-like ids: a 19-digit transaction id in the xid, a 19-digit branch id. */
export function beginCommand(i: number): Command {
  const tx = String(7_261_000_000_000_000_000n + BigInt(i));
  return {
    kind: 'Begin',
    xid: `10.0.0.1:8091:${tx}`,
    transactionId: tx,
    applicationId: 'bench-scale',
    transactionServiceGroup: 'default',
    name: 'scale',
    timeoutMs: 600_000,
    beginTime: T0 + i,
    requestId: requestId(0xb, i),
    term: 1,
  } as Command;
}

export function registerCommand(i: number): Command {
  const tx = String(7_261_000_000_000_000_000n + BigInt(i));
  return {
    kind: 'RegisterBranch',
    xid: `10.0.0.1:8091:${tx}`,
    branchId: String(7_262_000_000_000_000_000n + BigInt(i)),
    type: 'AT',
    resourceId: 'jdbc:postgresql://127.0.0.1:5432/scale',
    lockKey: `scale_rows:${i}`,
    applicationData: DATA,
    clientId: 'bench-scale:127.0.0.1:40000:abcd',
    applicationId: 'bench-scale',
    at: T0 + i,
    requestId: requestId(0xc, i),
  } as Command;
}

interface Census {
  /** `type name` → [count, self bytes]. */
  byKind: Map<string, [number, number]>;
}

/** Writes a heap snapshot after a full GC (read later: nothing of a census is on the heap). */
function snapshotTo(dir: string, label: string): string {
  for (let i = 0; i < 3; i++) gc();
  return writeHeapSnapshot(join(dir, `${label}.heapsnapshot`));
}

async function census(file: string): Promise<Census> {
  const snap = JSON.parse(await readFile(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [T, N, S] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const byKind = new Map<string, [number, number]>();
  for (let i = 0; i < snap.nodes.length; i += fields.length) {
    const type = types[snap.nodes[i + T!]!]!;
    let name = snap.strings[snap.nodes[i + N!]!]!;
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string')
      name = `(${Math.min(64, name.length)} chars${name.length > 64 ? '+' : ''})`;
    if (type === 'number') name = '';
    const key = `${type} ${name}`;
    const row = byKind.get(key) ?? [0, 0];
    row[0] += 1;
    row[1] += snap.nodes[i + S!]!;
    byKind.set(key, row);
  }
  return { byKind };
}

export async function main(args: string[]): Promise<void> {
  const at = (flag: string) => args.indexOf(flag);
  const live = at('--live') >= 0 ? Number(args[at('--live') + 1]) : 20_000;
  const keep = at('--keep') >= 0 ? args[at('--keep') + 1]! : null;
  const dir = keep ?? (await mkdtemp(join(tmpdir(), 'heap-census-')));
  // Warm-up (compiled code, shapes, the interned strings) on a machine that is dropped.
  const warm = new CoordinatorStateMachine();
  for (let i = 0; i < 2_000; i++) {
    warm.apply(decodeCommand(encodeCommand(beginCommand(i))));
    warm.apply(decodeCommand(encodeCommand(registerCommand(i))));
  }
  const machine = new CoordinatorStateMachine();
  const beforeFile = snapshotTo(dir, 'before');
  for (let i = 0; i < live; i++) {
    const b = machine.apply(decodeCommand(encodeCommand(beginCommand(i))));
    const r = machine.apply(decodeCommand(encodeCommand(registerCommand(i))));
    if (!b.ok || !r.ok) throw new Error(`command ${i} refused`);
  }
  const afterFile = snapshotTo(dir, 'after');
  const before = await census(beforeFile);
  const after = await census(afterFile);
  const rows: { key: string; count: number; bytes: number }[] = [];
  for (const [key, [count, bytes]] of after.byKind) {
    const [c0, b0] = before.byKind.get(key) ?? [0, 0];
    if (Math.abs(bytes - b0) >= live * 2) rows.push({ key, count: count - c0, bytes: bytes - b0 });
  }
  rows.sort((a, b) => b.bytes - a.bytes);
  let total = 0;
  for (const [, [, b]] of after.byKind) total += b;
  for (const [, [, b]] of before.byKind) total -= b;
  console.log(`[heap-census] ${live} live transactions: ${(total / live).toFixed(0)} B each`);
  console.log('bytes/tx  objects/tx  kind');
  for (const r of rows)
    console.log(
      `${(r.bytes / live).toFixed(1).padStart(8)}  ${(r.count / live).toFixed(2).padStart(10)}  ${r.key}`,
    );
  console.log(`(machine holds ${machine.liveSessionCount()} live sessions)`);
  if (keep === null) await rm(dir, { recursive: true, force: true });
}
