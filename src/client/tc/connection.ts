/**
 * One client connection to one TC node: unary calls, and the multiplexed `Calls` stream
 * that carries many calls per message.
 *
 * Why the stream: with grpc-js every unary call is an HTTP/2 stream of its own (headers,
 * trailers, a deadline timer, several promise hops) and that, not the network, is what
 * caps a Node client at a few thousand calls per second per process. The multiplexer
 * gathers every call issued in one turn of the event loop into one CallBatch (bounded by
 * MAX_CALLS_PER_BATCH and MAX_BATCH_CHARS) and matches results by correlation id.
 *
 * A broken stream fails its calls in flight with UnavailableError (their outcome is
 * unknown: the caller retries only what is safe to repeat) and is reopened by the next call.
 */
import * as grpc from '@grpc/grpc-js';
import { TimeoutError } from '../../shared/errors.ts';
import type { HostPort } from '../http-metadata.ts';
import { UnavailableError, grpcToError } from './errors.ts';
import {
  CLIENT_KEEPALIVE_TIME_MS,
  CLIENT_KEEPALIVE_TIMEOUT_MS,
  MAX_BATCH_CHARS,
  MAX_CALLS_PER_BATCH,
  MAX_INFLIGHT_STREAM_CALLS,
  MAX_TC_MESSAGE_BYTES,
} from './limits.ts';
import { tcClientConstructor, type CallWire, type ResultWire, type StreamCallKind, type TcGrpcClient, type WireResponse } from './proto.ts';

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_TC_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_TC_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': CLIENT_KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': CLIENT_KEEPALIVE_TIMEOUT_MS,
  // Reconnect quickly after a failover: the default backoff reaches 120 s.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2_000,
};

export function formatAddress(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

interface PendingCall {
  kind: StreamCallKind;
  resolve: (r: WireResponse) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** Written to a stream (a stream failure fails it); calls still in the outbox go on the next stream. */
  sent: boolean;
}

export class TcConnection {
  readonly address: string;
  readonly client: TcGrpcClient;
  private stream: grpc.ClientDuplexStream<{ calls: CallWire[] }, { results: ResultWire[] }> | null = null;
  private readonly pending = new Map<number, PendingCall>();
  private outbox: CallWire[] = [];
  private outboxChars = 0;
  private flushScheduled = false;
  private nextId = 1;
  private closed = false;

  constructor(target: HostPort) {
    this.address = formatAddress(target);
    const Ctor = tcClientConstructor();
    this.client = new Ctor(this.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as TcGrpcClient;
  }

  /** One unary call; resolves with the TC's response (which may carry an error), rejects on transport failure. */
  unary(method: string, request: unknown, timeoutMs: number): Promise<WireResponse> {
    if (this.closed) return Promise.reject(new UnavailableError('the TC client is closed'));
    const fn = this.client[method];
    if (typeof fn !== 'function') return Promise.reject(new TypeError(`no TC method ${method}`));
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, { deadline: Date.now() + timeoutMs }, (err, response) => {
        if (err) reject(grpcToError(err, `${method} at ${this.address}`));
        else resolve(response!);
      });
    });
  }

  /** One call over the multiplexed stream. */
  streamCall(kind: StreamCallKind, request: object, timeoutMs: number): Promise<WireResponse> {
    if (this.closed) return Promise.reject(new UnavailableError('the TC client is closed'));
    if (this.pending.size >= MAX_INFLIGHT_STREAM_CALLS) {
      return Promise.reject(new UnavailableError(`${MAX_INFLIGHT_STREAM_CALLS} calls are in flight on the stream to ${this.address}, the limit`));
    }
    const id = this.allocateId();
    return new Promise<WireResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new TimeoutError(`${kind} at ${this.address} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { kind, resolve, reject, timer, sent: false });
      const chars = approxChars(request);
      if (this.outbox.length >= MAX_CALLS_PER_BATCH || (this.outbox.length > 0 && this.outboxChars + chars > MAX_BATCH_CHARS)) this.flush();
      this.outbox.push({ id, [kind]: request });
      this.outboxChars += chars;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // Every call issued in this turn of the event loop leaves in one batch.
        setImmediate(() => this.flush());
      }
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new UnavailableError('the TC client is closed'));
    this.stream?.cancel();
    this.stream = null;
    this.client.close();
  }

  // -------------------------------------------------------------------------------------

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
    if (this.outbox.length === 0 || this.closed) return;
    // Calls that timed out while waiting here are not sent at all.
    const calls = this.outbox.filter((c) => this.pending.has(c.id));
    this.outbox = [];
    this.outboxChars = 0;
    if (calls.length === 0) return;
    for (const c of calls) this.pending.get(c.id)!.sent = true;
    const stream = this.openStream();
    try {
      stream.write({ calls });
    } catch (err) {
      this.onStreamFailure(stream, grpcToError(err, `Calls at ${this.address}`));
    }
  }

  private openStream(): grpc.ClientDuplexStream<{ calls: CallWire[] }, { results: ResultWire[] }> {
    if (this.stream) return this.stream;
    const stream = this.client.Calls();
    this.stream = stream;
    stream.on('data', (batch: { results?: ResultWire[] }) => {
      for (const r of batch.results ?? []) this.onResult(r);
    });
    stream.on('error', (err: Error) => this.onStreamFailure(stream, grpcToError(err, `Calls at ${this.address}`)));
    stream.on('end', () => this.onStreamFailure(stream, new UnavailableError(`the call stream to ${this.address} ended`)));
    return stream;
  }

  private onResult(r: ResultWire): void {
    const pending = this.pending.get(r.id);
    if (!pending) return; // timed out already
    this.pending.delete(r.id);
    clearTimeout(pending.timer);
    const response = (r[pending.kind] ?? r.invalid) as WireResponse | undefined;
    if (response && typeof response === 'object') pending.resolve(response);
    else pending.reject(new UnavailableError(`the TC answered ${pending.kind} with an empty result`));
  }

  private onStreamFailure(stream: grpc.ClientDuplexStream<{ calls: CallWire[] }, { results: ResultWire[] }>, err: Error): void {
    if (this.stream !== stream) return;
    this.stream = null;
    this.failAll(err, true);
  }

  private failAll(err: Error, onlySent = false): void {
    for (const [id, p] of [...this.pending]) {
      if (onlySent && !p.sent) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
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
