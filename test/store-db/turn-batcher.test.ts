/**
 * The batcher behind PostgreSQL's batched statements (src/store/db/batch-pg.ts): one batch
 * per event-loop turn, at most `maxInFlight` at once, and while every slot is busy the
 * following turns gather into one batch. Pure logic: `run` is a function the test answers.
 */
import { describe, expect, it } from 'vitest';
import { TurnBatcher } from '../../src/store/db/batch-pg.ts';

const turn = () => new Promise<void>((r) => setImmediate(r));

function world(maxInFlight: number, max = 128) {
  const runs: { items: string[]; answer: () => void; fail: (err: Error) => void }[] = [];
  const batcher = new TurnBatcher<string, string>(
    (items) =>
      new Promise<string[]>((resolve, reject) => {
        runs.push({
          items,
          answer: () => resolve(items.map((i) => `done ${i}`)),
          fail: reject,
        });
      }),
    (item) => item.split('#')[0]!,
    max,
    maxInFlight,
  );
  return { runs, batcher };
}

describe('the turn batcher', () => {
  it('runs one batch per turn while a slot is free, and gathers the following turns while none is', async () => {
    const { runs, batcher } = world(2);
    const answers: Promise<string>[] = [];
    answers.push(batcher.add('a'), batcher.add('b'));
    await turn();
    answers.push(batcher.add('c'));
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['a', 'b'], ['c']]);
    // Both slots busy: three turns' commands wait, together.
    answers.push(batcher.add('d'));
    await turn();
    answers.push(batcher.add('e'), batcher.add('f'));
    await turn();
    answers.push(batcher.add('g'));
    await turn();
    expect(runs).toHaveLength(2);
    runs[1]!.answer();
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['a', 'b'], ['c'], ['d', 'e', 'f', 'g']]);
    runs[0]!.answer();
    runs[2]!.answer();
    expect(await Promise.all(answers)).toEqual(
      ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((i) => `done ${i}`),
    );
    expect(batcher.stats).toEqual({ batches: 3, commands: 7 });
  });

  it('never puts two items of one key in a batch, and keeps their order across batches', async () => {
    const { runs, batcher } = world(1);
    const answers = [batcher.add('x#1'), batcher.add('y'), batcher.add('x#2'), batcher.add('x#3')];
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['x#1', 'y']]);
    runs[0]!.answer();
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['x#1', 'y'], ['x#2']]);
    runs[1]!.answer();
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['x#1', 'y'], ['x#2'], ['x#3']]);
    runs[2]!.answer();
    expect(await Promise.all(answers)).toEqual(['done x#1', 'done y', 'done x#2', 'done x#3']);
  });

  it('cuts a batch at its size limit, and a failed batch fails its items only', async () => {
    const { runs, batcher } = world(2, 2);
    const answers = ['a', 'b', 'c'].map((i) => batcher.add(i).catch((err: Error) => err.message));
    await turn();
    expect(runs.map((r) => r.items)).toEqual([['a', 'b'], ['c']]);
    runs[0]!.fail(new Error('deadlock'));
    runs[1]!.answer();
    expect(await Promise.all(answers)).toEqual(['deadlock', 'deadlock', 'done c']);
    // The slots are free again.
    const next = batcher.add('d');
    await turn();
    runs[2]!.answer();
    expect(await next).toBe('done d');
  });
});
