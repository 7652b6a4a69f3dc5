/**
 * Backpressure on the multiplexed `Calls` stream (issue 14): a client that keeps sending
 * calls but never reads its results must not make the node execute (and buffer the results
 * of) everything it sends. The node stops reading the stream's calls while its results do
 * not drain; once the client reads again, every call is answered. A real three-node cluster
 * and a raw gRPC client that pauses its side of the stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestCluster, rawClient, waitFor, type RawClient, type TestNode } from './helpers.ts';
import { nodeMetric } from '../support/node-http.ts';

const BATCHES = 150;
const CALLS_PER_BATCH = 1_024;
const TOTAL = BATCHES * CALLS_PER_BATCH;

let cluster: TestCluster;
let client: RawClient | null = null;

/** One metric's value (summed over its label sets) from a node's /metrics. */
const metric = (n: TestNode, name: string, labels = '') => nodeMetric(n.http, name, labels);

const getStatusCalls = (n: TestNode) => metric(n, 'concord_tc_calls_total', 'method="getStatus"');

beforeAll(async () => {
  cluster = await TestCluster.start('backpressure');
}, 90_000);

afterAll(async () => {
  client?.close();
  await cluster?.stop();
}, 30_000);

describe('a client that does not read its results', () => {
  it('makes the node stop reading its calls; once it reads, every call is answered', async () => {
    const leader = await cluster.leader();
    client = rawClient(leader.tc);
    const before = await getStatusCalls(leader);
    const stream = client.Calls();
    let received = 0;
    stream.on('data', (b: { results: unknown[] }) => (received += b.results.length));
    // Not reading: the results pile up on the node's side of the stream.
    stream.on('error', () => undefined);
    stream.pause();
    const xid = '127.0.0.1:1:1';
    for (let b = 0; b < BATCHES; b++) {
      const calls = [];
      for (let i = 0; i < CALLS_PER_BATCH; i++)
        calls.push({ id: b * CALLS_PER_BATCH + i + 1, getStatus: { xid } });
      // An attacker ignores write()'s answer: its own memory is its own problem.
      stream.write({ calls });
    }

    // The node executes calls until the stream's write buffer is full, then stops reading.
    let last = -1;
    const plateau = await waitFor(
      'the node to stop executing the unread stream’s calls',
      async () => {
        const now = (await getStatusCalls(leader)) - before;
        const paused = (await metric(leader, 'concord_tc_call_streams_paused')) === 1;
        const settled = paused && now === last && now > 0;
        last = now;
        await sleep(settled ? 0 : 700);
        return settled ? now : undefined;
      },
      60_000,
      300,
    );
    // Far from everything sent: what it holds is bounded by its buffers, not by the client.
    expect(plateau).toBeLessThan(TOTAL / 3);

    // Reading again drains the node, which reads the rest: every call is answered.
    stream.resume();
    await waitFor('every call answered', () => (received >= TOTAL ? true : undefined), 120_000);
    expect(received).toBe(TOTAL);
    // (Past the in-flight bound a call is answered UNAVAILABLE without running: not counted.)
    expect((await getStatusCalls(leader)) - before).toBeLessThanOrEqual(TOTAL);
    expect(await metric(leader, 'concord_tc_call_streams_paused')).toBe(0);
    stream.end();
  }, 240_000);
});
