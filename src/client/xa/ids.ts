/**
 * The XA transaction identifiers Concord gives its branches, derived from the xid and the
 * branch id with a Concord prefix, so recovery can tell Concord's prepared transactions from
 * anyone else's and learn each one's xid again (to ask the TC its outcome):
 *
 *   PostgreSQL gid:      concord-xa:<scope>:<branchId>:<xid>     (< 200 bytes: GIDSIZE)
 *   MySQL gtrid / bqual: concord-xa:<xid> / <scope>:<branchId>   (≤ 64 bytes each), formatID 1
 *
 * An xid is `host:port:transactionId` (printable ASCII, no quote), a branch id decimal. The
 * scope (8 hex digits of a hash of the application id and the resource id) limits recovery
 * to the data source's own resource, as Seata's XA recovery is per resource: its replicas
 * recover each other's branches, and no other service's (which may belong to another TC
 * cluster, whose xids this one would not know) is ever touched.
 */
import { createHash } from 'node:crypto';
import { isValidXid } from '../context.ts';
import { XaIdentifierTooLongError } from './errors.ts';

export const XA_PREFIX = 'concord-xa:';
/** PostgreSQL's GIDSIZE is 200 with the terminating NUL. */
export const PG_MAX_GID_BYTES = 199;
/** MySQL/MariaDB: gtrid and bqual are each at most 64 bytes. */
export const MYSQL_MAX_PART_BYTES = 64;
/** The formatID of Concord's MySQL XA ids. */
export const MYSQL_FORMAT_ID = 1;

export interface BranchRef {
  xid: string;
  branchId: string;
}

const BRANCH_ID = /^(?:0|[1-9][0-9]{0,19})$/;
const MAX_BRANCH_ID = '18446744073709551615';

/** The recovery scope of a data source: its application's and resource's own. */
export function xaScope(applicationId: string, resourceId: string): string {
  return createHash('sha256').update(`${applicationId}\n${resourceId}`).digest('hex').slice(0, 8);
}

/** What every gid of the scope starts with. */
export function pgGidPrefix(scope: string): string {
  return `${XA_PREFIX}${scope}:`;
}

export function pgGid(scope: string, ref: BranchRef): string {
  return `${pgGidPrefix(scope)}${ref.branchId}:${ref.xid}`;
}

/** Throws XaIdentifierTooLongError when `xid` cannot fit the PostgreSQL gid. */
export function checkPgXid(xid: string): void {
  const bytes = Buffer.byteLength(pgGid('00000000', { xid, branchId: MAX_BRANCH_ID }));
  if (bytes > PG_MAX_GID_BYTES) throw new XaIdentifierTooLongError('gid', bytes, PG_MAX_GID_BYTES);
}

/** The branch a gid of the scope names, or null for any other prepared transaction. */
export function parsePgGid(scope: string, gid: string): BranchRef | null {
  const prefix = pgGidPrefix(scope);
  if (!gid.startsWith(prefix)) return null;
  const rest = gid.slice(prefix.length);
  const colon = rest.indexOf(':');
  if (colon < 0) return null;
  const branchId = rest.slice(0, colon);
  const xid = rest.slice(colon + 1);
  return BRANCH_ID.test(branchId) && isValidXid(xid) ? { xid, branchId } : null;
}

export function mysqlGtrid(xid: string): string {
  return `${XA_PREFIX}${xid}`;
}

/** Throws XaIdentifierTooLongError when `xid` cannot fit a MySQL gtrid. */
export function checkMysqlXid(xid: string): void {
  const bytes = Buffer.byteLength(mysqlGtrid(xid));
  if (bytes > MYSQL_MAX_PART_BYTES)
    throw new XaIdentifierTooLongError('gtrid', bytes, MYSQL_MAX_PART_BYTES);
}

/** `X'..',X'..',1`: the xid clause of an XA statement, as hex literals (nothing to escape). */
export function mysqlXidClause(scope: string, ref: BranchRef): string {
  const hex = (s: string) => `X'${Buffer.from(s, 'utf8').toString('hex')}'`;
  return `${hex(mysqlGtrid(ref.xid))},${hex(`${scope}:${ref.branchId}`)},${MYSQL_FORMAT_ID}`;
}

/** A row of XA RECOVER, as a branch of the scope, or null for any other. */
export function parseMysqlRecoverRow(
  scope: string,
  row: {
    formatID: number | string;
    gtrid_length: number | string;
    data: string | Buffer;
  },
): BranchRef | null {
  if (Number(row.formatID) !== MYSQL_FORMAT_ID) return null;
  const data = Buffer.isBuffer(row.data) ? row.data : Buffer.from(String(row.data), 'utf8');
  const gtridLength = Number(row.gtrid_length);
  const gtrid = data.subarray(0, gtridLength).toString('utf8');
  const bqual = data.subarray(gtridLength).toString('utf8');
  if (!gtrid.startsWith(XA_PREFIX) || !bqual.startsWith(`${scope}:`)) return null;
  const branchId = bqual.slice(scope.length + 1);
  if (!BRANCH_ID.test(branchId)) return null;
  const xid = gtrid.slice(XA_PREFIX.length);
  return isValidXid(xid) ? { xid, branchId } : null;
}
