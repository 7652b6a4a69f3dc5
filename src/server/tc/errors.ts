/** Typed errors of the TC service and its RM channel hub. */
import { ConcordError, type ConcordErrorOptions } from '../../shared/errors.ts';

/**
 * No RM that can run a branch's phase two is connected (or every one is at its in-flight
 * bound). Retryable: the coordinator retries with backoff, and RMs reconnect.
 */
export class RmUnavailableError extends ConcordError {
  readonly resourceId: string;
  constructor(resourceId: string, message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
    this.resourceId = resourceId;
  }
}

/** The RM answered a phase-two call with an error instead of a branch status. Retryable. */
export class RmCallFailedError extends ConcordError {
  readonly clientId: string;
  constructor(clientId: string, message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
    this.clientId = clientId;
  }
}
