/**
 * xid propagation over gRPC: the xid travels in the call metadata under `tx_xid`
 * (gRPC metadata keys are lower case; the name mirrors the HTTP header).
 *
 * Client: `xidClientInterceptor`, installed with `new Client(address, creds, { interceptors:
 * [xidClientInterceptor] })` or per call, adds the bound xid to the outgoing metadata.
 * Server: `withXidFromMetadata(handler)` wraps any handler kind (unary, client-, server- or
 * bidi-streaming) so it runs with the call's xid bound. Same policy as HTTP for a malformed
 * value: ignored, logged at warn (see http.ts for why).
 */
import { InterceptingCall, type Interceptor, type Metadata } from '@grpc/grpc-js';
import type { Logger } from '../../shared/logger.ts';
import { silentLogger } from '../../shared/logger.ts';
import { currentXid, isValidXid, runWithContext, type GlobalTxContext } from '../context.ts';
import { MAX_LOGGED_HEADER_CHARS } from './http.ts';

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
  return new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      if (xid !== undefined && metadata.get(XID_METADATA_KEY).length === 0)
        metadata.set(XID_METADATA_KEY, xid);
      next(metadata, listener);
    },
  });
};

/** The xid in incoming metadata; undefined when absent, or malformed (then logged at warn). */
export function xidFromMetadata(
  metadata: Metadata,
  logger: Logger = silentLogger(),
): string | undefined {
  const values = metadata.get(XID_METADATA_KEY);
  if (values.length === 0) return undefined;
  const [first] = values;
  if (values.length === 1 && typeof first === 'string' && isValidXid(first)) return first;
  const shown = values.map((v) =>
    (typeof v === 'string' ? v : '<binary>').slice(0, MAX_LOGGED_HEADER_CHARS),
  );
  logger.warn(
    { key: XID_METADATA_KEY, values: shown.slice(0, 2), count: values.length },
    'ignoring malformed incoming xid metadata: the call runs outside any global transaction',
  );
  return undefined;
}

export interface XidServerCallOptions {
  /** Where a malformed incoming xid is reported (warn). Default: silent. */
  logger?: Logger;
}

interface CallWithMetadata {
  readonly metadata: Metadata;
}

/**
 * Wraps a grpc-js server handler so the handler and everything it starts run with the
 * call's xid bound (or explicitly none when the metadata has no xid).
 *
 * Streaming calls deliver messages through events ('data', 'end', ...) emitted from the
 * HTTP/2 stream's async context, which is not the handler's; an event listener would see no
 * xid. So the call's `emit` is wrapped to emit inside the bound context: listeners added with
 * `on`, `once`, or consumed with `for await` all see the xid, and `removeListener` still
 * works because the listeners themselves are untouched.
 */
export function withXidFromMetadata<C extends CallWithMetadata, Rest extends unknown[]>(
  handler: (call: C, ...rest: Rest) => void,
  options: XidServerCallOptions = {},
): (call: C, ...rest: Rest) => void {
  const logger = options.logger ?? silentLogger();
  return (call, ...rest) => {
    const xid = xidFromMetadata(call.metadata, logger);
    const context: GlobalTxContext | null = xid === undefined ? null : { xid };
    const emitter = call as unknown as { emit?: (...args: unknown[]) => boolean };
    if (typeof emitter.emit === 'function') {
      const emit = emitter.emit;
      emitter.emit = function emitInXidContext(this: unknown, ...args: unknown[]): boolean {
        return runWithContext(context, () => emit.apply(this, args));
      };
    }
    runWithContext(context, () => handler(call, ...rest));
  };
}
