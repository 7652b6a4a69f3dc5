/**
 * Member context: the opaque string a membership change carries for each member (see
 * ConfState.context). A Concord node stores JSON there, `{"raft":"host:port", ...}` plus
 * whatever else the server layer adds (its client-facing addresses). The driver hands the
 * context to the transport as the peer's address; PeerDirectory turns it into a raft
 * address, falling back to the node's configured peers for a member whose context names
 * none (a bare "host:port" context is accepted too).
 */
import type { Message, NodeId } from '../core/types.ts';
import type { PeerTransport } from '../ports.ts';
import { nodeIdEntries } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { parseHostPort } from './config.ts';

export interface MemberContext {
  raft: string;
  [key: string]: string;
}

export function encodeMemberContext(ctx: MemberContext): string {
  return JSON.stringify(ctx);
}

/** The raft address a context names, or null if it names none. */
export function raftAddressOf(context: string): string | null {
  const trimmed = context.trim();
  if (trimmed === '') return null;
  if (trimmed.startsWith('{')) {
    try {
      const parsed: unknown = JSON.parse(trimmed);
      if (
        typeof parsed === 'object' &&
        parsed !== null &&
        typeof (parsed as { raft?: unknown }).raft === 'string'
      ) {
        const raft = (parsed as { raft: string }).raft;
        return parseHostPort(raft) ? raft : null;
      }
    } catch {
      return null;
    }
    return null;
  }
  return parseHostPort(trimmed) ? trimmed : null;
}

/** Parses a member context into its fields (empty when it is not JSON). */
export function memberContextFields(context: string): Record<string, string> {
  try {
    const parsed: unknown = JSON.parse(context);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
    return Object.fromEntries(
      Object.entries(parsed).filter(([, v]) => typeof v === 'string'),
    ) as Record<string, string>;
  } catch {
    return {};
  }
}

/**
 * Wraps the real transport: setPeers receives member contexts from the driver and passes
 * on raft addresses. The configured peers (the operator's seed list) stay reachable even
 * when not (or no longer, or not yet) members: a node started with `join` has no
 * membership until the leader adds it, and must still accept the leader's messages.
 */
export class PeerDirectory implements PeerTransport {
  constructor(
    private readonly inner: PeerTransport,
    private readonly seeds: Readonly<Record<NodeId, string>>,
    private readonly selfId: NodeId,
    private readonly logger: Logger,
  ) {
    this.setPeers(new Map());
  }

  send(messages: Message[]): void {
    this.inner.send(messages);
  }

  onMessage(handler: (message: Message) => void): void {
    this.inner.onMessage(handler);
  }

  setPeers(members: ReadonlyMap<NodeId, string>): void {
    const resolved = new Map<NodeId, string>();
    for (const [id, address] of nodeIdEntries(this.seeds))
      if (id !== this.selfId) resolved.set(id, address);
    for (const [id, context] of members) {
      if (id === this.selfId) continue;
      const address = raftAddressOf(context) ?? this.seeds[id] ?? null;
      if (address === null) {
        this.logger.warn(
          { peer: id, context },
          'member has no raft address in its context or the configured peers; unreachable',
        );
        continue;
      }
      resolved.set(id, address);
    }
    this.inner.setPeers(resolved);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
