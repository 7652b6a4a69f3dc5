/**
 * An opt-in latency trace for the hot path (issue 12): with CONCORD_LATENCY_TRACE=<prefix>
 * set, every process that loads this module (the TC nodes, the bench's client) records
 * `(monotonic ns, stage, number)` at the trace points of the client SDK, the TC edge, the
 * Raft store, the driver and the peer transport, and appends them to
 * `<prefix>.<pid>.trace` (every second and at exit). The clock is `process.hrtime`, which
 * is CLOCK_MONOTONIC: one clock for every process on the machine, so the files of the
 * three nodes and the client merge into one timeline (bench/timeline.ts).
 *
 * Unset (the default), `latencyTrace` is null and a trace point costs one comparison:
 * `latencyTrace?.('stage', n)`.
 */
import { appendFileSync } from 'node:fs';

/** Records one stage, with a number that identifies what it is about (an index, a call id). */
export type LatencyTracePoint = (stage: string, n?: number) => void;

/** Events held in memory before a write, whichever comes first with the 1 s flush. */
const MAX_BUFFERED_EVENTS = 100_000;
const FLUSH_EVERY_MS = 1_000;

function makeTracer(): LatencyTracePoint | null {
  const prefix = process.env.CONCORD_LATENCY_TRACE;
  if (prefix === undefined || prefix === '') return null;
  const file = `${prefix}.${process.pid}.trace`;
  let times: bigint[] = [];
  let stages: string[] = [];
  let numbers: number[] = [];
  const flush = (): void => {
    if (times.length === 0) return;
    let out = '';
    for (let i = 0; i < times.length; i++) out += `${times[i]} ${stages[i]} ${numbers[i]}\n`;
    times = [];
    stages = [];
    numbers = [];
    try {
      appendFileSync(file, out);
    } catch {
      // A diagnostic: never take the process down.
    }
  };
  setInterval(flush, FLUSH_EVERY_MS).unref();
  process.on('exit', flush);
  return (stage, n = 0) => {
    times.push(process.hrtime.bigint());
    stages.push(stage);
    numbers.push(n);
    if (times.length >= MAX_BUFFERED_EVENTS) flush();
  };
}

export const latencyTrace: LatencyTracePoint | null = makeTracer();

/** Names this process in its trace (a node id, "client"); once, at start. */
export function latencyTraceLabel(label: string): void {
  if (latencyTrace === null) return;
  // The label rides on the stage of a marker event: `label:<name>`.
  latencyTrace(`label:${label}`, 0);
}
