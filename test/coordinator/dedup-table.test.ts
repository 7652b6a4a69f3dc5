/**
 * The compact request-id table (issue 19): what it shows — results, snapshot rows, their
 * order — is what it was given, whatever form it keeps them in.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DedupTable, compactKey, wholeKey } from '../../src/coordinator/dedup-table.ts';
import { canonical } from '../../src/coordinator/snapshot-codec.ts';
import { StorageCorruptError } from '../../src/shared/errors.ts';

describe('DedupTable', () => {
  it('keys round-trip for every kind and requestId (UUIDs packed to 17 characters)', () => {
    const kinds = fc.constantFrom('Begin', 'RegisterBranch', 'Other');
    const ids = fc.oneof(fc.string(), fc.uuid(), fc.constant(randomUUID()));
    fc.assert(
      fc.property(kinds, ids, (kind, id) => {
        expect(wholeKey(compactKey(kind, id))).toBe(`${kind}\n${id}`);
      }),
    );
    expect(compactKey('Begin', randomUUID())).toHaveLength(17);
    // An upper-case UUID is not the SDK's form: kept as it came, never confused with it.
    const id = randomUUID();
    expect(compactKey('Begin', id.toUpperCase())).not.toBe(compactKey('Begin', id));
  });

  it('packs exactly the lower-case UUIDs, as the regex-and-parseInt form did', () => {
    // The form before the one-pass packer: the reference.
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const reference = (tag: string, id: string): string => {
      if (!UUID.test(id)) return tag + id;
      const hex = id.replaceAll('-', '');
      const codes = [tag.toLowerCase().charCodeAt(0)];
      for (let i = 0; i < 16; i++) codes.push(parseInt(hex.slice(2 * i, 2 * i + 2), 16));
      return String.fromCharCode(...codes);
    };
    // Near-UUIDs: one character of a UUID replaced (a dash moved, upper case, a non-hex).
    const nearUuid = fc
      .tuple(fc.uuid(), fc.nat(35), fc.constantFrom('-', 'A', 'F', 'g', '0', 'f', ' ', 'é'))
      .map(([u, at, c]) => u.slice(0, at) + c + u.slice(at + 1));
    const ids = fc.oneof(fc.string(), fc.uuid(), nearUuid, fc.constant(randomUUID()));
    fc.assert(
      fc.property(fc.constantFrom('Begin', 'RegisterBranch'), ids, (kind, id) => {
        expect(compactKey(kind, id)).toBe(reference(kind === 'Begin' ? 'B' : 'R', id));
      }),
      { numRuns: 2_000 },
    );
  });

  it('answers results as given, and shows them oldest first as snapshot rows', () => {
    const table = new DedupTable();
    const begin = { xid: '10.0.0.1:8091:42', deadline: 61_000 };
    const branch = { branchId: '7' };
    const other = { xid: 'x', deadline: 1, extra: true };
    table.add('Begin', 'b1', begin, 1_000);
    table.add('RegisterBranch', 'r1', branch, 1_001);
    table.add('Begin', 'b2', other, 1_002);
    expect(table.get('Begin', 'b1')).toEqual(begin);
    expect(Object.isFrozen(table.get('Begin', 'b1'))).toBe(true);
    expect(table.get('RegisterBranch', 'r1')).toEqual(branch);
    expect(table.get('Begin', 'b2')).toBe(other);
    expect(table.get('RegisterBranch', 'b1')).toBeUndefined();
    expect(table.rows()).toEqual([
      ['Begin\nb1', begin, 1_000],
      ['RegisterBranch\nr1', branch, 1_001],
      ['Begin\nb2', other, 1_002],
    ]);
    expect(DedupTable.of(table.rows()).rows()).toEqual(table.rows());
  });

  it('forgets oldest first, grows past its first ring and shrinks back after a burst', () => {
    const table = new DedupTable();
    const n = 5_000;
    for (let i = 0; i < n; i++) table.add('RegisterBranch', randomUUID(), { branchId: `${i}` }, i);
    expect(table.size).toBe(n);
    expect(table.oldestAt()).toBe(0);
    expect(table.forgetUntil(n - 11)).toBe(n - 10);
    expect(table.size).toBe(10);
    expect(table.rows().map((r) => r[2])).toEqual(Array.from({ length: 10 }, (_, i) => n - 10 + i));
    for (let i = 0; i < 3_000; i++)
      table.add('Begin', `q${i}`, { xid: `x${i}`, deadline: i }, n + i);
    expect(table.get('Begin', 'q2999')).toEqual({ xid: 'x2999', deadline: 2_999 });
    expect(table.forgetUntil(Infinity)).toBe(3_010);
    expect(table.size).toBe(0);
    expect(table.oldestAt()).toBeUndefined();
  });

  it('finds every entry by its request after the ring wrapped, grew and halved (a model)', () => {
    // Bursts of adds and forgets move the oldest entry around the ring, so the ring grows
    // and halves with its head anywhere; every lookup must still find the right result.
    const step = fc.oneof(
      fc.record({ add: fc.integer({ min: 1, max: 1_500 }) }),
      fc.record({ forget: fc.integer({ min: 0, max: 1_500 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 12 }), (steps) => {
        const table = new DedupTable();
        const model: Array<{ id: string; at: number }> = [];
        let next = 0;
        // Half the requestIds are the SDK's (lower-case UUIDs: the packed keys' index over
        // typed arrays), half are not (the other keys' map); UUIDs that differ in one word.
        const idOf = (n: number) =>
          n % 2 === 0
            ? `r${n}`
            : `${(n % 7).toString(16).padStart(8, '0')}-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
        for (const s of steps) {
          if ('add' in s) {
            for (let i = 0; i < s.add; i++, next++) {
              table.add('RegisterBranch', idOf(next), { branchId: `${next}` }, next);
              model.push({ id: idOf(next), at: next });
            }
          } else {
            const horizon = (model[0]?.at ?? next) + s.forget - 1;
            const gone = model.findIndex((e) => e.at > horizon);
            const n = gone < 0 ? model.length : gone;
            expect(table.forgetUntil(horizon)).toBe(n);
            for (const e of model.splice(0, n))
              expect(table.get('RegisterBranch', e.id)).toBeUndefined();
          }
          expect(table.size).toBe(model.length);
          for (const e of model)
            expect(table.get('RegisterBranch', e.id)).toEqual({ branchId: `${e.at}` });
        }
        expect(table.rows().map((r) => r[2])).toEqual(model.map((e) => e.at));
      }),
      { numRuns: 60 },
    );
  });

  it('a capture reads the entries as of its point while entries are added and forgotten (a model)', () => {
    // Between two reads of a slice: add n entries, or forget up to a time.
    const op = fc.oneof(fc.record({ add: fc.nat(1_500) }), fc.record({ forget: fc.nat(4_000) }));
    fc.assert(
      fc.property(
        fc.nat(3_000),
        fc.array(op, { maxLength: 12 }),
        fc.integer({ min: 1, max: 900 }),
        (before, ops, slice) => {
          const table = new DedupTable();
          let t = 0;
          const add = (n: number) => {
            for (let i = 0; i < n; i++, t++) {
              if (t % 3 === 0)
                table.add(
                  'Begin',
                  randomUUID(),
                  Object.freeze({ xid: `x:${t}`, deadline: t + 0.5 }),
                  t,
                );
              else if (t % 3 === 1)
                table.add('RegisterBranch', `r-${t}`, Object.freeze({ branchId: `${t}` }), t);
              else table.add('Other', `o-${t}`, { z: t, a: [t, { y: 1, b: 2 }] }, t);
            }
          };
          add(before);
          const expected = table.rows().map(([key, value, at]) => [key, canonical(value), at]);
          const capture = table.capture();
          expect(capture.size).toBe(expected.length);
          const got: unknown[] = [];
          let o = 0;
          for (let from = 0; from < capture.size; from += slice) {
            got.push(...capture.rowsBetween(from, from + slice));
            const next = ops[o++ % Math.max(1, ops.length)];
            if (next && 'add' in next) add(next.add);
            else if (next) table.forgetUntil(next.forget);
          }
          expect(got).toEqual(expected);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuses a snapshot that remembers one request twice, or a malformed row', () => {
    expect(() =>
      DedupTable.of([
        ['Begin\nb1', { branchId: '1' }, 1],
        ['Begin\nb1', { branchId: '1' }, 2],
      ]),
    ).toThrow(StorageCorruptError);
    expect(() => DedupTable.of([[7 as unknown as string, {}, 1]])).toThrow(StorageCorruptError);
  });
});
