/**
 * Who calls the TC, and what they may do (docs/security.md). With TLS on, every TM/RM
 * connection presents a client certificate of the cluster's CA; the application it names
 * (SAN URI concord://app/<name>) is the caller's principal, and concord://role/admin grants
 * the operator role. In insecure mode there is no principal and nothing is checked.
 *
 * - begin, branchRegister, and an RM channel's registration: the request's applicationId
 *   is the caller's application;
 * - commit, rollback, getStatus, globalReport, getSession: the transaction's application
 *   (the one that began it) is the caller's;
 * - branchReport: the branch's application (the RM that registered it) is the caller's;
 * - retryNow, stopRetry, resumeRetry, markResolved, listSessions: the admin role;
 * - RM client ids (an RM channel's, a branch's): they begin with the caller's application
 *   and a colon, so no other application can take one over, on any node;
 * - lockQuery: any authenticated application.
 * The admin role may do everything. A refusal is UnauthorizedError (ERROR_CODE_PERMISSION_DENIED)
 * and nothing is proposed.
 */
import type { PeerCertificate } from 'node:tls';
import { UnauthorizedError } from '../../shared/errors.ts';
import { identityOfSubjectAltName } from '../../shared/pki.ts';

export interface Principal {
  /** The application the certificate names; null if it names none (a node certificate). */
  app: string | null;
  admin: boolean;
}

/**
 * The principal of a call's connection: null without TLS (insecure mode), else what the
 * client certificate names (the TLS handshake already verified it against the CA).
 */
export function principalOf(call: {
  getAuthContext?: () => { sslPeerCertificate?: PeerCertificate } | null;
}): Principal | null {
  const ctx = typeof call.getAuthContext === 'function' ? call.getAuthContext() : null;
  if (!ctx || ctx.sslPeerCertificate === undefined) return null;
  const id = identityOfSubjectAltName(ctx.sslPeerCertificate.subjectaltname);
  return { app: id.app, admin: id.admin };
}

/** A principal that must be checked: null (insecure mode) passes everything. */
export type Caller = Principal | null;

export function requireAdmin(caller: Caller, what: string): void {
  if (caller === null || caller.admin) return;
  throw new UnauthorizedError(`${what} needs the admin role; ${describe(caller)} has none`);
}

/** The caller acts for `app` (its own application), or holds the admin role. */
export function requireApp(caller: Caller, app: string, what: string): void {
  if (caller === null || caller.admin || (caller.app !== null && caller.app === app)) return;
  throw new UnauthorizedError(`${what} belongs to application ${app}, not to ${describe(caller)}`);
}

/**
 * An RM client id names its application first, as Seata's do (`<app>:<host>:<port>`) and the
 * SDK's default does (`<app>:<host>:<pid>:<random>`): a caller may use only client ids of its
 * own application. Being a property of the id, it holds on every node and across failovers.
 */
export function requireOwnClientId(caller: Caller, clientId: string): void {
  if (caller === null || caller.admin) return;
  if (caller.app !== null && clientId.startsWith(`${caller.app}:`)) return;
  throw new UnauthorizedError(
    `client id ${clientId} is not one of ${describe(caller)}: it must begin with "${caller.app ?? '<app>'}:"`,
  );
}

function describe(caller: Principal): string {
  return caller.app === null ? 'a certificate naming no application' : `application ${caller.app}`;
}

/** Transactions' applications remembered on this node (they never change once begun). */
export const MAX_OWNER_CACHE = 100_000;

/**
 * xid → the application that began it. Filled at Begin on this node and by reads after a
 * failover; a full cache forgets its oldest half.
 */
export class OwnerCache {
  private readonly owners = new Map<string, string>();
  constructor(private readonly max = MAX_OWNER_CACHE) {}
  get(xid: string): string | undefined {
    return this.owners.get(xid);
  }
  set(xid: string, app: string): void {
    if (this.owners.size >= this.max) {
      let drop = Math.ceil(this.max / 2);
      for (const key of this.owners.keys()) {
        this.owners.delete(key);
        if (--drop === 0) break;
      }
    }
    this.owners.set(xid, app);
  }
}
