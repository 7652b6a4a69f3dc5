/**
 * The xid crosses gRPC: the client interceptor adds `tx_xid` metadata, the server wrapper
 * binds it for unary, server-, client- and bidi-streaming handlers. A real grpc-js server
 * and client on a loopback port; messages are JSON, so no .proto is needed.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentXid, runWithXid, runWithoutXid } from '../../src/client/context.ts';
import {
  XID_METADATA_KEY,
  withXidFromMetadata,
  xidClientInterceptor,
} from '../../src/client/propagation/index.ts';
import { capturingLogger, sleep } from './helpers/db.ts';

const X1 = '10.0.0.1:8091:777';
const X2 = '10.0.0.2:8091:888';
/** grpc-js's send limit is unlimited by default: set both explicitly (DESIGN.md). */
const MAX_MESSAGE_BYTES = 64 * 1024;

type Msg = { xid: string | null; n?: number };
const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (buffer: Buffer) => JSON.parse(buffer.toString('utf8')) as Msg,
};
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/concord.test.XidEcho/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const service = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
  fails: method('Fails', false, false),
} satisfies grpc.ServiceDefinition;

const seenXid = () => currentXid() ?? null;
const serverLog = capturingLogger();
const opts = { logger: serverLog.logger };

let server: grpc.Server;
let client: grpc.Client &
  Record<
    'unary' | 'serverStream' | 'clientStream' | 'bidi' | 'fails',
    (...args: unknown[]) => unknown
  >;

beforeAll(async () => {
  server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  server.addService(service, {
    unary: withXidFromMetadata<grpc.ServerUnaryCall<Msg, Msg>, [grpc.sendUnaryData<Msg>]>(
      async (_call, callback) => {
        await sleep(2);
        callback(null, { xid: seenXid() });
      },
      opts,
    ),
    serverStream: withXidFromMetadata<grpc.ServerWritableStream<Msg, Msg>, []>((call) => {
      let n = 0;
      const timer = setInterval(() => {
        call.write({ xid: seenXid(), n });
        if (++n === 3) {
          clearInterval(timer);
          call.end();
        }
      }, 2);
    }, opts),
    clientStream: withXidFromMetadata<
      grpc.ServerReadableStream<Msg, Msg>,
      [grpc.sendUnaryData<Msg>]
    >((call, callback) => {
      // Plain event listeners: these fire from the HTTP/2 stream's context, not the handler's.
      const seen = new Set<string | null>();
      call.on('data', () => seen.add(seenXid()));
      call.on('end', () =>
        callback(null, {
          xid: seen.size === 1 ? ([...seen][0] ?? null) : `mixed:${[...seen].join('|')}`,
        }),
      );
    }, opts),
    bidi: withXidFromMetadata<grpc.ServerDuplexStream<Msg, Msg>, []>(async (call) => {
      // destroyOnReturn: false — a plain `for await` destroys the duplex when the loop ends,
      // losing the replies still being written (a Node/grpc-js interaction, not ours).
      for await (const msg of call.iterator({ destroyOnReturn: false }) as AsyncIterable<Msg>) {
        await sleep(1);
        call.write({ xid: seenXid(), n: msg.n });
      }
      call.end();
    }, opts),
    // An async handler that rejects before answering.
    fails: withXidFromMetadata<grpc.ServerUnaryCall<Msg, Msg>, [grpc.sendUnaryData<Msg>]>(
      async () => {
        await sleep(1);
        throw new Error(`handler failed under ${seenXid()}`);
      },
      opts,
    ),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const Client = grpc.makeGenericClientConstructor(service, 'XidEcho');
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    interceptors: [xidClientInterceptor],
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  }) as unknown as typeof client;
});

afterAll(async () => {
  client?.close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

const unary = (metadata = new grpc.Metadata()) =>
  new Promise<Msg>((resolve, reject) =>
    client.unary({ xid: null }, metadata, (err: Error | null, res: Msg) =>
      err ? reject(err) : resolve(res),
    ),
  );
const collect = <T>(stream: NodeJS.EventEmitter) =>
  new Promise<T[]>((resolve, reject) => {
    const out: T[] = [];
    stream.on('data', (m: T) => out.push(m));
    stream.on('end', () => resolve(out));
    stream.on('error', reject);
  });

describe('gRPC propagation', () => {
  it('unary: the xid crosses; without one, the handler sees none', async () => {
    expect(await runWithXid(X1, () => unary())).toEqual({ xid: X1 });
    expect(await unary()).toEqual({ xid: null });
    expect(await runWithXid(X1, () => runWithoutXid(() => unary()))).toEqual({ xid: null });
  });

  it('concurrent calls under different xids each carry their own', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => runWithXid(i % 2 ? X1 : X2, () => unary())),
    );
    results.forEach((r, i) => expect(r.xid).toBe(i % 2 ? X1 : X2));
  });

  it('server streaming: every message is written under the xid', async () => {
    const messages = await runWithXid(X1, () =>
      collect<Msg>(client.serverStream({ xid: null }) as NodeJS.EventEmitter),
    );
    expect(messages.map((m) => m.xid)).toEqual([X1, X1, X1]);
  });

  it('client streaming: data listeners see the xid', async () => {
    const result = await runWithXid(
      X2,
      () =>
        new Promise<Msg>((resolve, reject) => {
          const call = client.clientStream((err: Error | null, res: Msg) =>
            err ? reject(err) : resolve(res),
          ) as grpc.ClientWritableStream<Msg>;
          for (let n = 0; n < 3; n++) call.write({ xid: null, n });
          call.end();
        }),
    );
    expect(result).toEqual({ xid: X2 });
  });

  it('bidi streaming: a for-await handler sees the xid on every message', async () => {
    const replies = await runWithXid(X1, async () => {
      const call = client.bidi() as grpc.ClientDuplexStream<Msg, Msg>;
      const done = collect<Msg>(call);
      for (let n = 0; n < 3; n++) call.write({ xid: null, n });
      call.end();
      return done;
    });
    expect(replies.map((r) => r.xid)).toEqual([X1, X1, X1]);
  });

  it('explicit metadata wins over the bound xid (a proxy forwarding a call keeps its xid)', async () => {
    const md = new grpc.Metadata();
    md.set(XID_METADATA_KEY, X2);
    expect(await runWithXid(X1, () => unary(md))).toEqual({ xid: X2 });
  });

  it('metadata that is not one well-formed xid is refused with INVALID_ARGUMENT on every call kind, logged at warn; the handler never runs', async () => {
    serverLog.records.length = 0;
    const bad = () => {
      const md = new grpc.Metadata();
      md.set(XID_METADATA_KEY, 'not an xid');
      return md;
    };
    const refused = (err: unknown) =>
      expect(err).toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: expect.stringMatching(/tx_xid metadata is not one well-formed xid/),
      });
    refused(await unary(bad()).catch((e: unknown) => e));
    refused(
      await collect<Msg>(client.serverStream({ xid: null }, bad()) as NodeJS.EventEmitter).catch(
        (e: unknown) => e,
      ),
    );
    refused(
      await new Promise<unknown>((resolve) => {
        const call = client.clientStream(bad(), (err: Error | null) =>
          resolve(err),
        ) as grpc.ClientWritableStream<Msg>;
        call.write({ xid: null, n: 1 });
        call.end();
      }),
    );
    const bidi = client.bidi(bad()) as grpc.ClientDuplexStream<Msg, Msg>;
    const bidiDone = collect<Msg>(bidi).catch((e: unknown) => e);
    bidi.end();
    refused(await bidiDone);
    const warns = serverLog.records.filter(
      (r) => r.level === 40 && /not one well-formed xid/.test(String(r.msg)),
    );
    expect(warns).toHaveLength(4);
    expect(warns[0]).toMatchObject({ carrier: 'metadata', values: ['not an xid'] });
  });

  it('two different xids are refused; the same xid twice (a proxy that adds it again) is one xid', async () => {
    const twice = new grpc.Metadata();
    twice.add(XID_METADATA_KEY, X1);
    twice.add(XID_METADATA_KEY, X2);
    expect(await unary(twice).catch((e: unknown) => e)).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    const same = new grpc.Metadata();
    same.add(XID_METADATA_KEY, X1);
    same.add(XID_METADATA_KEY, X1);
    expect(await unary(same)).toEqual({ xid: X1 });
  });

  it('an async handler that rejects ends the call with UNKNOWN and its message, logged at error (no unhandled rejection)', async () => {
    serverLog.records.length = 0;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const err = await runWithXid(
        X1,
        () =>
          new Promise<unknown>((resolve) =>
            client.fails({ xid: null }, new grpc.Metadata(), (e: Error | null) => resolve(e)),
          ),
      );
      expect(err).toMatchObject({
        code: grpc.status.UNKNOWN,
        details: `handler failed under ${X1}`,
      });
      await sleep(20);
      expect(unhandled).toEqual([]);
      expect(serverLog.records.some((r) => r.level === 50 && /rejected/.test(String(r.msg)))).toBe(
        true,
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
