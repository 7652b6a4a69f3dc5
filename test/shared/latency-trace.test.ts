/**
 * The opt-in latency trace (src/shared/latency-trace.ts): off unless CONCORD_LATENCY_TRACE
 * is set; with it, a process appends its events to `<prefix>.<pid>.trace` on the shared
 * monotonic clock, in the form bench/timeline.ts reads.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { latencyTrace } from '../../src/shared/latency-trace.ts';

const REPO = resolve(import.meta.dirname, '../..');
let dir = '';
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = '';
});

describe('latency trace', () => {
  it('is off (null) unless CONCORD_LATENCY_TRACE is set', () => {
    expect(process.env.CONCORD_LATENCY_TRACE ?? '').toBe('');
    expect(latencyTrace).toBeNull();
  });

  it('writes each event with the monotonic time, the stage and its number, named by its label', () => {
    dir = mkdtempSync(join(tmpdir(), 'concord-trace-'));
    const prefix = join(dir, 'run');
    const before = process.hrtime.bigint();
    const child = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        `import('./src/shared/latency-trace.ts').then((m) => {
           m.latencyTraceLabel('node7');
           m.latencyTrace('d.propose', 41);
           m.latencyTrace('d.apply', 41);
         });`,
      ],
      { cwd: REPO, env: { ...process.env, CONCORD_LATENCY_TRACE: prefix }, encoding: 'utf8' },
    );
    const after = process.hrtime.bigint();
    expect(child.status, child.stderr).toBe(0);
    const lines = readFileSync(`${prefix}.${child.pid}.trace`, 'utf8').trim().split('\n');
    expect(lines.map((l) => l.split(' ').slice(1).join(' '))).toEqual([
      'label:node7 0',
      'd.propose 41',
      'd.apply 41',
    ]);
    const times = lines.map((l) => BigInt(l.split(' ')[0]!));
    // One clock for every process: the child's times fall between ours.
    for (const t of times) {
      expect(t > before).toBe(true);
      expect(t < after).toBe(true);
    }
    expect(times[1]! <= times[2]!).toBe(true);
  });
});
