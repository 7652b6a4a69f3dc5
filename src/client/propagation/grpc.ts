/**
 * xid propagation over gRPC: the xid travels in the call metadata under `tx_xid`
 * (gRPC metadata keys are lower case; the name mirrors the HTTP header).
 *
 * Client: `xidClientInterceptor`, installed with `new Client(address, creds, { interceptors:
 * [xidClientInterceptor] })` or per call, adds the bound xid to the outgoing metadata.
 * Server: `withXidFromMetadata(handler)` wraps any handler kind (unary, client-, server- or
 * bidi-streaming) so it runs with the call's xid bound. Same policy as HTTP for a value that
 * is not one well-formed xid: refused (INVALID_ARGUMENT), logged at warn (incoming.ts).
 */
import {
  InterceptingCall,
  status,
  type Interceptor,
  type Metadata,
  type StatusObject,
} from '@grpc/grpc-js';
import { currentXid, runWithContext, type GlobalTxContext, type Xid } from '../context.ts';
import { toClientLogger, type LoggerLike } from '../logger.ts';
import { traceHeaders, withIncomingTrace } from '../tracing.ts';
import { readIncomingXid, warnRefused, xidOrThrow } from './incoming.ts';

export const XID_METADATA_KEY = 'tx_xid';

/**
 * Adds `tx_xid` to a call's metadata when a transaction is bound. The xid is read when the
 * call is created (grpc-js builds the interceptor chain synchronously inside the stub call),
 * not when the call starts, so a call created under `runWithXid` carries that xid however
 * late the channel gets round to starting it. Metadata that already carries an xid is left
 * alone (a proxy forwarding a call keeps the caller's xid).
 */
export const xidClientInterceptor: Interceptor = (options, nextCall) => {
  const xid = currentXid();
  // The trace context travels with the xid (traceparent, ...: lower-case keys, as gRPC wants).
  const trace = xid === undefined ? {} : traceHeaders();
  return new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      if (xid !== undefined && metadata.get(XID_METADATA_KEY).length === 0)
        metadata.set(XID_METADATA_KEY, xid);
      for (const [k, v] of Object.entries(trace))
        if (metadata.get(k).length === 0) metadata.set(k.toLowerCase(), v);
      next(metadata, listener);
    },
  });
};

/**
 * The xid in incoming metadata: undefined when absent. Throws InvalidIncomingXidError when
 * present but not exactly one well-formed xid (identical repeated values count as one);
 * logged at warn on `logger` when one is given.
 */
export function xidFromMetadata(metadata: Metadata, logger?: LoggerLike): Xid | undefined {
  return xidOrThrow(
    readIncomingXid(metadata.get(XID_METADATA_KEY), 'metadata', XID_METADATA_KEY),
    logger,
    REFUSED_METADATA,
  );
}

/** The warning logged when a carrier is refused. */
const REFUSED_METADATA =
  'refused a call whose transaction metadata is not one well-formed xid (INVALID_ARGUMENT)';

export interface XidServerCallOptions {
  /**
   * Where refused calls (warn) and handler rejections (error) are logged: pino, or any
   * logger with the usual methods (console). Default: pino at warn on stderr.
   */
  logger?: LoggerLike;
}

interface CallWithMetadata {
  readonly metadata: Metadata;
}

/**
 * Ends a call with `error`: through the callback (unary, client streaming) or the stream (server
 * streaming, bidi).
 */
function endWithError(call: unknown, rest: unknown[], error: Partial<StatusObject>): void {
  const [callback] = rest;
  if (typeof callback === 'function') {
    (callback as (err: Partial<StatusObject>) => void)(error);
    return;
  }
  const stream = call as { emit?: (event: string, err: unknown) => boolean };
  stream.emit?.('error', error);
}

/**
 * Wraps a grpc-js server handler so the handler and everything it starts run with the
 * call's xid bound (or explicitly none when the metadata has no xid).
 *
 * A call whose metadata is not one well-formed xid never reaches the handler: it ends with
 * INVALID_ARGUMENT (logged at warn). A handler that returns a promise which rejects ends
 * the call with UNKNOWN and the error's message (logged at error), instead of an unhandled
 * rejection.
 *
 * Streaming calls deliver messages through events ('data', 'end', ...) emitted from the
 * HTTP/2 stream's async context, which is not the handler's; an event listener would see no
 * xid. So the call's `emit` is wrapped to emit inside the bound context: listeners added with
 * `on`, `once`, or consumed with `for await` all see the xid, and `removeListener` still
 * works because the listeners themselves are untouched.
 */
export function withXidFromMetadata<C extends CallWithMetadata, Rest extends unknown[]>(
  handler: (call: C, ...rest: Rest) => unknown,
  options: XidServerCallOptions = {},
): (call: C, ...rest: Rest) => void {
  const logger = toClientLogger(options.logger);
  return (call, ...rest) => {
    const incoming = readIncomingXid(
      call.metadata.get(XID_METADATA_KEY),
      'metadata',
      XID_METADATA_KEY,
    );
    if (incoming.kind === 'invalid') {
      warnRefused(logger, incoming.error, REFUSED_METADATA);
      endWithError(call, rest, { code: status.INVALID_ARGUMENT, details: incoming.error.message });
      return;
    }
    const context: GlobalTxContext | null = incoming.kind === 'xid' ? { xid: incoming.xid } : null;
    // The caller's trace context, if its metadata carries one (first value of each key).
    const carried: Record<string, string> = {};
    for (const [k, v] of Object.entries(call.metadata.getMap()))
      if (typeof v === 'string') carried[k] = v;
    const emitter = call as unknown as { emit?: (...args: unknown[]) => boolean };
    if (typeof emitter.emit === 'function') {
      const emit = emitter.emit;
      emitter.emit = function emitInXidContext(this: unknown, ...args: unknown[]): boolean {
        return withIncomingTrace(carried, () =>
          runWithContext(context, () => emit.apply(this, args)),
        );
      };
    }
    const returned = withIncomingTrace(carried, () =>
      runWithContext(context, () => handler(call, ...rest)),
    );
    if (returned instanceof Promise)
      returned.catch((err: unknown) => {
        logger.error({ err }, 'gRPC handler rejected; the call ends with UNKNOWN');
        const details = err instanceof Error ? err.message : String(err);
        endWithError(call, rest, { code: status.UNKNOWN, details });
      });
  };
}
