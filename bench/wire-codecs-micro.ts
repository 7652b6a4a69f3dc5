/**
 * Micro-benchmark of the precompiled codecs against @grpc/proto-loader's reflection, per
 * message of the hot streams: `npx tsx bench/wire-codecs-micro.ts`. Prints µs per message
 * (encode + decode) for a CallBatch and a ResultBatch of 64 begins/commits, a TcToRm
 * phase-two batch of 16 and a Raft MessageBatch of 8 messages. CPU-bound, one core.
 */
import * as protoLoader from '@grpc/proto-loader';
import { RAFT_PROTO_PATH } from '../src/raft/transport/grpc-transport.ts';
import { CODECS as RAFT } from '../src/raft/transport/raft-codecs.gen.ts';
import { CODECS as TC } from '../src/shared/tc-codecs.gen.ts';
import { TC_PROTO_LOADER_OPTIONS, TC_PROTO_PATH } from '../src/shared/tc-wire.ts';

interface Side {
  encode(m: unknown): Buffer;
  decode(b: Buffer): unknown;
}

function loaderSides(path: string, options: protoLoader.Options, service: string) {
  const def = protoLoader.loadSync(path, options)[service] as protoLoader.ServiceDefinition;
  const sides: Record<string, Side> = {};
  for (const m of Object.values(def)) {
    const req = (m.requestType.type as { name: string }).name;
    const res = (m.responseType.type as { name: string }).name;
    sides[req] = { encode: m.requestSerialize, decode: m.requestDeserialize };
    sides[res] = { encode: m.responseSerialize, decode: m.responseDeserialize };
  }
  return sides;
}

const tcLoader = loaderSides(
  TC_PROTO_PATH,
  TC_PROTO_LOADER_OPTIONS,
  'concord.tc.v1.TransactionCoordinator',
);
const raftLoader = loaderSides(
  RAFT_PROTO_PATH,
  { keepCase: false, longs: Number, defaults: true },
  'concord.raft.v1.RaftTransport',
);

const xid = (i: number) => `127.0.0.1:8091:${1_000_000 + i}`;
const samples: [string, string, unknown, Record<string, Side>, Record<string, Side>][] = [
  [
    'CallBatch (64: 32 begin, 32 commit)',
    'CallBatch',
    {
      calls: Array.from({ length: 64 }, (_, i) =>
        i % 2 === 0
          ? {
              id: i,
              begin: {
                name: 'bench',
                timeoutMs: 60000,
                applicationId: 'bench-app',
                transactionServiceGroup: 'default',
                requestId: `tm-1-${i}`,
              },
            }
          : { id: i, commit: { xid: xid(i) } },
      ),
    },
    tcLoader,
    TC,
  ],
  [
    'ResultBatch (64)',
    'ResultBatch',
    {
      results: Array.from({ length: 64 }, (_, i) =>
        i % 2 === 0
          ? { id: i, begin: { resultCode: 'RESULT_CODE_OK', xid: xid(i) } }
          : { id: i, commit: { resultCode: 'RESULT_CODE_OK', globalStatus: 9 } },
      ),
    },
    tcLoader,
    TC,
  ],
  [
    'TcToRm phase_two_batch (16)',
    'TcToRm',
    {
      phaseTwoBatch: {
        commits: Array.from({ length: 16 }, (_, i) => ({
          requestId: `node1-${i}`,
          xid: xid(i),
          branchId: String(9_000_000 + i),
          branchType: 0,
          resourceId: 'jdbc:postgresql://db/orders',
          applicationData: '',
          applicationId: 'bench-app',
        })),
        rollbacks: [],
      },
    },
    tcLoader,
    TC,
  ],
  [
    'Raft MessageBatch (8 × 200 B)',
    'MessageBatch',
    {
      from: 'node1',
      to: 'node2',
      messages: Array.from({ length: 8 }, () => Buffer.alloc(200, 7)),
      clusterId: 'c-1',
      fromUid: 'u-1',
    },
    raftLoader,
    RAFT,
  ],
];

function time(side: Side, message: unknown): number {
  const rounds = 20_000;
  let sink = 0;
  for (let i = 0; i < 2_000; i++) sink += side.encode(side.decode(side.encode(message))).length;
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) sink += side.decode(side.encode(message)) ? 1 : 0;
  const ns = Number(process.hrtime.bigint() - start);
  if (sink < 0) console.log(sink);
  return ns / rounds / 1000;
}

for (const [label, type, message, loader, ours] of samples) {
  const before = time(loader[type]!, message);
  const after = time(ours[type]!, message);
  console.log(
    `[bench codecs] ${label}: loader ${before.toFixed(1)} µs, precompiled ${after.toFixed(1)} µs ` +
      `(encode + decode; ${(before / after).toFixed(1)}×)`,
  );
}
