/**
 * The ids of the transaction vocabulary, branded so that an xid, a branch id and a node id
 * cannot be passed for one another, and parsed in one place:
 *
 *  - xid: `"<tc-host>:<port>:<transactionId>"` (Seata's). `parseXid` is strict on purpose:
 *    an xid arrives in headers and metadata that anyone can set and ends up in database
 *    rows, logs and TC requests. An edge validates it once (`requireXid`) and hands the
 *    branded `Xid` inward; nothing inside validates it again.
 *  - branch id: an unsigned 64-bit id, carried as a decimal string (JS numbers lose
 *    precision above 2^53).
 *  - node id: a cluster member's stable name: 1-64 letters, digits, "_", "." or "-", starting
 *    with a letter or digit. It enters from config, the CLI, the openapi's membership routes,
 *    the Raft transport (a frame's sender, a peer certificate) and the Raft's own disk; each
 *    edge parses it once (`isNodeId`, `requireNodeId`) and hands the branded `NodeId` inward.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { BadRequestError } from './errors.ts';
import { MAX_XID_CHARS } from './protocol-limits.ts';

declare const brand: unique symbol;
/** A string that has been validated as a `Name` (only the parsers below make one). */
export type Brand<Name extends string> = string & { readonly [brand]: Name };

/** A global transaction id, validated by parseXid. */
export type Xid = Brand<'Xid'>;
/** A branch id: an unsigned 64-bit id as a decimal string. */
export type BranchId = Brand<'BranchId'>;
/** A Raft member's (or db-mode node's) stable id, validated by isNodeId. */
export type NodeId = Brand<'NodeId'>;

export interface ParsedXid {
  /**
   * The TC's address as written in the xid: a host name, an IPv4 or an IPv6 address (brackets
   * removed).
   */
  readonly host: string;
  readonly port: number;
  /** Unsigned 64-bit id as a decimal string. */
  readonly transactionId: string;
}

/** Characters of a DNS host name (RFC 1123). */
const MAX_HOSTNAME_CHARS = 253;
/** Characters of one DNS label. */
const MAX_LABEL_CHARS = 63;
/** The largest transaction or branch id: ids are unsigned 64-bit. */
const MAX_ID = (1n << 64n) - 1n;

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const DECIMAL_ID = /^(?:0|[1-9][0-9]{0,19})$/;

function isHostname(host: string): boolean {
  if (host.length === 0 || host.length > MAX_HOSTNAME_CHARS) return false;
  // A purely numeric dotted name that is not a valid IPv4 address (999.1.1.1) is a typo, not a
  // host.
  if (/^[0-9.]+$/.test(host)) return isIPv4(host);
  return host.split('.').every((label) => label.length <= MAX_LABEL_CHARS && LABEL.test(label));
}

function parseXidHost(rawHost: string): string | null {
  if (rawHost.startsWith('[') && rawHost.endsWith(']')) {
    const host = rawHost.slice(1, -1);
    return isIPv6(host) ? host : null;
  }
  if (rawHost.includes(':')) return isIPv6(rawHost) ? rawHost : null;
  return isIP(rawHost) === 4 || isHostname(rawHost) ? rawHost : null;
}

function isDecimalId(text: string): boolean {
  return DECIMAL_ID.test(text) && BigInt(text) <= MAX_ID;
}

/**
 * Parses `<host>:<port>:<transactionId>`, or returns null.
 *
 * Parsed from the right: the last two fields are the port and the id, everything before is
 * the host. That keeps Seata's unbracketed IPv6 xids (`fe80::1:8091:42`) unambiguous, and
 * a bracketed `[fe80::1]` is accepted too.
 */
export function parseXid(value: unknown): ParsedXid | null {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_XID_CHARS) return null;
  const last = value.lastIndexOf(':');
  if (last <= 0) return null;
  const middle = value.lastIndexOf(':', last - 1);
  if (middle <= 0) return null;
  const portText = value.slice(middle + 1, last);
  const transactionId = value.slice(last + 1);
  if (!PORT.test(portText)) return null;
  const port = Number(portText);
  if (port > 65_535 || !isDecimalId(transactionId)) return null;
  const host = parseXidHost(value.slice(0, middle));
  return host === null ? null : { host, port, transactionId };
}

/** A refused value as an error message shows it: a string quoted and cut, else its type. */
function shown(value: unknown): string {
  if (typeof value !== 'string') return typeof value;
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

/** True for a well-formed xid. */
export function isValidXid(value: unknown): value is Xid {
  return parseXid(value) !== null;
}

/** The xid, branded; BadRequestError naming `field` unless it is well formed. */
export function requireXid(value: unknown, field = 'xid'): Xid {
  if (isValidXid(value)) return value;
  throw new BadRequestError(
    `${field} must be "<host>:<port>:<transactionId>" of at most ${MAX_XID_CHARS} characters, got ${shown(value)}`,
  );
}

/**
 * The xid of a transaction this TC begins: `host:port:transactionId`, an IPv6 host
 * unbracketed (as Seata writes it). Not checked here: the coordinator asserts once, when
 * it is built, that its address makes valid xids.
 */
export function formatXid(host: string, port: number, transactionId: string): Xid {
  return `${host}:${port}:${transactionId}` as Xid;
}

/** True for a decimal unsigned 64-bit id. */
export function isBranchId(value: unknown): value is BranchId {
  return typeof value === 'string' && isDecimalId(value);
}

/** The branch id, branded; BadRequestError unless it is a decimal 64-bit id. */
export function requireBranchId(value: unknown, field = 'branchId'): BranchId {
  if (isBranchId(value)) return value;
  throw new BadRequestError(`${field} must be a decimal 64-bit id`);
}

/** A node id: short, printable, no separators used in addresses or lists. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** What NODE_ID_PATTERN asks for, in words (for error messages). */
export const NODE_ID_HINT =
  '1–64 characters of letters, digits, "_", "." or "-", starting with a letter or digit';

/** True for a well-formed node id. */
export function isNodeId(value: unknown): value is NodeId {
  return typeof value === 'string' && NODE_ID_PATTERN.test(value);
}

/** The node id, branded; BadRequestError naming `field` unless it is well formed. */
export function requireNodeId(value: unknown, field = 'nodeId'): NodeId {
  if (isNodeId(value)) return value;
  throw new BadRequestError(`${field} must be a node id (${NODE_ID_HINT}), got ${shown(value)}`);
}

/**
 * The entries of a record keyed by node id, the keys still NodeIds (`Object.entries` widens
 * them to string; every key of such a record was a NodeId when it was written).
 */
export function nodeIdEntries<V>(record: Readonly<Record<NodeId, V>>): Array<[NodeId, V]> {
  return Object.entries(record) as Array<[NodeId, V]>;
}
