/**
 * Which ArrayBuffers a process holds outside its V8 heap, and who holds them (issue 19:
 * the nodes' external memory). Reads a V8 heap snapshot (`bench scale --heap-snapshots
 * <dir>`, or any `.heapsnapshot`) and prints:
 *
 *  - the backing stores by size class (count, MB);
 *  - the owners: for every backing store, the chain of retainers from it up to a named
 *    object (the views of it, the property or element that holds each view, its holder…),
 *    bytes summed per chain, largest first;
 *  - the largest backing stores, each with its views and their retainers.
 *
 *   npx tsx bench/heap-buffers.ts <file.heapsnapshot> [--depth 6] [--top 25]
 *
 * The file is scanned as bytes (snapshots of a few hundred MB of heap are too large for one
 * JSON.parse): the numbers of `nodes` and `edges` into typed arrays, `strings` one by one.
 */
import { readFileSync } from 'node:fs';

const MB = 1024 * 1024;

interface Snapshot {
  nodeFields: string[];
  nodeTypes: string[];
  edgeFields: string[];
  edgeTypes: string[];
  nodes: Uint32Array;
  edges: Uint32Array;
  strings: string[];
}

function find(buf: Buffer, needle: string, from = 0): number {
  const at = buf.indexOf(needle, from, 'latin1');
  if (at < 0) throw new Error(`${needle} not found in the snapshot`);
  return at + needle.length;
}

/** The unsigned integers of a JSON array starting at `at` (just past its `[`). */
function numbers(buf: Buffer, at: number): Uint32Array {
  const end = buf.indexOf(']', at);
  let count = 0;
  for (let i = at; i < end; i++) if (buf[i] === 0x2c) count++;
  const out = new Uint32Array(count + 1);
  let n = 0;
  let v = 0;
  let inNumber = false;
  for (let i = at; i < end; i++) {
    const c = buf[i]!;
    if (c >= 0x30 && c <= 0x39) {
      v = v * 10 + (c - 0x30);
      inNumber = true;
    } else if (inNumber) {
      out[n++] = v;
      v = 0;
      inNumber = false;
    }
  }
  if (inNumber) out[n++] = v;
  return n === out.length ? out : out.subarray(0, n);
}

/** The JSON strings of the array starting at `at` (just past its `[`). */
function strings(buf: Buffer, at: number): string[] {
  const out: string[] = [];
  let i = at;
  for (;;) {
    while (buf[i] !== 0x22 && buf[i] !== 0x5d) i++;
    if (buf[i] === 0x5d) return out;
    let j = i + 1;
    while (buf[j] !== 0x22) j += buf[j] === 0x5c ? 2 : 1;
    out.push(JSON.parse(buf.toString('utf8', i, j + 1)) as string);
    i = j + 1;
  }
}

function load(file: string): Snapshot {
  const buf = readFileSync(file);
  const metaStart = find(buf, '"meta":');
  const metaEnd = buf.indexOf(',"node_count"', metaStart);
  if (metaEnd < 0) throw new Error('no node_count after the meta');
  const meta = JSON.parse(buf.toString('utf8', metaStart, metaEnd)) as {
    node_fields: string[];
    node_types: [string[]];
    edge_fields: string[];
    edge_types: [string[]];
  };
  return {
    nodeFields: meta.node_fields,
    nodeTypes: meta.node_types[0],
    edgeFields: meta.edge_fields,
    edgeTypes: meta.edge_types[0],
    nodes: numbers(buf, find(buf, '"nodes":[')),
    edges: numbers(buf, find(buf, '"edges":[')),
    strings: strings(buf, find(buf, '"strings":[')),
  };
}

interface Args {
  file: string;
  depth: number;
  top: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { file: '', depth: 6, top: 25 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--depth') a.depth = Number(argv[++i]);
    else if (argv[i] === '--top') a.top = Number(argv[++i]);
    else a.file = argv[i]!;
  }
  if (a.file === '') throw new Error('usage: heap-buffers.ts <file.heapsnapshot> [--depth N]');
  return a;
}

/** The snapshot's retainer graph, and how to name what is in it. */
function graph(s: Snapshot) {
  const NF = s.nodeFields.length;
  const EF = s.edgeFields.length;
  const fType = s.nodeFields.indexOf('type');
  const fName = s.nodeFields.indexOf('name');
  const fSize = s.nodeFields.indexOf('self_size');
  const fEdges = s.nodeFields.indexOf('edge_count');
  const eType = s.edgeFields.indexOf('type');
  const eName = s.edgeFields.indexOf('name_or_index');
  const eTo = s.edgeFields.indexOf('to_node');
  const nodeCount = s.nodes.length / NF;
  const edgeCount = s.edges.length / EF;
  const weak = s.edgeTypes.indexOf('weak');
  const elementType = s.edgeTypes.indexOf('element');
  const hiddenType = s.edgeTypes.indexOf('hidden');

  // Each edge's from-node, then retainers (reverse edges) in CSR form.
  const firstEdge = new Uint32Array(nodeCount + 1);
  for (let n = 0, e = 0; n < nodeCount; n++) {
    firstEdge[n] = e;
    e += s.nodes[n * NF + fEdges]!;
    firstEdge[n + 1] = e;
  }
  const retainerStart = new Uint32Array(nodeCount + 1);
  for (let e = 0; e < edgeCount; e++) retainerStart[s.edges[e * EF + eTo]! / NF + 1]!++;
  for (let n = 0; n < nodeCount; n++) retainerStart[n + 1]! += retainerStart[n]!;
  const retainerEdge = new Uint32Array(edgeCount);
  const edgeFrom = new Uint32Array(edgeCount);
  const fill = retainerStart.slice();
  for (let n = 0; n < nodeCount; n++)
    for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e++) {
      edgeFrom[e] = n;
      retainerEdge[fill[s.edges[e * EF + eTo]! / NF]!++] = e;
    }

  const name = (n: number) => s.strings[s.nodes[n * NF + fName]!] ?? '?';
  const type = (n: number) => s.nodeTypes[s.nodes[n * NF + fType]!] ?? '?';
  const edgeLabel = (e: number) => {
    const t = s.edges[e * EF + eType]!;
    const v = s.edges[e * EF + eName]!;
    return t === elementType || t === hiddenType ? `[${v}]` : `.${s.strings[v] ?? '?'}`;
  };
  /** Strong retainers of n: [from-node, edge]. */
  const retainers = (n: number): [number, number][] => {
    const out: [number, number][] = [];
    for (let i = retainerStart[n]!; i < retainerStart[n + 1]!; i++) {
      const e = retainerEdge[i]!;
      if (s.edges[e * EF + eType] !== weak) out.push([edgeFrom[e]!, e]);
    }
    return out;
  };
  return {
    nodeCount,
    name,
    type,
    size: (n: number) => s.nodes[n * NF + fSize]!,
    edgeLabel,
    retainers,
  };
}

type Graph = ReturnType<typeof graph>;

function label(g: Graph, n: number): string {
  const t = g.type(n);
  const nm = g.name(n).replace(/\s+/g, ' ').slice(0, 60);
  return t === 'object' || t === 'native' ? nm : `(${t}) ${nm}`;
}

/**
 * A chain from n upwards: at each step the first strong retainer not yet on the chain,
 * preferring objects over V8's internals (maps, system nodes).
 */
function chain(g: Graph, n: number, depth: number): string[] {
  const out: string[] = [];
  const seen = new Set<number>([n]);
  let at = n;
  for (let d = 0; d < depth; d++) {
    const rs = g.retainers(at).filter(([from]) => !seen.has(from));
    if (rs.length === 0) break;
    const pick =
      rs.find(([from]) => !/^system|^\(|Map$/.test(g.name(from)) && g.type(from) !== 'hidden') ??
      rs[0]!;
    const [from, e] = pick;
    out.push(`${label(g, from)}${g.edgeLabel(e)}${rs.length > 1 ? ` (+${rs.length - 1})` : ''}`);
    seen.add(from);
    at = from;
  }
  return out;
}

/** The views of a backing store (the ArrayBuffer retains it, views retain the ArrayBuffer). */
function viewsOf(g: Graph, store: number): number[] {
  const views: number[] = [];
  for (const [ab] of g.retainers(store)) {
    for (const [v] of g.retainers(ab)) views.push(v);
    if (views.length === 0) views.push(ab);
  }
  return views;
}

const CLASSES = [
  [0, 4 * 1024],
  [4 * 1024, 64 * 1024],
  [64 * 1024, MB],
  [MB, 16 * MB],
  [16 * MB, Infinity],
] as const;

function printClasses(stores: { bytes: number }[]): void {
  console.log('\nby size (count, MB):');
  for (const [lo, hi] of CLASSES) {
    const inClass = stores.filter((x) => x.bytes >= lo && x.bytes < hi);
    const mb = inClass.reduce((a, x) => a + x.bytes, 0) / MB;
    const kib = (b: number) => (b >= MB ? `${b / MB} MB` : `${b / 1024} KiB`);
    const range = `${kib(lo)}–${hi === Infinity ? '' : kib(hi)}`;
    console.log(
      `  ${range.padEnd(16)} ${String(inClass.length).padStart(8)}  ${mb.toFixed(1).padStart(8)}`,
    );
  }
}

/**
 * A store is counted once, under the distinct holders of its views (each view with the first
 * steps of its chain), so a big buffer pinned by a few small views shows who they are.
 */
function printOwners(g: Graph, stores: { node: number; bytes: number }[], a: Args): void {
  const byChain = new Map<string, { count: number; bytes: number }>();
  const short = Math.min(a.depth, 3);
  for (const { node, bytes } of stores) {
    const views = viewsOf(g, node);
    const holders = [
      ...new Set(views.map((v) => [label(g, v), ...chain(g, v, short)].join(' ← '))),
    ].sort();
    const more = holders.length > 3 ? ` | +${holders.length - 3} more` : '';
    const k = `${views.length} view(s): ${holders.slice(0, 3).join(' | ')}${more}`;
    const agg = byChain.get(k) ?? { count: 0, bytes: 0 };
    agg.count++;
    agg.bytes += bytes;
    byChain.set(k, agg);
  }
  console.log('\nowners (MB, stores, the views ← their retainers):');
  for (const [k, v] of [...byChain].sort((x, y) => y[1].bytes - x[1].bytes).slice(0, a.top))
    console.log(`  ${(v.bytes / MB).toFixed(2).padStart(8)} ${String(v.count).padStart(7)}  ${k}`);
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const g = graph(load(args.file));
  // Backing stores: V8 names them "system / JSArrayBufferData".
  const stores: { node: number; bytes: number }[] = [];
  for (let n = 0; n < g.nodeCount; n++)
    if (g.name(n).includes('JSArrayBufferData')) stores.push({ node: n, bytes: g.size(n) });
  const total = stores.reduce((a, x) => a + x.bytes, 0);
  console.log(
    `${args.file}: ${g.nodeCount} nodes, ${stores.length} ArrayBuffer backing stores, ${(total / MB).toFixed(1)} MB`,
  );
  printClasses(stores);
  printOwners(g, stores, args);
  console.log(`\nthe ${Math.min(args.top, stores.length)} largest stores:`);
  for (const { node, bytes } of stores.sort((x, y) => y.bytes - x.bytes).slice(0, args.top)) {
    const views = viewsOf(g, node);
    console.log(`  ${(bytes / MB).toFixed(2)} MB, ${views.length} view(s):`);
    for (const v of views.slice(0, 4))
      console.log(`      ${label(g, v)} ← ${chain(g, v, args.depth).join(' ← ')}`);
  }
}

main();
