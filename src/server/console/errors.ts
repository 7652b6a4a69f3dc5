/** The console's HTTP-only failures (the shared ConcordErrors map by code in http/errors.ts). */
import { HttpError } from '../http/errors.ts';

/** Signed in, but the viewer role may not do this (actions need the admin role). */
export class ConsoleForbiddenError extends HttpError {
  constructor(action: string) {
    super(403, 'FORBIDDEN', `${action} needs the admin role; this session has the viewer role`);
  }
}

/** A state-changing request without the session's CSRF token or from another origin. */
export class CsrfError extends HttpError {
  constructor(reason: string) {
    super(403, 'CSRF', `refused: ${reason}`);
  }
}

/** A sign-in with credentials that match no configured token. */
export class SignInRefusedError extends HttpError {
  constructor() {
    super(401, 'SIGN_IN_REFUSED', 'wrong token or password');
  }
}

/** A forwarded request the leader could not be reached for. */
export class LeaderUnreachableError extends HttpError {
  constructor(detail: string) {
    super(503, 'LEADER_UNREACHABLE', `the leader could not be reached: ${detail}`, {
      retryable: true,
      headers: { 'retry-after': '1' },
    });
  }
}
