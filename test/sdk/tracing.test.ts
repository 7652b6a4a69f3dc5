/**
 * OpenTelemetry spans across two services (issue 22 item 2), with an in-memory exporter:
 * service A launches a global transaction, calls its own TCC action and service B over HTTP
 * (xidFetch → wrapHttpHandler); B joins and calls its action. The spans of A's transaction,
 * both tries (B's joined over `traceparent`), both confirms and the TC's calls and
 * phase-two attempts all carry the xid, and B's try is a child of A's transaction span in
 * the same trace. The TC runs in this process (one node, real Raft, real gRPC) so its spans
 * reach the same exporter.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentXid, runWithXid } from '../../src/client/context.ts';
import { withXidFromMetadata, xidClientInterceptor } from '../../src/client/propagation/index.ts';
import { createClient, wrapHttpHandler, xidFetch, type ConcordClient } from '../../src/index.ts';
import { loadConfig } from '../../src/server/config.ts';
import { TcNode } from '../../src/server/tc-node.ts';
import { createTcNodeOptions } from '../../src/server/tc/index.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { allocateNodes, raftNodeConfig, writeConfig } from '../support/cluster.ts';
import { waitFor } from '../support/wait.ts';
import { bindLocal, jsonUnary } from '../support/grpc-json.ts';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
let node: TcNode;
let root: string;
let serverB: Server;
const clients: ConcordClient[] = [];

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  root = mkdtempSync(join(tmpdir(), 'concord-tracing-'));
  const [ports] = await allocateNodes(1);
  const file = join(root, 'node1.yaml');
  writeConfig(
    file,
    raftNodeConfig(ports!, { peers: [ports!], dataRoot: join(root, 'data'), tickMs: 20 }),
  );
  node = await TcNode.start(createTcNodeOptions(loadConfig(file), silentLogger()));
  await waitFor('the one-node TC leads', async () =>
    node.view.status().role === 'leader' ? true : undefined,
  );
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  serverB?.close();
  await node?.stop();
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
  if (root) rmSync(root, { recursive: true, force: true });
}, 60_000);

const attr = (s: ReadableSpan, key: string) => s.attributes[key];
const parentOf = (s: ReadableSpan): string | undefined =>
  (s as unknown as { parentSpanContext?: { spanId: string } }).parentSpanContext?.spanId ??
  (s as unknown as { parentSpanId?: string }).parentSpanId;

describe('OpenTelemetry spans', () => {
  it('the trace context crosses gRPC next to the xid (client interceptor → server wrapper)', async () => {
    const service = {
      echo: jsonUnary('/concord.test.TraceEcho/Echo'),
    } satisfies grpc.ServiceDefinition;
    const server = new grpc.Server({
      'grpc.max_receive_message_length': 65_536,
      'grpc.max_send_message_length': 65_536,
    });
    server.addService(service, {
      echo: withXidFromMetadata<
        grpc.ServerUnaryCall<unknown, unknown>,
        [grpc.sendUnaryData<unknown>]
      >((_call, callback) =>
        callback(null, {
          traceId: trace.getActiveSpan()?.spanContext().traceId ?? null,
          xid: currentXid() ?? null,
        }),
      ),
    });
    const port = await bindLocal(server);
    const Client = grpc.makeGenericClientConstructor(service, 'TraceEcho');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [xidClientInterceptor],
      'grpc.max_receive_message_length': 65_536,
      'grpc.max_send_message_length': 65_536,
    }) as unknown as grpc.Client & {
      echo: (req: unknown, cb: (e: unknown, r: unknown) => void) => void;
    };
    try {
      const X = '10.0.0.1:8091:4242';
      const answer = await trace.getTracer('test').startActiveSpan('caller', (span) =>
        runWithXid(
          X,
          () =>
            new Promise<{ traceId: string | null; xid: string | null; spanTrace: string }>(
              (resolve, reject) =>
                client.echo({}, (err, r) => {
                  span.end();
                  if (err) reject(err);
                  else
                    resolve({
                      ...(r as { traceId: string | null; xid: string | null }),
                      spanTrace: span.spanContext().traceId,
                    });
                }),
            ),
        ),
      );
      // The server had no span of its own: the active span there is the caller's, remote.
      expect(answer.xid).toBe(X);
      expect(answer.traceId).toBe(answer.spanTrace);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it('link a transaction across two services, with the xid on every span, the TC included', async () => {
    const servers = [`127.0.0.1:${node.httpPort}`];
    const quiet = { error() {}, warn() {}, info() {}, debug() {} };
    const a = createClient({ servers, applicationId: 'svc-a', logger: quiet });
    const b = createClient({ servers, applicationId: 'svc-b', logger: quiet });
    clients.push(a, b);
    const confirmed: string[] = [];
    const pay = a.tcc.register({
      name: 'a.pay',
      try: async () => undefined,
      confirm: async () => void confirmed.push('a'),
      cancel: async () => undefined,
    });
    const reserve = b.tcc.register({
      name: 'b.reserve',
      try: async () => undefined,
      confirm: async () => void confirmed.push('b'),
      cancel: async () => undefined,
    });
    serverB = createServer(
      wrapHttpHandler(async (_req, res) => {
        await b.joinTransaction(async () => reserve());
        res.end('reserved');
      }),
    );
    await new Promise<void>((r) => serverB.listen(0, '127.0.0.1', () => r()));
    const portB = (serverB.address() as { port: number }).port;

    let xid = '';
    await a.transaction({ name: 'order' }, async (scope) => {
      xid = scope.xid ?? '';
      await pay();
      const res = await xidFetch(`http://127.0.0.1:${portB}/`);
      expect(await res.text()).toBe('reserved');
    });
    await waitFor('both confirms', async () => (confirmed.length === 2 ? true : undefined), 20_000);
    const spans = await waitFor('the TC phase-two spans', async () => {
      const all = exporter.getFinishedSpans();
      return all.filter((s) => s.name === 'concord.tc.phase_two.commit').length === 2 &&
        all.filter((s) => s.name === 'concord.branch.confirm').length === 2
        ? all
        : undefined;
    });

    const tx = spans.find((s) => s.name === 'concord.transaction')!;
    expect(tx).toBeDefined();
    expect(attr(tx, 'concord.xid')).toBe(xid);
    expect(attr(tx, 'concord.transaction.name')).toBe('order');
    expect(attr(tx, 'concord.global_status')).toBeDefined();
    const traceId = tx.spanContext().traceId;

    const tries = spans.filter((s) => s.name === 'concord.branch.try');
    expect(tries.map((s) => attr(s, 'concord.resource_id')).sort()).toEqual(['a.pay', 'b.reserve']);
    for (const t of tries) {
      // Same trace; B's try crossed the HTTP call through traceparent.
      expect(t.spanContext().traceId).toBe(traceId);
      expect(parentOf(t)).toBe(tx.spanContext().spanId);
      expect(attr(t, 'concord.xid')).toBe(xid);
      expect(attr(t, 'concord.branch_id')).toMatch(/^\d+$/);
    }
    const confirms = spans.filter((s) => s.name === 'concord.branch.confirm');
    expect(confirms.map((s) => attr(s, 'concord.resource_id')).sort()).toEqual([
      'a.pay',
      'b.reserve',
    ]);
    for (const c of confirms) expect(attr(c, 'concord.xid')).toBe(xid);

    // The TC: one span per call, one per phase-two attempt, each with the xid.
    const tc = spans.filter(
      (s) => s.name.startsWith('concord.tc.') && attr(s, 'concord.xid') === xid,
    );
    const names = tc.map((s) => s.name);
    expect(names).toContain('concord.tc.begin');
    expect(names).toContain('concord.tc.commit');
    expect(names.filter((n) => n === 'concord.tc.branchRegister')).toHaveLength(2);
    const attempts = tc.filter((s) => s.name === 'concord.tc.phase_two.commit');
    expect(attempts).toHaveLength(2);
    for (const p of attempts) expect(attr(p, 'concord.result')).toBe('done');
  }, 60_000);
});
