/**
 * Byte-based flow control for grpc-js streams.
 *
 * grpc-js streams are object-mode Node streams with a highWaterMark of 16 *messages*, whatever
 * their size: `write()` only returns false after 16 queued messages, so with 4 MiB chunks a sender
 * that only honours 'drain' can queue 64 MiB per stream (and more in HTTP/2 buffers), and a paused
 * receiver still takes in ~13-17 more messages. Both sides therefore count bytes:
 *
 * - ByteBudgetWriter (sender): a message counts as in flight from `write()` until grpc-js calls its
 *   write callback (the message has been serialized and handed to HTTP/2, which happens only as
 *   the peer's flow-control window allows). `await writer.write(msg, bytes)` waits until the
 *   message fits in the byte budget and the stream is not asking for 'drain'. Because grpc-js
 *   serializes lazily, a message's buffers must not be reused before its callback: `write` takes
 *   ownership of the message; `flush()` resolves when every callback has fired.
 * - ReadBackpressure / ByteBudgetReader (receiver): pause the stream while the application's queue
 *   of received-but-unprocessed messages holds more than a byte budget, resume below a low mark.
 */
import type { EventEmitter } from 'node:events';

import { DEFAULT_IN_FLIGHT_BYTES, DEFAULT_RECEIVE_QUEUE_BYTES } from './limits.js';

/** The writable side of a grpc-js stream (client or server, unary-response or duplex). */
export interface MessageWritable<T> extends EventEmitter {
  write(message: T, callback?: (error?: Error | null) => void): boolean;
  end(): unknown;
  readonly destroyed: boolean;
  readonly writableEnded?: boolean;
}

/** Options of a ByteBudgetWriter. */
export interface ByteBudgetWriterOptions {
  /**
   * Most bytes in flight (written but write callback not yet fired). A single message larger than
   * the budget is still sent, alone. Default DEFAULT_IN_FLIGHT_BYTES.
   */
  maxInFlightBytes?: number;
}

/** Counters of a ByteBudgetWriter. */
export interface WriterStats {
  /** Messages handed to the stream. */
  messages: number;
  /** Bytes (as declared to `write`) handed to the stream. */
  bytes: number;
  /** Messages whose write callback has fired. */
  completed: number;
  /** Largest number of bytes in flight observed. */
  maxInFlightBytes: number;
  /** Number of writes that had to wait (budget full or stream asking for 'drain'). */
  waits: number;
  /** Times `stream.write()` returned false. */
  drainWaits: number;
}

interface QueuedWrite<T> {
  message: T;
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * An Error for whatever a stream emitted: grpc-js server code emits plain status objects
 * (`{ code, details }`) as 'error' to end a call; they keep their code.
 */
function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  if (err !== null && typeof err === 'object') {
    const e = err as { code?: unknown; details?: unknown };
    const out = new Error(typeof e.details === 'string' ? e.details : JSON.stringify(err));
    if (typeof e.code === 'number') Object.assign(out, { code: e.code });
    return out;
  }
  return new Error(String(err));
}

/** Error used when the stream closes before a queued write could be handed to it. */
export class StreamClosedError extends Error {
  override readonly name = 'StreamClosedError';
}

/**
 * Writes messages to a grpc-js stream with at most `maxInFlightBytes` in flight.
 *
 * ```ts
 * const w = new ByteBudgetWriter(call, { maxInFlightBytes: 8 * MiB });
 * for (const chunk of chunkTensor(name, values, shape)) {
 *   await w.write({ kind: { $case: "parameters", value: { step, tensor: chunk } } }, chunkWireBytes(chunk));
 * }
 * await w.flush();   // all callbacks fired: the buffers may be reused
 * ```
 *
 * Writes are handed to the stream in call order, even when several callers write concurrently.
 * If the stream errors or closes, pending and later writes reject (with the stream's error if any).
 */
export class ByteBudgetWriter<T> {
  readonly maxInFlightBytes: number;
  private readonly stream: MessageWritable<T>;
  private readonly queue: QueuedWrite<T>[] = [];
  private inFlight = 0;
  private needDrain = false;
  private failure: Error | undefined;
  private flushWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly counters: WriterStats = {
    messages: 0,
    bytes: 0,
    completed: 0,
    maxInFlightBytes: 0,
    waits: 0,
    drainWaits: 0,
  };
  private readonly onDrain = (): void => {
    this.needDrain = false;
    this.pump();
  };
  private readonly onError = (err: unknown): void => {
    this.fail(asError(err));
  };
  private readonly onClose = (): void => {
    if (this.inFlight > 0 || this.queue.length > 0) this.fail(new StreamClosedError('stream closed with writes pending'));
    else this.fail(new StreamClosedError('stream closed'));
  };

  constructor(stream: MessageWritable<T>, options: ByteBudgetWriterOptions = {}) {
    const budget = options.maxInFlightBytes ?? DEFAULT_IN_FLIGHT_BYTES;
    if (!(budget > 0)) throw new RangeError(`maxInFlightBytes must be > 0, got ${budget}`);
    this.maxInFlightBytes = budget;
    this.stream = stream;
    stream.on('drain', this.onDrain);
    stream.on('error', this.onError);
    stream.on('close', this.onClose);
    // Server calls emit 'cancelled' when the client goes away.
    stream.on('cancelled', this.onClose);
  }

  /** Bytes currently in flight (handed to the stream, write callback not fired yet). */
  get inFlightBytes(): number {
    return this.inFlight;
  }

  /** Bytes waiting in this writer's own queue (not yet handed to the stream). */
  get queuedBytes(): number {
    let s = 0;
    for (const q of this.queue) s += q.bytes;
    return s;
  }

  /** A copy of the counters. */
  get stats(): WriterStats {
    return { ...this.counters };
  }

  /** The error that ended the stream, if any. */
  get error(): Error | undefined {
    return this.failure;
  }

  /**
   * Hands `message` (counted as `bytes`) to the stream as soon as the budget allows. Resolves when
   * it has been handed over (not when it has been sent: see flush). Do not modify the message's
   * buffers afterwards until flush() resolves.
   */
  write(message: T, bytes: number): Promise<void> {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) return Promise.reject(new RangeError(`bad byte count ${bytes}`));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ message, bytes, resolve, reject });
      if (this.queue.length > 1 || !this.fits(bytes)) this.counters.waits++;
      this.pump();
    });
  }

  /** Resolves when every message written so far has had its write callback (buffers reusable). */
  flush(): Promise<void> {
    if (this.inFlight === 0 && this.queue.length === 0) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
  }

  /** flush(), then end the stream and detach from it. */
  async end(): Promise<void> {
    await this.flush();
    this.detach();
    this.stream.end();
  }

  /**
   * Stops listening to the stream. Pending and later writes are rejected: a detached writer would
   * never hear the stream's callbacks again, so a later write could wait forever.
   */
  detach(): void {
    this.stream.removeListener('drain', this.onDrain);
    this.stream.removeListener('error', this.onError);
    this.stream.removeListener('close', this.onClose);
    this.stream.removeListener('cancelled', this.onClose);
    this.fail(new StreamClosedError(this.queue.length > 0 ? 'writer detached with writes pending' : 'writer detached'));
  }

  private fits(bytes: number): boolean {
    return this.inFlight === 0 || this.inFlight + bytes <= this.maxInFlightBytes;
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.failure && !this.needDrain) {
      const head = this.queue[0];
      if (!this.fits(head.bytes)) return;
      if (this.stream.destroyed || this.stream.writableEnded) {
        this.fail(new StreamClosedError('stream already closed'));
        return;
      }
      this.queue.shift();
      this.inFlight += head.bytes;
      if (this.inFlight > this.counters.maxInFlightBytes) this.counters.maxInFlightBytes = this.inFlight;
      this.counters.messages++;
      this.counters.bytes += head.bytes;
      let done = false;
      let ok: boolean;
      try {
        ok = this.stream.write(head.message, (err) => {
          if (done) return;
          done = true;
          this.inFlight -= head.bytes;
          this.counters.completed++;
          if (err) this.fail(err);
          else {
            this.pump();
            this.settleFlush();
          }
        });
      } catch (err) {
        this.inFlight -= head.bytes;
        head.reject(err instanceof Error ? err : new Error(String(err)));
        this.fail(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      head.resolve();
      if (!ok) {
        this.needDrain = true;
        this.counters.drainWaits++;
      }
    }
  }

  private settleFlush(): void {
    if (this.inFlight !== 0 || this.queue.length !== 0) return;
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    const queued = this.queue.splice(0);
    for (const q of queued) q.reject(err);
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w.reject(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

/** The readable side of a grpc-js stream. */
export interface MessageReadable<_T> extends EventEmitter {
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  readonly destroyed: boolean;
  // 'data' delivers T; typed loosely so grpc-js's stream types are assignable.
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Options of ReadBackpressure. */
export interface ReadBackpressureOptions {
  /** Pause the stream when the application holds more than this many bytes. Default DEFAULT_RECEIVE_QUEUE_BYTES. */
  highWaterBytes?: number;
  /** Resume when it holds this many or fewer. Default highWaterBytes / 2. */
  lowWaterBytes?: number;
}

/**
 * Pauses a readable stream while the application's queue holds too many bytes. Call `add(bytes)`
 * when a received message enters the application's queue and `release(bytes)` when it has been
 * processed. Note: a paused grpc-js stream still buffers up to ~16 messages internally (its object
 * highWaterMark) plus the HTTP/2 window; they are delivered after resume.
 */
export class ReadBackpressure {
  readonly highWaterBytes: number;
  readonly lowWaterBytes: number;
  private held = 0;
  private maxHeld = 0;
  private pauses = 0;
  private pausedByUs = false;

  constructor(
    private readonly stream: Pick<MessageReadable<unknown>, 'pause' | 'resume'>,
    options: ReadBackpressureOptions = {},
  ) {
    this.highWaterBytes = options.highWaterBytes ?? DEFAULT_RECEIVE_QUEUE_BYTES;
    this.lowWaterBytes = options.lowWaterBytes ?? Math.floor(this.highWaterBytes / 2);
    if (!(this.highWaterBytes > 0) || this.lowWaterBytes < 0 || this.lowWaterBytes > this.highWaterBytes) {
      throw new RangeError(`bad water marks ${this.lowWaterBytes}/${this.highWaterBytes}`);
    }
  }

  /** Bytes the application currently holds. */
  get heldBytes(): number {
    return this.held;
  }

  /** Most bytes held at once so far. */
  get maxHeldBytes(): number {
    return this.maxHeld;
  }

  /** Times the stream was paused. */
  get pauseCount(): number {
    return this.pauses;
  }

  /** True while this controller keeps the stream paused. */
  get paused(): boolean {
    return this.pausedByUs;
  }

  /** A received message of `bytes` bytes entered the application's queue. */
  add(bytes: number): void {
    this.held += bytes;
    if (this.held > this.maxHeld) this.maxHeld = this.held;
    if (!this.pausedByUs && this.held > this.highWaterBytes) {
      this.pausedByUs = true;
      this.pauses++;
      this.stream.pause();
    }
  }

  /** A message of `bytes` bytes has been processed. */
  release(bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
    if (this.pausedByUs && this.held <= this.lowWaterBytes) {
      this.pausedByUs = false;
      this.stream.resume();
    }
  }
}

/** Options of ByteBudgetReader. */
export interface ByteBudgetReaderOptions<T> extends ReadBackpressureOptions {
  /** Bytes a message counts for (e.g. its tensor data length). */
  sizeOf: (message: T) => number;
}

/**
 * Async iteration over a grpc-js readable stream with a byte-bounded application queue. A message
 * counts against the budget from its arrival until the consumer asks for the next one (so the
 * message being processed is included).
 *
 * ```ts
 * for await (const msg of new ByteBudgetReader(call, { sizeOf: (m) => m.tensor?.data.length ?? 0 })) { ... }
 * ```
 */
export class ByteBudgetReader<T> implements AsyncIterable<T> {
  readonly backpressure: ReadBackpressure;
  private readonly sizeOf: (message: T) => number;
  private readonly queue: { message: T; bytes: number }[] = [];
  private current = 0; // bytes of the message handed to the consumer last
  private ended = false;
  private failure: Error | undefined;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void } | undefined;
  private readonly stream: MessageReadable<T>;
  private readonly onData = (message: T): void => {
    const bytes = this.sizeOf(message);
    this.backpressure.add(bytes);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      this.current = bytes;
      w.resolve({ value: message, done: false });
    } else {
      this.queue.push({ message, bytes });
    }
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };
  private readonly onError = (err: unknown): void => {
    this.failure = asError(err);
    this.wake();
  };

  constructor(stream: MessageReadable<T>, options: ByteBudgetReaderOptions<T>) {
    this.stream = stream;
    this.sizeOf = options.sizeOf;
    this.backpressure = new ReadBackpressure(stream, options);
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('error', this.onError);
  }

  /** Next message; `done` at end of stream; rejects with the stream's error. */
  next(): Promise<IteratorResult<T>> {
    if (this.current > 0) {
      this.backpressure.release(this.current);
      this.current = 0;
    }
    const head = this.queue.shift();
    if (head) {
      this.current = head.bytes;
      return Promise.resolve({ value: head.message, done: false });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(new Error('ByteBudgetReader.next() called concurrently'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Stops listening (the consumer broke out of the loop). The stream is left as is. */
  return(): Promise<IteratorResult<T>> {
    this.detach();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Removes the listeners and resumes the stream if this reader paused it. */
  detach(): void {
    this.stream.removeListener('data', this.onData);
    this.stream.removeListener('end', this.onEnd);
    this.stream.removeListener('error', this.onError);
    if (this.backpressure.paused) this.backpressure.release(Number.MAX_SAFE_INTEGER);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this;
  }

  private wake(): void {
    if (!this.waiter || this.queue.length > 0) return;
    const w = this.waiter;
    this.waiter = undefined;
    if (this.failure) w.reject(this.failure);
    else w.resolve({ value: undefined, done: true });
  }
}
