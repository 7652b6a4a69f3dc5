/**
 * The audit line of an operator action on the TC (RetryNow, StopRetry, ResumeRetry,
 * MarkResolved): one pino line at info with who, what, when and the outcome, whatever
 * the outcome. "Who" is what the caller declares — the `concord-operator` call metadata
 * (`concord tx` sends it), or MarkResolved's `operator` field — and the peer address. Under
 * TLS only a caller with the admin role reaches these methods (auth.ts, docs/security.md).
 */
import type { Logger } from '../../shared/logger.ts';
import type { WireResponse } from '../../shared/tc-wire.ts';

/** The gRPC metadata key naming the operator of an operator call. */
export const OPERATOR_METADATA_KEY = 'concord-operator';
/** Characters of a declared operator name kept in the audit line. */
export const MAX_OPERATOR_CHARS = 256;

/** The operator calls that change a transaction, by method name. */
export const AUDITED_METHODS: ReadonlySet<string> = new Set([
  'retryNow',
  'stopRetry',
  'resumeRetry',
  'markResolved',
]);

export interface AuditedCall {
  method: string;
  request: unknown;
  /** Values of the OPERATOR_METADATA_KEY metadata, if any. */
  declaredOperator: unknown;
  peer: string;
}

/** Printable and bounded: a caller's text never breaks the log line's meaning. */
function clean(v: unknown): string | null {
  if (typeof v !== 'string' || v === '') return null;
  // eslint-disable-next-line no-control-regex
  return v.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, MAX_OPERATOR_CHARS);
}

export function operatorOf(call: AuditedCall): string {
  const r = (call.request ?? {}) as { operator?: unknown };
  return clean(call.declaredOperator) ?? clean(r.operator) ?? 'unknown';
}

/** Logs the audit line of an operator call (call it once the call is answered). */
export function auditOperatorCall(
  log: Logger,
  call: AuditedCall,
  response: WireResponse,
  now: () => number = Date.now,
): void {
  const r = (call.request ?? {}) as { xid?: unknown };
  log.info(
    {
      audit: true,
      action: call.method,
      xid: clean(r.xid) ?? '',
      operator: operatorOf(call),
      peer: call.peer,
      at: new Date(now()).toISOString(),
      outcome: response.error ? response.error.code : 'OK',
      ...((response as { globalStatus?: unknown }).globalStatus !== undefined
        ? { globalStatus: (response as { globalStatus?: unknown }).globalStatus }
        : {}),
    },
    `operator action ${call.method}`,
  );
}
