/**
 * The precompiled codecs (scripts/gen-codecs.mjs → src/shared/tc-codecs.gen.ts,
 * src/raft/transport/raft-codecs.gen.ts) against @grpc/proto-loader's reflection, the way
 * the code read and wrote messages before them: for random valid messages of every method's
 * request and response type (defaults, absent fields, unicode, large numbers, oneofs,
 * proto3 optional), bytes from either side decode on either side to equal objects. Malformed
 * bytes (truncated, lengths past the end, bad varints, groups, field 0) are refused with
 * WireDecodeError, never another throw. The generated files are up to date with the .proto.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { CODECS as RAFT_CODECS } from '../../src/raft/transport/raft-codecs.gen.ts';
import { RAFT_PROTO_PATH } from '../../src/raft/transport/grpc-transport.ts';
import { CODECS as TC_CODECS } from '../../src/shared/tc-codecs.gen.ts';
import {
  TC_PROTO_LOADER_OPTIONS,
  TC_PROTO_PATH,
  tcServiceConstructor,
} from '../../src/shared/tc-wire.ts';
import { WireDecodeError } from '../../src/shared/wire-codec-runtime.ts';
import { BadRequestError } from '../../src/shared/errors.ts';

interface Side {
  encode(m: unknown): Buffer;
  decode(b: Buffer): unknown;
}

const u32 = 0xffff_ffff;

/** A random valid plain object of `type`, as a sender may write it. */
function arbitraryOf(type: protobuf.Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  expect(depth).toBeLessThan(8);
  const plain: Record<string, fc.Arbitrary<unknown>> = {};
  const oneofs: fc.Arbitrary<Record<string, unknown>>[] = [];
  for (const oneof of type.oneofsArray) {
    const members = oneof.fieldsArray.map((f) =>
      valueOf(f, depth).map((v) => ({ [f.name]: v }) as Record<string, unknown>),
    );
    oneofs.push(fc.option(fc.oneof(...members), { nil: undefined }).map((x) => x ?? {}));
  }
  for (const f of type.fieldsArray) {
    if (f.partOf) continue;
    plain[f.name] = f.repeated ? fc.array(valueOf(f, depth), { maxLength: 4 }) : valueOf(f, depth);
  }
  return fc
    .tuple(fc.record(plain, { requiredKeys: [] }), ...oneofs)
    .map(([base, ...rest]) => Object.assign({}, base, ...rest) as Record<string, unknown>);
}

function valueOf(f: protobuf.Field, depth: number): fc.Arbitrary<unknown> {
  const t = f.resolve().resolvedType;
  if (t instanceof protobuf.Type) return arbitraryOf(t, depth + 1);
  if (t instanceof protobuf.Enum) return fc.constantFrom(...Object.keys(t.values));
  switch (f.type) {
    case 'string':
      return fc.oneof(fc.constant(''), fc.string({ unit: 'binary', maxLength: 40 }), fc.string());
    case 'bool':
      return fc.boolean();
    case 'int32':
      return fc.oneof(fc.constant(0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
    case 'uint32':
      return fc.oneof(fc.constant(0), fc.integer({ min: 0, max: u32 }));
    case 'uint64':
      return fc.oneof(fc.constant(0), fc.constant(Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
    case 'bytes':
      return fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b));
    default:
      throw new Error(`no arbitrary for ${f.type}`);
  }
}

interface Case {
  name: string;
  type: protobuf.Type;
  loader: Side;
  ours: Side;
}

/** Every request and response type of the service, with the loader's and our (de)serializers. */
function cases(
  protoPath: string,
  options: protoLoader.Options,
  service: string,
  codecs: Readonly<Record<string, Side>>,
): Case[] {
  const def = protoLoader.loadSync(protoPath, options);
  const root = new protobuf.Root();
  root.loadSync(protoPath, { keepCase: false });
  root.resolveAll();
  const seen = new Map<string, Case>();
  for (const method of Object.values(def[service] as protoLoader.ServiceDefinition)) {
    for (const side of ['request', 'response'] as const) {
      const name = (
        (side === 'request' ? method.requestType : method.responseType).type as { name: string }
      ).name;
      if (seen.has(name)) continue;
      const loader: Side =
        side === 'request'
          ? { encode: method.requestSerialize, decode: method.requestDeserialize }
          : { encode: method.responseSerialize, decode: method.responseDeserialize };
      const ours = codecs[name];
      expect(ours, name).toBeDefined();
      const type = root.lookupType(`${service.slice(0, service.lastIndexOf('.'))}.${name}`);
      seen.set(name, { name, type, loader, ours: ours! });
    }
  }
  return [...seen.values()];
}

const tcCases = cases(
  TC_PROTO_PATH,
  TC_PROTO_LOADER_OPTIONS,
  'concord.tc.v1.TransactionCoordinator',
  TC_CODECS,
);
const raftCases = cases(
  RAFT_PROTO_PATH,
  { keepCase: false, longs: Number, defaults: true },
  'concord.raft.v1.RaftTransport',
  RAFT_CODECS,
);

function decodedOrError(side: Side, bytes: Buffer): { ok: unknown } | { err: unknown } {
  try {
    return { ok: side.decode(bytes) };
  } catch (err) {
    return { err };
  }
}

describe.each([...tcCases, ...raftCases])('codec of $name', ({ type, loader, ours }) => {
  it('decodes as the loader does, both ways, and its bytes read the same anywhere', () => {
    fc.assert(
      fc.property(arbitraryOf(type), (message) => {
        const reflected = loader.encode(message);
        const expected = loader.decode(reflected);
        // Bytes of reflection, read by ours.
        expect(ours.decode(reflected)).toStrictEqual(expected);
        // Our bytes, read by reflection and by ours.
        const mine = ours.encode(message);
        expect(loader.decode(mine)).toStrictEqual(expected);
        expect(ours.decode(mine)).toStrictEqual(expected);
        // The decoded object written again is the same message.
        expect(ours.decode(ours.encode(expected))).toStrictEqual(expected);
      }),
      { numRuns: 150 },
    );
  });

  it('refuses truncated bytes with WireDecodeError, or reads what the loader reads', () => {
    fc.assert(
      fc.property(arbitraryOf(type), fc.nat(), (message, cut) => {
        const bytes = loader.encode(message);
        if (bytes.length === 0) return;
        const prefix = bytes.subarray(0, cut % bytes.length);
        const got = decodedOrError(ours, prefix);
        if ('err' in got) {
          expect(got.err).toBeInstanceOf(WireDecodeError);
          return;
        }
        const theirs = decodedOrError(loader, prefix);
        // A cut at a field boundary is a valid (shorter) message.
        expect(theirs).toStrictEqual(got);
      }),
      { numRuns: 100 },
    );
  });

  it('random bytes: a message or WireDecodeError, never another throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (raw) => {
        const got = decodedOrError(ours, Buffer.from(raw));
        if ('err' in got) expect(got.err).toBeInstanceOf(WireDecodeError);
      }),
      { numRuns: 200 },
    );
  });
});

describe('malformed bytes', () => {
  const callBatch = TC_CODECS.CallBatch!;
  const refused = (bytes: number[]) => {
    let caught: unknown;
    try {
      callBatch.decode(Buffer.from(bytes));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(WireDecodeError);
    expect(caught).toBeInstanceOf(BadRequestError);
    expect((caught as WireDecodeError).messageType).toBe('concord.tc.v1.CallBatch');
  };

  it('a length past the end', () => refused([0x0a, 0x7f, 0x08, 0x01]));
  it('a huge length', () => refused([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
  it('a varint longer than 10 bytes', () =>
    refused([0x0a, 0x0c, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
  it('a nested length past its parent', () =>
    // CallBatch{calls: Call(len 2){ begin(len 5) ... }} with the begin running past the call.
    refused([0x0a, 0x02, 0x12, 0x05, 0x0a, 0x03, 0x61, 0x62, 0x63]));
  it('a group', () => refused([0x0b, 0x0c]));
  it('field number 0', () => refused([0x00, 0x01]));
  it('a string past the end', () => refused([0x0a, 0x04, 0x12, 0x02, 0x0a, 0x09]));

  it('unknown fields are skipped (a newer sender)', () => {
    const known = TC_CODECS.XidRequest!.encode({ xid: 'a:1:2' });
    const extra = Buffer.from([0xf8, 0x01, 0x05, 0x82, 0x02, 0x01, 0x7a, 0x8d, 0x02, 1, 2, 3, 4]);
    expect(TC_CODECS.XidRequest!.decode(Buffer.concat([known, extra]))).toStrictEqual({
      xid: 'a:1:2',
    });
  });
});

describe('the service definition', () => {
  it('serializes every method with the precompiled codecs', () => {
    const service = tcServiceConstructor().service;
    const begin = service.Begin!;
    const bytes = begin.requestSerialize({
      name: 'n',
      timeoutMs: 1000,
      applicationId: 'app',
      transactionServiceGroup: 'g',
      requestId: 'r',
    });
    expect(bytes).toStrictEqual(
      TC_CODECS.BeginRequest!.encode({
        name: 'n',
        timeoutMs: 1000,
        applicationId: 'app',
        transactionServiceGroup: 'g',
        requestId: 'r',
      }),
    );
    expect(() => begin.requestDeserialize(Buffer.from([0x0a, 0x7f]))).toThrow(WireDecodeError);
    expect(Object.keys(service).sort()).toContain('Calls');
    expect(typeof grpc.makeGenericClientConstructor).toBe('function');
  });

  it('the generated files match the .proto (node scripts/gen-codecs.mjs --check)', () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    execFileSync(process.execPath, ['scripts/gen-codecs.mjs', '--check'], { cwd: root });
  });
});
