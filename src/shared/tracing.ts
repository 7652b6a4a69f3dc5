/**
 * The OpenTelemetry vocabulary both sides use (@opentelemetry/api only: without a tracer
 * provider registered by the application, every span is a no-op): the tracer's name, the
 * attribute keys, and a helper that runs a function in a span.
 */
import {
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Span,
  type Tracer,
} from '@opentelemetry/api';

export const TRACER_NAME = 'concord';
export const ATTR_XID = 'concord.xid';
export const ATTR_BRANCH_ID = 'concord.branch_id';
export const ATTR_BRANCH_TYPE = 'concord.branch_type';
export const ATTR_RESOURCE_ID = 'concord.resource_id';
export const ATTR_TRANSACTION_NAME = 'concord.transaction.name';
export const ATTR_GLOBAL_STATUS = 'concord.global_status';
export const ATTR_TC_METHOD = 'concord.tc.method';
export const ATTR_RESULT = 'concord.result';

export { SpanKind };

let cachedTracer: Tracer | null = null;

/**
 * The tracer of Concord's spans (a no-op one until the application registers a provider).
 * Got once: the API's proxy tracer finds a provider registered later by itself.
 */
export function tracer(): Tracer {
  cachedTracer ??= trace.getTracer(TRACER_NAME);
  return cachedTracer;
}

/** Runs fn in a new active span; an error is recorded on the span and rethrown. */
export function inSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
  kind: SpanKind = SpanKind.INTERNAL,
): Promise<T> {
  return tracer().startActiveSpan(name, { kind, attributes }, async (span): Promise<T> => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : String(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
      throw err;
    } finally {
      span.end();
    }
  });
}
