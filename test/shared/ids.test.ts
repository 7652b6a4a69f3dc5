import { describe, expect, it } from 'vitest';
import { MAX_WORKER_ID, createSnowflakeIds } from '../../src/coordinator/ids.ts';
import { BadRequestError } from '../../src/shared/errors.ts';
import { formatXid, isNodeId, parseXid, requireNodeId, requireXid } from '../../src/shared/ids.ts';

describe('xid', () => {
  it('formats and parses <host>:<port>:<transactionId>, IPv6 hosts included', () => {
    expect(parseXid(formatXid('10.0.0.1', 8091, '123'))).toEqual({
      host: '10.0.0.1',
      port: 8091,
      transactionId: '123',
    });
    expect(parseXid('::1:8091:77')).toEqual({ host: '::1', port: 8091, transactionId: '77' });
  });

  it.each([
    [''],
    ['nocolons'],
    ['h:8091'],
    ['h:0:1'],
    ['h:70000:1'],
    ['h:80a:1'],
    ['h:8091:x1'],
    [':8091:1'],
    ['h h:8091:1'],
    [`${'h'.repeat(130)}:1:1`],
    [42],
  ])('refuses %j with a BadRequestError', (xid) => {
    expect(parseXid(xid)).toBeNull();
    expect(() => requireXid(xid)).toThrow(BadRequestError);
  });
});

describe('node id', () => {
  it.each([['n1'], ['node-1'], ['a'], ['tc_2.east'], ['9'], ['x'.repeat(64)]])(
    'accepts %j and hands it back branded',
    (id) => {
      expect(isNodeId(id)).toBe(true);
      expect(requireNodeId(id)).toBe(id);
    },
  );

  it.each([
    [''],
    ['x'.repeat(65)],
    ['-n1'],
    ['.n1'],
    ['_n1'],
    ['n 1'],
    ['n1:8091'],
    ['n1/2'],
    ['n1\n'],
    ['nœud'],
    [42],
    [null],
    [undefined],
    [{ id: 'n1' }],
    [['n1']],
  ])('refuses %j with a BadRequestError naming the field', (id) => {
    expect(isNodeId(id)).toBe(false);
    expect(() => requireNodeId(id, 'members[0].nodeId')).toThrow(BadRequestError);
    expect(() => requireNodeId(id, 'members[0].nodeId')).toThrow(/^members\[0\]\.nodeId must be/);
  });
});

describe('snowflake ids', () => {
  it('are unique and increasing through a burst larger than one millisecond holds, and through a clock step back', () => {
    let now = 1_750_000_000_000;
    const ids = createSnowflakeIds({ workerId: 7, clock: { now: () => now } });
    const seen: bigint[] = [];
    for (let i = 0; i < 10_000; i++) seen.push(BigInt(ids.nextTransactionId()));
    now -= 5_000; // NTP stepped the clock back
    for (let i = 0; i < 100; i++) seen.push(BigInt(ids.nextBranchId()));
    for (let i = 1; i < seen.length; i++) expect(seen[i]! > seen[i - 1]!).toBe(true);
    expect(seen.every((id) => id < 2n ** 63n)).toBe(true);
  });

  it('differ between workers at the same instant', () => {
    const clock = { now: () => 1_750_000_000_000 };
    const a = createSnowflakeIds({ workerId: 1, clock });
    const b = createSnowflakeIds({ workerId: 2, clock });
    expect(a.nextTransactionId()).not.toBe(b.nextTransactionId());
    expect(() => createSnowflakeIds({ workerId: MAX_WORKER_ID + 1, clock })).toThrow(RangeError);
  });
});
