/**
 * A fault-injecting TCP proxy, for loopback only.
 *
 * One FaultProxy listens in front of one port of one node (its raft, TC or HTTP port) and
 * forwards every accepted connection to the real port. A shared FaultTable says, per LINK
 * `source → destination` (node ids), what happens to its traffic:
 *
 *   ok         forwarded
 *   cut        the connection is reset (RST) — at once when the rule appears, and on every
 *              new attempt: what a crashed peer or an unplugged cable with an active host
 *              looks like; the sender notices fast.
 *   blackhole  the connection stays open and every byte, both ways, is dropped: what a
 *              partition in a real network looks like; the sender notices only through its
 *              own timeouts and keepalives.
 *
 * ## Who is the source?
 *
 * Every node reaches a peer at the SAME address (the membership carries one address per
 * member, and replicas must agree on it), so one proxy in front of node B carries A → B and
 * C → B alike, and the accepted socket says only "127.0.0.1:<ephemeral port>". The proxy
 * tells them apart with an `identify` hook that looks at the first bytes the source sends:
 * for the Raft transport, each stream's batches begin with the sender's node id
 * (`raftSenderSniffer`). Until a connection is identified its source is unknown, and only
 * rules naming any source (`*`) apply to it. The Raft transport sends nothing but the
 * HTTP/2 handshake before its first batch, and a chunk is checked against the rules after
 * identification and before it is forwarded — so no Raft message crosses a cut link.
 *
 * Links are one-directional at the Raft level (A's stream to B carries A's messages; B
 * answers on its own stream to A), but a rule governs the whole TCP connection both ways,
 * so "isolate B" is the rules `B → *` and `* → B`.
 *
 * Loopback only: the constructor refuses a listen or target host outside 127.0.0.0/8 / ::1.
 */
import { createServer, Socket, type Server } from 'node:net';
import type { Logger } from 'pino';
import { MAX_PROXY_CONNECTIONS, PROXY_SNIFF_MAX_BYTES } from './limits.ts';

export type LinkMode = 'ok' | 'cut' | 'blackhole';
/** A link's source or destination: a node id, or `*` for any. */
export const ANY = '*';

const SEVERITY: Record<LinkMode, number> = { ok: 0, blackhole: 1, cut: 2 };

/**
 * The rules of every proxy of a run: per link, a mode. Proxies re-check their connections when it
 * changes.
 */
export class FaultTable {
  private readonly rules = new Map<string, LinkMode>();
  private readonly listeners = new Set<() => void>();

  /** Sets the mode of `src → dst` (either may be `*`); `ok` removes the rule. */
  set(src: string, dst: string, mode: LinkMode): void {
    const key = `${src}>${dst}`;
    if (mode === 'ok') this.rules.delete(key);
    else this.rules.set(key, mode);
    this.changed();
  }

  /** Cuts or black-holes every link into and out of `node`. */
  isolate(node: string, mode: Exclude<LinkMode, 'ok'>): void {
    this.rules.set(`${node}>${ANY}`, mode);
    this.rules.set(`${ANY}>${node}`, mode);
    this.changed();
  }

  /** Removes every rule. */
  heal(): void {
    if (this.rules.size === 0) return;
    this.rules.clear();
    this.changed();
  }

  /**
   * The most severe rule matching `src → dst`; `src` null = not identified yet (only `* → dst`
   * rules apply).
   */
  modeOf(src: string | null, dst: string): LinkMode {
    const keys =
      src === null
        ? [`${ANY}>${dst}`, `${ANY}>${ANY}`]
        : [`${src}>${dst}`, `${ANY}>${dst}`, `${src}>${ANY}`, `${ANY}>${ANY}`];
    let mode: LinkMode = 'ok';
    for (const k of keys) {
      const m = this.rules.get(k);
      if (m !== undefined && SEVERITY[m] > SEVERITY[mode]) mode = m;
    }
    return mode;
  }

  /** The rules, for logs and reports. */
  describe(): Record<string, LinkMode> {
    return Object.fromEntries(this.rules);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}

export interface HostPort {
  host: string;
  port: number;
}

export interface FaultProxyOptions {
  /** For logs: e.g. `node2.raft`. */
  name: string;
  /** The destination node id (the `dst` of this proxy's links). */
  dst: string;
  listen: HostPort;
  target: HostPort;
  table: FaultTable;
  /** Names the source of a connection from the bytes it sent so far, or null (not yet). */
  identify?: (sent: Buffer, dst: string) => string | null;
  logger: Logger;
}

export interface ProxyStats {
  accepted: number;
  /** Connections reset by a cut rule. */
  reset: number;
  forwardedBytes: number;
  droppedBytes: number;
  /** Connections whose source was never identified within PROXY_SNIFF_MAX_BYTES. */
  unidentified: number;
}

interface Conn {
  down: Socket;
  up: Socket;
  src: string | null;
  sniff: Buffer | null;
  closed: boolean;
}

export function isLoopback(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '::1' || host === 'localhost';
}

export class FaultProxy {
  readonly stats: ProxyStats = {
    accepted: 0,
    reset: 0,
    forwardedBytes: 0,
    droppedBytes: 0,
    unidentified: 0,
  };
  private readonly server: Server;
  private readonly conns = new Set<Conn>();
  private readonly unsubscribe: () => void;
  private readonly log: Logger;

  constructor(private readonly opts: FaultProxyOptions) {
    if (!isLoopback(opts.listen.host) || !isLoopback(opts.target.host)) {
      throw new Error(
        `fault proxy ${opts.name}: loopback addresses only (listen ${opts.listen.host}, target ${opts.target.host})`,
      );
    }
    this.log = opts.logger.child({ proxy: opts.name });
    this.server = createServer({ pauseOnConnect: true }, (down) => this.accept(down));
    this.server.maxConnections = MAX_PROXY_CONNECTIONS;
    this.unsubscribe = opts.table.onChange(() => this.recheck());
  }

  get name(): string {
    return this.opts.name;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.listen.port, this.opts.listen.host, () => {
        this.server.off('error', reject);
        this.server.on('error', (err) => this.log.warn({ err }, 'proxy server error'));
        resolve();
      });
    });
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  /** Open connections by source (`?` = not identified yet). */
  connectionsBySource(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of this.conns) out[c.src ?? '?'] = (out[c.src ?? '?'] ?? 0) + 1;
    return out;
  }

  async close(): Promise<void> {
    this.unsubscribe();
    for (const c of this.conns) this.drop(c, false);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(down: Socket): void {
    this.stats.accepted++;
    const up = new Socket();
    const conn: Conn = {
      down,
      up,
      src: null,
      sniff: this.opts.identify ? Buffer.alloc(0) : null,
      closed: false,
    };
    this.conns.add(conn);
    const onError = (err: Error) => {
      this.log.debug({ err: err.message, src: conn.src }, 'proxied connection error');
      this.drop(conn, false);
    };
    down.on('error', onError);
    up.on('error', onError);
    down.setNoDelay(true);
    if (this.opts.table.modeOf(null, this.opts.dst) === 'cut') {
      this.drop(conn, true);
      return;
    }
    // A FIN is passed on as a FIN; the connection is dropped when either side closes.
    down.on('end', () => up.end());
    up.on('end', () => down.end());
    down.on('close', () => this.drop(conn, false));
    up.on('close', () => this.drop(conn, false));
    up.connect(this.opts.target.port, this.opts.target.host, () => {
      up.setNoDelay(true);
      down.resume();
    });
    down.on('data', (chunk: Buffer) => this.forward(conn, chunk, down, up, true));
    up.on('data', (chunk: Buffer) => this.forward(conn, chunk, up, down, false));
  }

  private forward(conn: Conn, chunk: Buffer, from: Socket, to: Socket, fromSource: boolean): void {
    if (conn.closed) return;
    if (fromSource && conn.sniff !== null && conn.src === null) this.sniff(conn, chunk);
    const mode = this.opts.table.modeOf(conn.src, this.opts.dst);
    if (mode === 'cut') {
      this.drop(conn, true);
      return;
    }
    if (mode === 'blackhole') {
      this.stats.droppedBytes += chunk.length;
      return;
    }
    this.stats.forwardedBytes += chunk.length;
    // Backpressure: a slow receiver pauses the sender instead of growing our buffers.
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  }

  private sniff(conn: Conn, chunk: Buffer): void {
    const seen = Buffer.concat([conn.sniff!, chunk]);
    const src = this.opts.identify!(seen, this.opts.dst);
    if (src !== null) {
      conn.src = src;
      conn.sniff = null;
      this.log.debug({ src }, 'identified connection source');
    } else if (seen.length >= PROXY_SNIFF_MAX_BYTES) {
      conn.sniff = null;
      this.stats.unidentified++;
      this.log.warn(
        { bytes: seen.length },
        'could not identify the source of a connection; only rules for any source apply to it',
      );
    } else {
      conn.sniff = seen;
    }
  }

  /** A rule changed: reset connections on links now cut (black-holed ones stall by themselves). */
  private recheck(): void {
    for (const c of this.conns)
      if (this.opts.table.modeOf(c.src, this.opts.dst) === 'cut') this.drop(c, true);
  }

  private drop(conn: Conn, reset: boolean): void {
    if (conn.closed) return;
    conn.closed = true;
    this.conns.delete(conn);
    if (reset) {
      this.stats.reset++;
      // RST, not FIN: the peer sees ECONNRESET at once, as with a crashed host.
      resetSocket(conn.down);
      resetSocket(conn.up);
    } else {
      conn.down.destroy();
      conn.up.destroy();
    }
  }
}

/** Resets a socket (RST); one that never connected (or already closed) is just destroyed. */
function resetSocket(s: Socket): void {
  if (s.destroyed) return;
  // resetAndDestroy on a socket without a connection destroys it WITH an error; avoid that.
  if (s.pending) s.destroy();
  else s.resetAndDestroy();
}

/**
 * Identifies a Raft transport stream (proto/raft.proto) by its first MessageBatch: the
 * protobuf starts `0x0a <len> <from> 0x12 <len> <to>` (fields 1 and 2, strings), inside a
 * gRPC DATA frame (uncompressed: the transport sets no compression). Looks for each known
 * node id as `from` with this proxy's node as `to`.
 */
export function raftSenderSniffer(
  nodeIds: () => readonly string[],
): (sent: Buffer, dst: string) => string | null {
  return (sent, dst) => {
    const to = Buffer.from(dst, 'utf8');
    for (const id of nodeIds()) {
      if (id === dst) continue;
      const from = Buffer.from(id, 'utf8');
      if (from.length > 127 || to.length > 127) continue; // one-byte varint lengths only
      const pattern = Buffer.concat([
        Buffer.from([0x0a, from.length]),
        from,
        Buffer.from([0x12, to.length]),
        to,
      ]);
      if (sent.indexOf(pattern) >= 0) return id;
    }
    return null;
  };
}
