/**
 * The SDK's RM channel (src/client/tc/rm-channel.ts) against a TC it must not trust, over
 * real gRPC: a scripted TransactionCoordinator server in this process speaks proto/tc.proto's
 * RmChannel. A TC that did not announce batches (one from before them) gets one result per
 * message; a TC that did gets the results of one turn in one BranchResultBatch, one result per
 * request, each with its own request's outcome; a malformed phase-two batch (a request id
 * twice or missing, empty, over its bound) is refused whole — no handler runs — and the RM
 * ends that stream and registers again.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { TcConnection } from '../../src/client/tc/connection.ts';
import { RmChannel } from '../../src/client/tc/rm-channel.ts';
import type { PhaseTwoRequest } from '../../src/client/tc/port.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { MAX_RM_BATCH_ENTRIES } from '../../src/shared/rm-batch.ts';
import { branchStatusToCode } from '../../src/shared/tc-codes.ts';
import { tcServiceConstructor } from '../../src/shared/tc-wire.ts';
import { waitFor } from '../support/wait.ts';

interface Result {
  requestId: string;
  branchStatus: number;
  error?: { code: string } | null;
}
interface RmMessage {
  register?: { batches: boolean };
  branchResult?: Result;
  branchResults?: { results: Result[] };
}
type ServerStream = grpc.ServerDuplexStream<RmMessage, unknown>;

/** The scripted TC: every RmChannel stream it took, and what came on each. */
interface Session {
  stream: ServerStream;
  messages: RmMessage[];
  ended: boolean;
}

let server: grpc.Server;
let port = 0;
let tcBatches = true;
const sessions: Session[] = [];
let rm: RmChannel | null = null;
let conn: TcConnection | null = null;

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(tcServiceConstructor().service, {
    RmChannel: (stream: ServerStream) => {
      const s: Session = { stream, messages: [], ended: false };
      sessions.push(s);
      stream.on('data', (m: RmMessage) => {
        s.messages.push(m);
        if (m.register)
          stream.write({
            registered: {
              resultCode: 'RESULT_CODE_OK',
              heartbeatIntervalMs: 5_000,
              nodeId: 'scripted',
              batches: tcBatches,
            },
          });
      });
      const end = () => (s.ended = true);
      stream.on('end', end);
      stream.on('cancelled', end);
      stream.on('error', end);
    },
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

afterEach(async () => {
  await rm?.close();
  conn?.close();
  rm = null;
  sessions.length = 0;
});

/** A real RmChannel to the scripted TC; its handler records calls and answers `status`. */
async function connect(status: (r: PhaseTwoRequest) => string) {
  const calls: PhaseTwoRequest[] = [];
  const target = { host: '127.0.0.1', port };
  conn = new TcConnection(target);
  const c = conn;
  rm = new RmChannel(
    {
      logger: silentLogger(),
      leader: async () => ({ nodeId: 'scripted', transaction: target }),
      connection: () => c,
      onLeaderChange: () => () => {},
      refresh: () => {},
      random: Math.random,
    },
    {
      applicationId: 'app',
      transactionServiceGroup: 'default',
      clientId: 'app:rm',
      resourceIds: () => ['db'],
      handler: async (r) => {
        calls.push(r);
        return status(r) as never;
      },
    },
  ).start();
  await rm.ready(10_000);
  const session = sessions.at(-1)!;
  // The SDK says it reads batches.
  expect(session.messages[0]!.register!.batches).toBe(true);
  return { calls, session, rm };
}

function request(i: number, over: Partial<Record<string, unknown>> = {}) {
  return {
    requestId: `r-${i}`,
    xid: `127.0.0.1:8091:${1000 + i}`,
    branchId: String(5000 + i),
    branchType: 0,
    resourceId: 'db',
    applicationData: '',
    applicationId: 'app',
    ...over,
  };
}

/** The results the scripted TC received, and the messages they came in. */
function resultsOf(s: Session): { results: Result[]; messages: number; batches: number } {
  const results: Result[] = [];
  let messages = 0;
  let batches = 0;
  for (const m of s.messages) {
    if (m.branchResult) (results.push(m.branchResult), messages++);
    if (m.branchResults) (results.push(...m.branchResults.results), messages++, batches++);
  }
  return { results, messages, batches };
}

const statusOf = (r: PhaseTwoRequest) =>
  r.kind === 'rollback'
    ? 'PhaseTwo_Rollbacked'
    : Number(r.branchId) % 2 === 0
      ? 'PhaseTwo_Committed'
      : 'PhaseTwo_CommitFailed_Retryable';

describe('the SDK RM and a TC from before batches', () => {
  it('answers one result per message (the TC would not read a batch)', async () => {
    tcBatches = false;
    const { calls, session } = await connect(statusOf);
    for (let i = 0; i < 20; i++) session.stream.write({ branchCommit: request(i) });
    await waitFor('20 results', () => (resultsOf(session).results.length >= 20 ? true : undefined));
    const got = resultsOf(session);
    expect(calls).toHaveLength(20);
    expect(got.batches).toBe(0);
    expect(got.messages).toBe(20);
  });
});

describe('the SDK RM and a TC that reads batches', () => {
  it('runs every request of a batch and answers in fewer messages, one result per request', async () => {
    tcBatches = true;
    const { calls, session, rm: channel } = await connect(statusOf);
    const commits = Array.from({ length: 30 }, (_, i) => request(i));
    const rollbacks = Array.from({ length: 10 }, (_, i) => request(100 + i));
    session.stream.write({ phaseTwoBatch: { commits, rollbacks } });
    await waitFor('40 results', () => (resultsOf(session).results.length >= 40 ? true : undefined));
    const got = resultsOf(session);
    expect(calls).toHaveLength(40);
    expect(got.results).toHaveLength(40);
    expect(got.messages).toBeLessThan(40);
    expect(got.batches).toBeGreaterThan(0);
    // Each result answers its own request, once, with that request's outcome.
    const byId = new Map(got.results.map((r) => [r.requestId, r]));
    expect(byId.size).toBe(40);
    for (const r of commits)
      expect(byId.get(r.requestId)!.branchStatus).toBe(
        branchStatusToCode(
          Number(r.branchId) % 2 === 0 ? 'PhaseTwo_Committed' : 'PhaseTwo_CommitFailed_Retryable',
        ),
      );
    for (const r of rollbacks)
      expect(byId.get(r.requestId)!.branchStatus).toBe(branchStatusToCode('PhaseTwo_Rollbacked'));
    expect(channel.stats()).toMatchObject({ requests: 40, requestMessages: 1, results: 40 });
  });

  const malformed: Array<[string, () => unknown]> = [
    [
      'a request id twice',
      () => ({ commits: [request(1), request(2), request(1)], rollbacks: [] }),
    ],
    [
      'a request without a request id',
      () => ({ commits: [request(1), request(2, { requestId: '' })], rollbacks: [] }),
    ],
    [
      `more than ${MAX_RM_BATCH_ENTRIES} requests`,
      () => ({
        commits: Array.from({ length: MAX_RM_BATCH_ENTRIES + 1 }, (_, i) => request(i)),
        rollbacks: [],
      }),
    ],
    ['no request at all', () => ({ commits: [], rollbacks: [] })],
  ];

  it.each(malformed)(
    'refuses a malformed batch whole (%s): no handler runs, the stream ends, the RM registers again',
    async (_name, batch) => {
      tcBatches = true;
      const { calls, session, rm: channel } = await connect(statusOf);
      session.stream.write({ phaseTwoBatch: batch() });
      await waitFor('the RM ended the stream', () => (session.ended ? true : undefined));
      await waitFor('the RM registered again', () => (sessions.length >= 2 ? true : undefined));
      expect(calls).toHaveLength(0);
      expect(resultsOf(session).results).toHaveLength(0);
      expect(channel.stats().refusedBatches).toBe(1);
      // The new stream works: a good batch runs.
      await channel.ready(10_000);
      const next = sessions.at(-1)!;
      next.stream.write({ phaseTwoBatch: { commits: [request(7), request(8)], rollbacks: [] } });
      await waitFor('2 results', () => (resultsOf(next).results.length >= 2 ? true : undefined));
      expect(calls).toHaveLength(2);
    },
  );
});
