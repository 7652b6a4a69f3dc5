/**
 * A member's endpoints and how they travel in the Raft membership.
 *
 * Node identity is the stable node id; addresses are attributes of a member that live in
 * `ConfState.context[nodeId]` as a JSON string (see `encodeMemberContext`). They enter the
 * log with the change that adds the member (bootstrap members' come from config), so every
 * node — and every snapshot — agrees on where each member can be reached.
 *
 * Stored form (stable; other layers parse it too):
 *   {"raft":"127.0.0.1:9091","transaction":"127.0.0.1:8091","control":"127.0.0.1:7091"}
 */
import { BadRequestError } from '../../shared/errors.ts';
import { formatHostPort, type HostPort } from '../../shared/metadata.ts';
import { HOST_PATTERN } from './validate.ts';

export { formatHostPort, type HostPort };

export interface MemberEndpoints {
  /** The Raft peer port ("internal" in the metadata, as in Seata). */
  raft: HostPort;
  /** The TC gRPC port clients use. */
  transaction: HostPort;
  /** The HTTP openapi port ("control"). */
  control: HostPort;
}

/** Upper bound on one member's encoded context, in characters. */
export const MAX_MEMBER_CONTEXT_CHARS = 1024;

/** Parses "host:port" or "[v6]:port". Returns null on anything else. */
export function parseHostPort(s: string): HostPort | null {
  const text = s.trim();
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return null;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0 || text.indexOf(':') !== colon) return null;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  if (host.length === 0 || host.length > 253 || !HOST_PATTERN.test(host)) return null;
  return { host, port };
}

export function encodeMemberContext(e: MemberEndpoints): string {
  return JSON.stringify({
    raft: formatHostPort(e.raft),
    transaction: formatHostPort(e.transaction),
    control: formatHostPort(e.control),
  });
}

/**
 * Reads a member's context. Lenient about the form of each endpoint ("host:port" or
 * {host, port}); returns null if the context is missing or unreadable, or lacks one of the
 * three endpoints — the metadata then falls back to configured endpoints or shows none,
 * rather than failing the whole request.
 */
export function decodeMemberContext(context: string | undefined): MemberEndpoints | null {
  const p = decodePartialMemberContext(context);
  return p.raft && p.transaction && p.control
    ? { raft: p.raft, transaction: p.transaction, control: p.control }
    : null;
}

/**
 * The endpoints a context names, each one optional. Bootstrap members written by the
 * RaftNode carry only `raft` for peers (their other endpoints come from config), so
 * callers merge this with what they know.
 */
export function decodePartialMemberContext(context: string | undefined): Partial<MemberEndpoints> {
  if (context === undefined || context === '' || context.length > MAX_MEMBER_CONTEXT_CHARS)
    return {};
  const trimmed = context.trim();
  if (!trimmed.startsWith('{')) {
    const raft = parseHostPort(trimmed);
    return raft ? { raft } : {};
  }
  let v: unknown;
  try {
    v = JSON.parse(trimmed);
  } catch {
    return {};
  }
  if (typeof v !== 'object' || v === null) return {};
  const o = v as Record<string, unknown>;
  const out: Partial<MemberEndpoints> = {};
  const raft = toHostPort(o.raft ?? o.internal);
  const transaction = toHostPort(o.transaction ?? o.tc);
  const control = toHostPort(o.control ?? o.http);
  if (raft) out.raft = raft;
  if (transaction) out.transaction = transaction;
  if (control) out.control = control;
  return out;
}

function toHostPort(x: unknown): HostPort | null {
  if (typeof x === 'string') return parseHostPort(x);
  if (typeof x === 'object' && x !== null) {
    const o = x as Record<string, unknown>;
    if (typeof o.host === 'string' && typeof o.port === 'number')
      return parseHostPort(formatHostPort({ host: o.host, port: o.port }));
  }
  return null;
}

/** Parses an endpoint given by a client; throws a BadRequestError naming the field. */
export function requireHostPort(s: unknown, field: string): HostPort {
  if (typeof s !== 'string') throw new BadRequestError(`${field} must be a "host:port" string`);
  const hp = parseHostPort(s);
  if (!hp)
    throw new BadRequestError(
      `${field} ${JSON.stringify(s.slice(0, 80))} is not a valid "host:port"`,
    );
  return hp;
}

export function sameHostPort(a: HostPort, b: HostPort): boolean {
  return a.host === b.host && a.port === b.port;
}
