/**
 * Plugs the precompiled codecs (scripts/gen-codecs.mjs) into a gRPC service definition
 * loaded by @grpc/proto-loader: the loader still names the methods, the codecs serialize.
 */
import type * as grpc from '@grpc/grpc-js';
import type { MethodDefinition as LoaderMethod } from '@grpc/proto-loader';
import { assert } from './errors.ts';

export interface WireCodecLike {
  encode(message: unknown): Buffer;
  decode(bytes: Uint8Array): unknown;
}

function messageName(
  method: grpc.MethodDefinition<unknown, unknown>,
  side: 'request' | 'response',
): string {
  const loaded = method as unknown as Partial<LoaderMethod<unknown, unknown>>;
  const type = side === 'request' ? loaded.requestType : loaded.responseType;
  const name = (type?.type as { name?: unknown } | undefined)?.name;
  assert(typeof name === 'string', `method ${method.path}: no ${side} type`);
  return name;
}

/** A copy of `service` whose every method (de)serializes with `codecs` (by message short name). */
export function withCodecs(
  service: grpc.ServiceDefinition,
  codecs: Readonly<Record<string, WireCodecLike>>,
): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    const request = codecs[messageName(method, 'request')];
    const response = codecs[messageName(method, 'response')];
    assert(request !== undefined && response !== undefined, `method ${method.path}: no codec`);
    out[name] = {
      ...method,
      requestSerialize: (m: unknown) => request.encode(m),
      requestDeserialize: (b: Buffer) => request.decode(b),
      responseSerialize: (m: unknown) => response.encode(m),
      responseDeserialize: (b: Buffer) => response.decode(b),
    };
  }
  return out as grpc.ServiceDefinition;
}
