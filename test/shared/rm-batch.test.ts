/**
 * The RM channel's batch bounds (src/shared/rm-batch.ts): what a sender packs into one message
 * is what a receiver accepts, in count and in estimated bytes, and a batch past either bound,
 * empty, or with a request id missing or twice is refused whole with MalformedBatchError.
 */
import { describe, expect, it } from 'vitest';
import {
  MAX_RM_BATCH_BYTES,
  MAX_RM_BATCH_ENTRIES,
  MalformedBatchError,
  batchRuns,
  checkPhaseTwoBatch,
  checkResultBatch,
  rmRequestBytes,
  rmResultBytes,
} from '../../src/shared/rm-batch.ts';
import { BadRequestError } from '../../src/shared/errors.ts';
import { MAX_APPLICATION_DATA_BYTES } from '../../src/shared/protocol-limits.ts';
import {
  MAX_RM_MESSAGE_BYTES,
  TC_PROTO_PATH,
  type PhaseTwoRequestWire,
} from '../../src/shared/tc-wire.ts';
import protobuf from 'protobufjs';

const proto = protobuf.loadSync(TC_PROTO_PATH);
/** Bytes of `value` encoded as the proto message `type` (what travels on the wire). */
function encoded(type: string, value: object): number {
  const t = proto.lookupType(`concord.tc.v1.${type}`);
  return t.encode(t.fromObject(value)).finish().length;
}

function request(i: number, applicationData = ''): PhaseTwoRequestWire {
  return {
    requestId: `node1-${i}`,
    xid: `127.0.0.1:8091:${1_000_000 + i}`,
    branchId: String(9_000_000 + i),
    branchType: 0,
    resourceId: 'jdbc:postgresql://db/orders',
    applicationData,
    applicationId: 'orders',
  };
}

describe('batchRuns', () => {
  it('packs small requests 256 to a message, in order, each once', () => {
    const all = Array.from({ length: 1000 }, (_, i) => request(i));
    const runs = [...batchRuns(all, rmRequestBytes)];
    expect(runs.map((r) => r.length)).toEqual([256, 256, 256, 232]);
    expect(runs.flat()).toEqual(all);
    for (const run of runs)
      expect(checkPhaseTwoBatch({ commits: run, rollbacks: [] })).toHaveLength(run.length);
  });

  it('packs large requests by bytes, and the receiver accepts every run', () => {
    const data = 'é'.repeat(MAX_APPLICATION_DATA_BYTES / 2);
    const all = Array.from({ length: 300 }, (_, i) => request(i, data));
    const runs = [...batchRuns(all, rmRequestBytes)];
    expect(runs.length).toBeGreaterThan(2);
    expect(runs.flat()).toEqual(all);
    for (const run of runs) {
      expect(run.reduce((n, r) => n + rmRequestBytes(r), 0)).toBeLessThanOrEqual(
        MAX_RM_BATCH_BYTES,
      );
      // The estimate bounds the real encoding from above.
      expect(encoded('PhaseTwoBatch', { commits: [], rollbacks: run })).toBeLessThanOrEqual(
        MAX_RM_BATCH_BYTES,
      );
      expect(() => checkPhaseTwoBatch({ commits: [], rollbacks: run })).not.toThrow();
    }
  });

  it('bounds results with the largest messages the same way', () => {
    const message = 'x'.repeat(MAX_RM_MESSAGE_BYTES);
    const all = Array.from({ length: 600 }, (_, i) => ({
      requestId: `node1-${i}`,
      branchStatus: 7,
      message,
      error: { code: 'ERROR_CODE_UNAVAILABLE' as const, message, retryable: true },
    }));
    const runs = [...batchRuns(all, rmResultBytes)];
    expect(runs.flat()).toEqual(all);
    for (const run of runs) {
      expect(checkResultBatch({ results: run })).toHaveLength(run.length);
      expect(encoded('BranchResultBatch', { results: run })).toBeLessThanOrEqual(
        MAX_RM_BATCH_BYTES,
      );
    }
  });
});

describe('a peer batch that is refused whole', () => {
  const cases: Array<[string, () => unknown]> = [
    ['empty', () => ({ commits: [], rollbacks: [] })],
    ['absent', () => undefined],
    [
      `over ${MAX_RM_BATCH_ENTRIES} requests`,
      () => ({
        commits: Array.from({ length: MAX_RM_BATCH_ENTRIES }, (_, i) => request(i)),
        rollbacks: [request(10_000)],
      }),
    ],
    [
      'over the byte bound',
      () => ({
        commits: Array.from({ length: 100 }, (_, i) =>
          request(i, 'é'.repeat(MAX_APPLICATION_DATA_BYTES / 2)),
        ),
        rollbacks: [],
      }),
    ],
    [
      'a request id twice (across the lists)',
      () => ({ commits: [request(1)], rollbacks: [request(1)] }),
    ],
    ['an empty request id', () => ({ commits: [{ ...request(1), requestId: '' }], rollbacks: [] })],
    [
      'a request id too long',
      () => ({ commits: [{ ...request(1), requestId: 'r'.repeat(129) }], rollbacks: [] }),
    ],
  ];
  it.each(cases)('phase-two batch: %s', (_name, make) => {
    const err = (() => {
      try {
        checkPhaseTwoBatch(make() as never);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(MalformedBatchError);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as MalformedBatchError).name).toBe('MalformedBatchError');
    expect((err as MalformedBatchError).code).toBe('BAD_REQUEST');
  });

  it.each([
    ['empty', { results: [] }],
    [
      'a request id twice',
      {
        results: [
          { requestId: 'a', branchStatus: 5 },
          { requestId: 'a', branchStatus: 5 },
        ],
      },
    ],
    ['no request id', { results: [{ requestId: '', branchStatus: 5 }] }],
    [
      `over ${MAX_RM_BATCH_ENTRIES} results`,
      {
        results: Array.from({ length: MAX_RM_BATCH_ENTRIES + 1 }, (_, i) => ({
          requestId: `r${i}`,
          branchStatus: 5,
        })),
      },
    ],
  ])('result batch: %s', (_name, batch) => {
    expect(() => checkResultBatch(batch)).toThrow(MalformedBatchError);
  });
});
