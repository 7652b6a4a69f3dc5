/**
 * One multiplexed `Calls` stream (proto/tc.proto) at the TC: calls arrive in batches, each
 * runs through the service (TcGrpcService.execute), and the results that complete in the
 * same turn of the event loop leave in one batch. A batch too large closes the stream; a
 * call past the in-flight bound is answered UNAVAILABLE (retryable) and changes nothing.
 *
 * Backpressure: when the client does not read its results, gRPC's write buffer fills
 * (`write()` answers false) and the stream stops reading calls until it drains. HTTP/2 flow
 * control then holds the client's further calls on the client's side, so a client that never
 * reads makes the node hold at most its in-flight calls and one write buffer of results.
 */
import * as grpc from '@grpc/grpc-js';
import { latencyTrace } from '../../shared/latency-trace.ts';
import type { Logger } from '../../shared/logger.ts';
import type {
  CallBatchWire,
  CallKind,
  CallWire,
  ResultBatchWire,
  ResultWire,
  WireResponse,
} from '../../shared/tc-wire.ts';
import {
  MAX_CALLS_PER_BATCH,
  MAX_INFLIGHT_CALLS_PER_STREAM,
  MAX_RESULTS_PER_BATCH,
} from './limits.ts';
import { failed } from './mapping.ts';

/** The methods the multiplexed `Calls` stream carries (the oneof of proto Call). */
const CALL_KINDS: ReadonlySet<string> = new Set<CallKind>([
  'begin',
  'commit',
  'rollback',
  'getStatus',
  'globalReport',
  'branchRegister',
  'branchReport',
  'lockQuery',
]);

export type CallDuplex = grpc.ServerDuplexStream<CallBatchWire, ResultBatchWire>;

/** What a call stream needs of the service that holds it. */
export interface CallStreamHost {
  logger: Logger;
  /** Runs one call (as the stream's caller) to its answer; never rejects. */
  execute(kind: CallKind, request: unknown): Promise<WireResponse>;
  /** The stream is done (called once): the service stops counting it. */
  onDone(stream: CallStream): void;
  /** The stream stopped (true) or resumed (false) reading calls: its client does not read. */
  onBackpressure?(paused: boolean): void;
}

export class CallStream {
  private inflight = 0;
  /** The client ended its side (or the service drains): end ours once the calls are answered. */
  private ended = false;
  private done = false;
  private outbox: ResultWire[] = [];
  private flushScheduled = false;
  /** Reading calls is paused until the results written so far drain to the client. */
  private readPaused = false;

  constructor(
    private readonly call: CallDuplex,
    private readonly host: CallStreamHost,
  ) {
    call.on('data', (batch: CallBatchWire) => this.onBatch(batch));
    call.on('end', () => {
      this.ended = true;
      if (this.inflight === 0 && !this.flushScheduled) {
        this.finish();
        call.end();
      }
    });
    call.on('error', () => this.finish());
    call.on('cancelled', () => this.finish());
  }

  /** Shutdown: end the stream (as if the client had) once its calls are answered. */
  drain(): void {
    this.ended = true;
    if (this.inflight === 0 && !this.flushScheduled && !this.done) {
      this.finish();
      this.call.end();
    }
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.readPaused) this.host.onBackpressure?.(false);
    this.host.onDone(this);
  }

  private onBatch(batch: CallBatchWire): void {
    if (this.done) return;
    const calls = Array.isArray(batch?.calls) ? batch.calls : [];
    latencyTrace?.('s.recv', calls.length);
    if (calls.length > MAX_CALLS_PER_BATCH) {
      this.host.logger.warn(
        { calls: calls.length, max: MAX_CALLS_PER_BATCH },
        'call batch too large; closing the stream',
      );
      this.finish();
      this.call.emit('error', {
        code: grpc.status.INVALID_ARGUMENT,
        details: `a batch holds at most ${MAX_CALLS_PER_BATCH} calls, not ${calls.length}`,
      });
      return;
    }
    for (const c of calls) this.onCall(c);
  }

  private onCall(c: CallWire): void {
    const id = typeof c?.id === 'number' ? c.id : 0;
    const kind = c?.request;
    if (kind === undefined || !CALL_KINDS.has(kind)) {
      this.push({
        id,
        invalid: failed({
          code: 'ERROR_CODE_BAD_REQUEST',
          message: 'the call sets no request',
          retryable: false,
        }),
      });
      return;
    }
    if (this.inflight >= MAX_INFLIGHT_CALLS_PER_STREAM) {
      this.push({
        id,
        [kind]: failed({
          code: 'ERROR_CODE_UNAVAILABLE',
          message: `more than ${MAX_INFLIGHT_CALLS_PER_STREAM} calls in flight on this stream`,
          retryable: true,
        }),
      });
      return;
    }
    this.inflight++;
    latencyTrace?.(`s.call.${kind}`, id);
    void this.host.execute(kind, c[kind]).then((response) => {
      latencyTrace?.('s.answered', id);
      this.inflight--;
      this.push({ id, [kind]: response });
    });
  }

  /**
   * The client is not reading its results: read no more calls until they drain. The calls in
   * flight still complete, and their results join the write buffer (bounded by the in-flight
   * limit).
   */
  private pauseReading(): void {
    if (this.readPaused || this.done) return;
    this.readPaused = true;
    this.call.pause();
    this.host.onBackpressure?.(true);
    this.call.once('drain', () => {
      if (this.done) return;
      this.readPaused = false;
      this.host.onBackpressure?.(false);
      this.call.resume();
    });
  }

  /** Results that complete in the same turn of the event loop leave in one batch. */
  private push(result: ResultWire): void {
    this.outbox.push(result);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.done) {
      this.outbox = [];
      return;
    }
    while (this.outbox.length > 0) {
      const results = this.outbox.splice(0, MAX_RESULTS_PER_BATCH);
      let room: boolean;
      latencyTrace?.('s.write', results.length);
      try {
        room = this.call.write({ results });
      } catch (err) {
        this.host.logger.debug({ err }, 'call stream write failed');
        this.finish();
        this.outbox = [];
        return;
      }
      if (!room) this.pauseReading();
    }
    if (this.ended && this.inflight === 0) {
      this.finish();
      this.call.end();
    }
  }
}
