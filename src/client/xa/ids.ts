/**
 * The XA transaction identifiers Concord gives its branches, derived from the xid and the
 * branch id with a Concord prefix, so recovery can tell Concord's prepared transactions from
 * anyone else's and learn each one's xid again (to ask the TC its outcome):
 *
 *   PostgreSQL gid:      concord-xa:<branchId>:<xid>        (< 200 bytes: GIDSIZE)
 *   MySQL gtrid / bqual: concord-xa:<xid> / <branchId>      (≤ 64 bytes each), formatID 1
 *
 * An xid is `host:port:transactionId` (printable ASCII, no quote), a branch id decimal.
 */
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

export function pgGid(ref: BranchRef): string {
  return `${XA_PREFIX}${ref.branchId}:${ref.xid}`;
}

/** Throws XaIdentifierTooLongError when `xid` cannot fit the PostgreSQL gid. */
export function checkPgXid(xid: string): void {
  const bytes = Buffer.byteLength(pgGid({ xid, branchId: '18446744073709551615' }));
  if (bytes > PG_MAX_GID_BYTES) throw new XaIdentifierTooLongError('gid', bytes, PG_MAX_GID_BYTES);
}

/** The branch a Concord gid names, or null for anyone else's prepared transaction. */
export function parsePgGid(gid: string): BranchRef | null {
  if (!gid.startsWith(XA_PREFIX)) return null;
  const rest = gid.slice(XA_PREFIX.length);
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
export function mysqlXidClause(ref: BranchRef): string {
  const hex = (s: string) => `X'${Buffer.from(s, 'utf8').toString('hex')}'`;
  return `${hex(mysqlGtrid(ref.xid))},${hex(ref.branchId)},${MYSQL_FORMAT_ID}`;
}

/** A row of XA RECOVER, as Concord's branch, or null for anyone else's. */
export function parseMysqlRecoverRow(row: {
  formatID: number | string;
  gtrid_length: number | string;
  data: string | Buffer;
}): BranchRef | null {
  if (Number(row.formatID) !== MYSQL_FORMAT_ID) return null;
  const data = Buffer.isBuffer(row.data) ? row.data : Buffer.from(String(row.data), 'utf8');
  const gtridLength = Number(row.gtrid_length);
  const gtrid = data.subarray(0, gtridLength).toString('utf8');
  const branchId = data.subarray(gtridLength).toString('utf8');
  if (!gtrid.startsWith(XA_PREFIX) || !BRANCH_ID.test(branchId)) return null;
  const xid = gtrid.slice(XA_PREFIX.length);
  return isValidXid(xid) ? { xid, branchId } : null;
}
