/** Plain gRPC services for the propagation tests: JSON-coded unary methods, a local port. */
import * as grpc from '@grpc/grpc-js';

const serialize = (v: unknown) => Buffer.from(JSON.stringify(v));
const deserialize = (b: Buffer) => JSON.parse(b.toString('utf8')) as unknown;

/** A unary method at `path` whose requests and responses travel as JSON. */
export function jsonUnary(path: string): grpc.MethodDefinition<unknown, unknown> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: serialize,
    requestDeserialize: deserialize,
    responseSerialize: serialize,
    responseDeserialize: deserialize,
  };
}

/** Binds the server to a free port on 127.0.0.1 (plaintext) and answers the port. */
export function bindLocal(server: grpc.Server): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
}
