/**
 * OpenTelemetry spans of the client SDK, through @opentelemetry/api only: without a tracer
 * provider registered by the application (its OpenTelemetry SDK), every span is a no-op.
 *
 *  - `concord.transaction` (INTERNAL) around a global transaction this process launched:
 *    begin, the function, commit or rollback; attributes `concord.xid`,
 *    `concord.transaction.name`, `concord.global_status`;
 *  - `concord.branch.<op>` around each branch step: `try` / `action` (phase one, a child of
 *    the caller's span), `confirm` / `cancel` / `compensate` (phase two, SERVER: the TC asked
 *    for it); attributes `concord.xid`, `concord.branch_id`, `concord.branch_type`,
 *    `concord.resource_id`;
 *  - the propagation helpers carry the trace context (W3C `traceparent`, `tracestate`, or
 *    whatever propagator the application registered) next to the xid, and the server
 *    middlewares run the request in the context they extract, so a callee's branch spans
 *    join the caller's trace.
 */
import { context, propagation } from '@opentelemetry/api';

export * from '../shared/tracing.ts';

/** The active trace context as headers (`traceparent`, ...); {} without a propagator or span. */
export function traceHeaders(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

/** Runs fn in the trace context carried by incoming headers (if any). */
export function withIncomingTrace<T>(
  headers: Record<string, string | string[] | undefined>,
  fn: () => T,
): T {
  const extracted = propagation.extract(context.active(), headers, {
    keys: (c) => Object.keys(c),
    get: (c, key) => {
      const v = c[key];
      return Array.isArray(v) ? v[0] : v;
    },
  });
  return context.with(extracted, fn);
}
