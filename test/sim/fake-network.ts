/**
 * The simulator's network: one FIFO queue per directed link. The simulator picks which
 * message to deliver (head or, to reorder, any other), drops and duplicates messages, and
 * blocks links (partitions, also one-way). Queues are bounded and drop on overflow, as the
 * PeerTransport contract says. Every message is copied on delivery: nodes share nothing.
 */
import type { Entry, Message, NodeId } from '../../src/raft/core/types.ts';
import type { PeerTransport } from '../../src/raft/ports.ts';

export function cloneEntry(e: Entry): Entry {
  return e.type === 'normal' ? { ...e, data: e.data.slice() } : { ...e, change: { ...e.change } };
}

export function cloneMessage(m: Message): Message {
  switch (m.type) {
    case 'app':
      return { ...m, entries: m.entries.map(cloneEntry) };
    case 'snap':
      return {
        ...m,
        chunk: m.chunk.slice(),
        meta: {
          ...m.meta,
          conf: {
            voters: [...m.meta.conf.voters],
            learners: [...m.meta.conf.learners],
            context: { ...m.meta.conf.context },
          },
        },
      };
    default:
      return { ...m };
  }
}

export function describeMessage(m: Message): string {
  const head = `${m.from}→${m.to} ${m.type} t${m.term}`;
  switch (m.type) {
    case 'app':
      return `${head} prev ${m.prevIndex}/${m.prevTerm} +${m.entries.length}${m.entries.length ? ` [${m.entries[0]!.index}..${m.entries.at(-1)!.index}]` : ''} c${m.commit}`;
    case 'appResp':
      return `${head} ${m.reject ? `REJECT ${m.index} hint ${m.hintIndex}/${m.hintTerm}` : `ok ${m.index}`}`;
    case 'vote':
    case 'preVote':
      return `${head} last ${m.lastLogIndex}/${m.lastLogTerm}${m.transfer ? ' transfer' : ''}`;
    case 'voteResp':
    case 'preVoteResp':
      return `${head} ${m.reject ? 'REJECT' : 'GRANT'}`;
    case 'heartbeat':
      return `${head} c${m.commit}${m.readCtx ? ` read ${m.readCtx}` : ''}`;
    case 'heartbeatResp':
      return `${head}${m.readCtx ? ` read ${m.readCtx}` : ''}`;
    case 'snap':
      return `${head} snap ${m.meta.index}/${m.meta.term} @${m.offset}+${m.chunk.length}${m.done ? ' done' : ''}`;
    case 'snapResp':
      return `${head} ${m.reject ? 'REJECT' : 'ok'} ${m.index} @${m.offset}`;
    case 'timeoutNow':
      return head;
  }
}

export interface NetworkObserver {
  /** Called as a message leaves `from`, before the network decides its fate. */
  onSend(from: NodeId, m: Message): void;
}

export class FakeNetwork {
  private readonly queues = new Map<string, Message[]>();
  private readonly blocked = new Set<string>();
  private readonly handlers = new Map<NodeId, FakeTransport>();
  readonly maxQueueLength: number;
  observer: NetworkObserver | null = null;
  sent = 0;
  delivered = 0;
  dropped = 0;

  constructor(maxQueueLength: number) {
    this.maxQueueLength = maxQueueLength;
  }

  static link(from: NodeId, to: NodeId): string {
    return `${from}>${to}`;
  }

  /** A transport for a new incarnation of `id`; the previous one (if any) is closed. */
  attach(id: NodeId): FakeTransport {
    this.handlers.get(id)?.closeNow();
    const t = new FakeTransport(this, id);
    this.handlers.set(id, t);
    return t;
  }

  detach(id: NodeId): void {
    this.handlers.get(id)?.closeNow();
    this.handlers.delete(id);
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.has(FakeNetwork.link(from, to));
  }

  block(from: NodeId, to: NodeId): void {
    const k = FakeNetwork.link(from, to);
    this.blocked.add(k);
    const q = this.queues.get(k);
    if (q) {
      this.dropped += q.length;
      q.length = 0;
    }
  }

  unblock(from: NodeId, to: NodeId): void {
    this.blocked.delete(FakeNetwork.link(from, to));
  }

  healAll(): void {
    this.blocked.clear();
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }

  blockedLinks(): string[] {
    return [...this.blocked].sort();
  }

  enqueue(from: NodeId, m: Message): void {
    this.sent++;
    this.observer?.onSend(from, m);
    const k = FakeNetwork.link(from, m.to);
    if (this.blocked.has(k)) {
      this.dropped++;
      return;
    }
    let q = this.queues.get(k);
    if (!q) {
      q = [];
      this.queues.set(k, q);
    }
    if (q.length >= this.maxQueueLength) {
      this.dropped++;
      return;
    }
    q.push(m);
  }

  /** Links with something queued, in a stable order. */
  busyLinks(): string[] {
    const out: string[] = [];
    for (const [k, q] of this.queues) if (q.length > 0) out.push(k);
    return out;
  }

  queueLength(link: string): number {
    return this.queues.get(link)?.length ?? 0;
  }

  queueLengths(): number[] {
    return [...this.queues.values()].map((q) => q.length);
  }

  totalQueued(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** Scripted tests: rewrites each delivered copy (e.g. corrupts a frame in flight). */
  tamper: ((m: Message) => Message) | null = null;

  peek(link: string, position: number): Message | undefined {
    return this.queues.get(link)?.[position];
  }

  /**
   * Delivers the message at `position` of `link` (0 = oldest). With `duplicate` a copy is
   * delivered and the original stays queued. Returns the message, or null if none.
   */
  deliver(link: string, position: number, duplicate = false): Message | null {
    const q = this.queues.get(link);
    const m = q?.[position];
    if (!q || m === undefined) return null;
    if (!duplicate) q.splice(position, 1);
    const t = this.handlers.get(m.to);
    if (!t || this.blocked.has(link)) {
      this.dropped++;
      return m;
    }
    this.delivered++;
    const copy = cloneMessage(m);
    t.receive(this.tamper ? this.tamper(copy) : copy);
    return m;
  }

  drop(link: string, position: number): Message | null {
    const q = this.queues.get(link);
    const m = q?.[position];
    if (!q || m === undefined) return null;
    q.splice(position, 1);
    this.dropped++;
    return m;
  }

  /** Forgets every queued message to or from `id` (a crashed node's sockets close). */
  flushNode(id: NodeId): void {
    for (const [k, q] of this.queues) {
      const [from, to] = k.split('>');
      if (from === id || to === id) {
        this.dropped += q.length;
        q.length = 0;
      }
    }
  }
}

export class FakeTransport implements PeerTransport {
  private handler: ((m: Message) => void) | null = null;
  private closed = false;
  peers: ReadonlySet<NodeId> = new Set();
  constructor(
    private readonly net: FakeNetwork,
    readonly id: NodeId,
  ) {}

  send(messages: Message[]): void {
    if (this.closed) return;
    for (const m of messages) this.net.enqueue(this.id, m);
  }

  onMessage(handler: (message: Message) => void): void {
    this.handler = handler;
  }

  setPeers(peers: ReadonlyMap<NodeId, string>): void {
    this.peers = new Set(peers.keys());
  }

  receive(m: Message): void {
    if (!this.closed) this.handler?.(m);
  }

  closeNow(): void {
    this.closed = true;
    this.handler = null;
  }

  async close(): Promise<void> {
    this.closeNow();
  }
}
