/**
 * One client connection to one TC node: unary calls, the multiplexed `Calls` stream that
 * carries many calls per message, and the RM channel streams opened on it.
 *
 * Why the stream: with grpc-js every unary call is an HTTP/2 stream of its own (headers,
 * trailers, a deadline timer, several promise hops) and that, not the network, is what
 * caps a Node client at a few thousand calls per second per process. The multiplexer
 * gathers every call issued in one turn of the event loop into one CallBatch (bounded by
 * MAX_CALLS_PER_BATCH and MAX_BATCH_CHARS) and matches results by correlation id.
 *
 * ## A connection is disposable
 *
 * A connection that failed is never reused: grpc-js would keep the channel and reconnect
 * with its own backoff (and a SIGSTOPped peer's TCP connection looks healthy until
 * keepalive says otherwise). So the first sign of a dead connection — the channel leaving
 * READY, a transport failure of any call or stream on it, HTTP/2 keepalive (2 s ping,
 * 2 s timeout) — BREAKS it: every call in flight on it fails at once with a TransportError
 * (outcome unknown; the caller retries what is safe to repeat), its RM streams are
 * cancelled, the channel is closed, and the owner (TcClient) drops it, so the next call
 * dials afresh. `abort()` does the same on the owner's word (the node is no longer the
 * leader). Each connection has its own subchannel (`grpc.use_local_subchannel_pool`), so a
 * fresh one really is a new TCP connection.
 *
 * A call that fails before the channel was ever READY provably never left this process:
 * it fails with ConnectFailedError (not sent), which any call may retry.
 */
import { tcChannelCredentials, tcTlsChannelOptions, type ClientTls } from '../tls.ts';
import * as grpc from '@grpc/grpc-js';
import { deadlines, type CancelDeadline } from '../../shared/deadline-wheel.ts';
import { TimeoutError } from '../../shared/errors.ts';
import { latencyTrace } from '../../shared/latency-trace.ts';
import type { HostPort } from '../http-metadata.ts';
import {
  AttemptAbortedError,
  ConnectFailedError,
  TransportError,
  UnavailableError,
  grpcToError,
} from './errors.ts';
import {
  CLIENT_KEEPALIVE_TIME_MS,
  CLIENT_KEEPALIVE_TIMEOUT_MS,
  CLIENT_RECONNECT_BACKOFF_INITIAL_MS,
  CLIENT_RECONNECT_BACKOFF_MAX_MS,
  MAX_BATCH_CHARS,
  MAX_CALLS_PER_BATCH,
  MAX_INFLIGHT_STREAM_CALLS,
  MAX_TC_MESSAGE_BYTES,
} from './limits.ts';
import {
  tcServiceConstructor,
  type AnyResponseWire,
  type CallBatchWire,
  type CallKind,
  type CallWire,
  type Decoded,
  type OneOf,
  type ResultBatchWire,
  type ResultWire,
  type RmToTcFields,
  type TcToRmFields,
} from '../../shared/tc-wire.ts';

/** What the RM channel writes and reads. */
export type RmToTcWire = OneOf<RmToTcFields>;
export type TcToRmWire = Decoded<TcToRmFields, 'message'>;

type UnaryMethod = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: AnyResponseWire) => void,
) => grpc.ClientUnaryCall;

/** The generated client, typed as far as this module uses it. */
type TcGrpcClient = grpc.Client & {
  Calls(options?: grpc.CallOptions): grpc.ClientDuplexStream<CallBatchWire, ResultBatchWire>;
  RmChannel(options?: grpc.CallOptions): grpc.ClientDuplexStream<RmToTcWire, TcToRmWire>;
} & Record<string, UnaryMethod>;

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_TC_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_TC_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': CLIENT_KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': CLIENT_KEEPALIVE_TIMEOUT_MS,
  // grpc-js reads exactly 1 (not true) as "on".
  'grpc.keepalive_permit_without_calls': 1,
  // A connection of its own per TcConnection: a replaced connection must not inherit the
  // old one's (possibly dead) transport from the process-wide subchannel pool.
  'grpc.use_local_subchannel_pool': 1,
  'grpc.initial_reconnect_backoff_ms': CLIENT_RECONNECT_BACKOFF_INITIAL_MS,
  'grpc.max_reconnect_backoff_ms': CLIENT_RECONNECT_BACKOFF_MAX_MS,
};

export function formatAddress(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

type CallStream = grpc.ClientDuplexStream<CallBatchWire, ResultBatchWire>;
export type RmStream = grpc.ClientDuplexStream<RmToTcWire, TcToRmWire>;

interface PendingCall {
  kind: CallKind;
  resolve: (r: AnyResponseWire) => void;
  reject: (e: Error) => void;
  /** Cancels the call's deadline (one wheel for all calls, not a timer each). */
  cancelDeadline: CancelDeadline;
  /**
   * Written to a stream (a stream failure fails it); calls still in the outbox go on the next
   * stream.
   */
  sent: boolean;
}

interface PendingUnary {
  call: grpc.ClientUnaryCall | null;
  reject: (e: Error) => void;
}

export interface TcConnectionEvents {
  /** Called once when the connection breaks or is aborted or closed: the owner forgets it. */
  onClosed?: (conn: TcConnection, reason: Error) => void;
}

export class TcConnection {
  readonly address: string;
  readonly target: HostPort;
  readonly client: TcGrpcClient;
  private stream: CallStream | null = null;
  private readonly pending = new Map<number, PendingCall>();
  private readonly unaries = new Set<PendingUnary>();
  private readonly rmStreams = new Set<RmStream>();
  private outbox: CallWire[] = [];
  private outboxChars = 0;
  private flushScheduled = false;
  private nextId = 1;
  private closedReason: Error | null = null;
  private everReady = false;
  private readonly events: TcConnectionEvents;

  constructor(target: HostPort, events: TcConnectionEvents = {}, tls: ClientTls | null = null) {
    this.target = target;
    this.address = formatAddress(target);
    this.events = events;
    const Ctor = tcServiceConstructor();
    this.client = new Ctor(this.address, tcChannelCredentials(tls), {
      ...CHANNEL_OPTIONS,
      ...tcTlsChannelOptions(tls),
    }) as TcGrpcClient;
    this.watchState(this.client.getChannel().getConnectivityState(true));
  }

  /** False once broken, aborted or closed: the owner must make a new one. */
  get usable(): boolean {
    return this.closedReason === null;
  }

  /** Whether the channel ever reached READY (a call that failed before that was never sent). */
  get wasReady(): boolean {
    return this.everReady;
  }

  /**
   * One unary call; resolves with the TC's response (which may carry an error), rejects on
   * transport failure. `headers`: call metadata (e.g. the operator of an operator call).
   */
  unary(
    method: string,
    request: unknown,
    timeoutMs: number,
    headers: Readonly<Record<string, string>> = {},
  ): Promise<AnyResponseWire> {
    if (this.closedReason) return Promise.reject(this.closedReason);
    const fn = this.client[method];
    if (typeof fn !== 'function') return Promise.reject(new TypeError(`no TC method ${method}`));
    return new Promise((resolve, reject) => {
      const entry: PendingUnary = { call: null, reject };
      this.unaries.add(entry);
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
      entry.call = fn.call(
        this.client,
        request,
        metadata,
        { deadline: Date.now() + timeoutMs },
        (err, response) => {
          if (!this.unaries.delete(entry)) return; // aborted already
          if (!err) {
            resolve(response!);
            return;
          }
          let e = grpcToError(err, `${method} at ${this.address}`);
          if (!this.everReady && (e instanceof TimeoutError || e instanceof TransportError))
            e = new ConnectFailedError(
              `${method} at ${this.address}: no connection within ${timeoutMs} ms (${e.message})`,
              { cause: err },
            );
          if (e instanceof TransportError) this.break(e);
          reject(e);
        },
      );
    });
  }

  /** One call over the multiplexed stream. */
  streamCall(kind: CallKind, request: object, timeoutMs: number): Promise<AnyResponseWire> {
    if (this.closedReason) return Promise.reject(this.closedReason);
    if (this.pending.size >= MAX_INFLIGHT_STREAM_CALLS) {
      return Promise.reject(
        new UnavailableError(
          `${MAX_INFLIGHT_STREAM_CALLS} calls are in flight on the stream to ${this.address}, the limit`,
        ),
      );
    }
    const id = this.allocateId();
    latencyTrace?.(`c.call.${kind}`, id);
    return new Promise<AnyResponseWire>((resolve, reject) => {
      const cancelDeadline = deadlines.after(timeoutMs, () => {
        if (!this.pending.delete(id)) return;
        if (!this.everReady) {
          // grpc-js holds a stream until the channel is READY: nothing left this process.
          const err = new ConnectFailedError(
            `${kind} at ${this.address}: no connection within ${timeoutMs} ms`,
          );
          reject(err);
          this.break(err);
          return;
        }
        reject(new TimeoutError(`${kind} at ${this.address} got no answer within ${timeoutMs} ms`));
      });
      this.pending.set(id, { kind, resolve, reject, cancelDeadline, sent: false });
      const chars = approxChars(request);
      if (
        this.outbox.length >= MAX_CALLS_PER_BATCH ||
        (this.outbox.length > 0 && this.outboxChars + chars > MAX_BATCH_CHARS)
      )
        this.flush();
      this.outbox.push({ id, [kind]: request });
      this.outboxChars += chars;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // Every call issued in this turn of the event loop leaves in one batch.
        setImmediate(() => this.flush());
      }
    });
  }

  /** Opens an RM channel stream; it is cancelled when this connection breaks or closes. */
  openRmStream(): RmStream {
    if (this.closedReason) throw this.closedReason;
    const stream = this.client.RmChannel();
    this.rmStreams.add(stream);
    const forget = () => this.rmStreams.delete(stream);
    stream.once('close', forget);
    stream.once('error', forget);
    return stream;
  }

  /** Calls and streams in flight (for tests and logs). */
  get inflight(): number {
    return this.pending.size + this.unaries.size + this.rmStreams.size;
  }

  /**
   * Gives up on everything in flight here — each call fails with `reason` (use an
   * AttemptAbortedError: outcome unknown) — and closes the connection.
   */
  abort(reason: Error): void {
    this.shutdown(reason);
  }

  close(): void {
    this.shutdown(new UnavailableError('the TC client is closed'));
  }

  // -------------------------------------------------------------------------------------

  /** The connection is dead (or never came up): fail what is in flight and close it. */
  private break(err: Error): void {
    if (this.closedReason) return;
    const reason =
      err instanceof TransportError
        ? err
        : new TransportError(`the connection to ${this.address} failed: ${err.message}`, {
            cause: err,
            notSent: !this.everReady,
          });
    this.shutdown(reason);
  }

  private shutdown(reason: Error): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    // A call not yet written, or written to a channel that never connected, never left
    // this process: it fails as not sent (any call may retry that). The rest: `reason`.
    const notSentMessage = `${reason.message} (the call was not sent)`;
    const notSent = () =>
      reason instanceof AttemptAbortedError
        ? new AttemptAbortedError(notSentMessage, { cause: reason, notSent: true })
        : new ConnectFailedError(notSentMessage, { cause: reason });
    const failure = (sent: boolean) =>
      (sent && this.everReady) || !(reason instanceof TransportError) ? reason : notSent();
    for (const [id, p] of [...this.pending]) {
      this.pending.delete(id);
      p.cancelDeadline();
      p.reject(failure(p.sent));
    }
    this.outbox = [];
    this.outboxChars = 0;
    for (const u of [...this.unaries]) {
      this.unaries.delete(u);
      u.reject(failure(true));
      try {
        u.call?.cancel();
      } catch {
        // gone
      }
    }
    const stream = this.stream;
    this.stream = null;
    try {
      stream?.cancel();
    } catch {
      // gone
    }
    for (const s of [...this.rmStreams]) {
      this.rmStreams.delete(s);
      try {
        s.cancel();
      } catch {
        // gone
      }
    }
    try {
      this.client.close();
    } catch {
      // closed
    }
    this.events.onClosed?.(this, reason);
  }

  /**
   * Breaks the connection when the channel leaves READY (a dropped connection, keepalive) or fails
   * to connect.
   */
  private watchState(current: grpc.connectivityState): void {
    if (this.closedReason) return;
    if (current === grpc.connectivityState.READY) this.everReady = true;
    try {
      this.client.getChannel().watchConnectivityState(current, Infinity, () => {
        if (this.closedReason) return;
        const next = this.client.getChannel().getConnectivityState(false);
        if (next === grpc.connectivityState.READY) this.everReady = true;
        const lost = this.everReady && next !== grpc.connectivityState.READY;
        if (
          lost ||
          next === grpc.connectivityState.TRANSIENT_FAILURE ||
          next === grpc.connectivityState.SHUTDOWN
        ) {
          this.break(
            lost
              ? new TransportError(
                  `the connection to ${this.address} was lost (${grpc.connectivityState[next]})`,
                )
              : new ConnectFailedError(
                  `cannot connect to ${this.address} (${grpc.connectivityState[next]})`,
                ),
          );
          return;
        }
        this.watchState(next);
      });
    } catch {
      // The channel was closed meanwhile.
    }
  }

  private allocateId(): number {
    // uint32 correlation ids; skip any still in flight after a wrap.
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.closedReason) return;
    // Calls that timed out while waiting here are not sent at all.
    const calls = this.outbox.filter((c) => this.pending.has(c.id));
    this.outbox = [];
    this.outboxChars = 0;
    if (calls.length === 0) return;
    for (const c of calls) this.pending.get(c.id)!.sent = true;
    const stream = this.openStream();
    latencyTrace?.('c.write', calls.length);
    try {
      stream.write({ calls });
    } catch (err) {
      this.onStreamFailure(stream, grpcToError(err, `Calls at ${this.address}`));
    }
  }

  private openStream(): CallStream {
    if (this.stream) return this.stream;
    const stream = this.client.Calls();
    this.stream = stream;
    stream.on('data', (batch: { results?: ResultWire[] }) => {
      latencyTrace?.('c.recv', batch.results?.length ?? 0);
      for (const r of batch.results ?? []) this.onResult(r);
    });
    stream.on('error', (err: Error) =>
      this.onStreamFailure(stream, grpcToError(err, `Calls at ${this.address}`)),
    );
    stream.on('end', () =>
      this.onStreamFailure(stream, new TransportError(`the call stream to ${this.address} ended`)),
    );
    return stream;
  }

  private onResult(r: ResultWire): void {
    const pending = this.pending.get(r.id);
    if (!pending) return; // timed out already
    this.pending.delete(r.id);
    latencyTrace?.('c.result', r.id);
    pending.cancelDeadline();
    const response = (r[pending.kind] ?? r.invalid) as AnyResponseWire | undefined;
    if (response && typeof response === 'object') pending.resolve(response);
    else
      pending.reject(new UnavailableError(`the TC answered ${pending.kind} with an empty result`));
  }

  private onStreamFailure(stream: CallStream, err: Error): void {
    if (this.stream !== stream) return;
    this.stream = null;
    if (err instanceof TransportError) {
      // The connection is suspect: everything on it fails (outcome unknown) and it is replaced.
      this.break(err);
      return;
    }
    // A definite refusal of the stream (a malformed batch): fail what it carried.
    for (const [id, p] of [...this.pending]) {
      if (!p.sent) continue;
      this.pending.delete(id);
      p.cancelDeadline();
      p.reject(err);
    }
  }
}

/** The characters of a request's strings (lock keys and application data dominate). */
function approxChars(request: object): number {
  let n = 16;
  for (const v of Object.values(request)) if (typeof v === 'string') n += v.length + 4;
  return n * 3;
}
