/**
 * A client's side of our session streams (Train, PushStatistics, PublishPreconditioners): the
 * first message is a hello that names the sender, then the session runs until the call is over,
 * then the caller tears it down or opens a new one. Every write goes through a ByteBudgetWriter.
 */
import { status as Status, type ClientDuplexStream, type StatusObject } from '@grpc/grpc-js';
import { ByteBudgetWriter } from '../../transport/flow.js';

/** Bytes counted for a hello (small; only the writer's budget sees this number). */
const HELLO_BYTES = 64;

export interface SessionEvents<Req, Res> {
  /** A message from the peer (also after detach(): a late answer may still matter). */
  onMessage(message: Res, session: StreamSession<Req, Res>): void;
  /**
   * Once, when the call is over: it failed (`err`), the peer ended it, or the connection dropped.
   * grpc-js reports that with 'error' and 'status', and with no 'close' while our side is still
   * open, which it always is here; so the first of the three counts. Not called after detach().
   */
  onEnd(why: string, err: Error | undefined): void;
}

export class StreamSession<Req, Res> {
  readonly writer: ByteBudgetWriter<Req>;
  private over = false;
  private detached = false;

  constructor(
    readonly call: ClientDuplexStream<Req, Res>,
    hello: Req,
    events: SessionEvents<Req, Res>,
  ) {
    this.writer = new ByteBudgetWriter(call);
    call.on('data', (m: Res) => events.onMessage(m, this));
    const end = (why: string, err?: Error) => {
      if (this.over) return;
      this.over = true;
      if (!this.detached) events.onEnd(why, err);
    };
    call.on('error', (err: Error) => end(err.message, err));
    call.on('status', (s: StatusObject) => end(s.details || `status ${Status[s.code] ?? s.code}`));
    call.on('close', () => end('closed'));
    // A failed hello shows as the call's end.
    void this.writer.write(hello, HELLO_BYTES).catch(() => undefined);
  }

  /** Whether the call is over. */
  get ended(): boolean {
    return this.over;
  }

  /** Stops writing and stops reporting the end (another session takes over); the call is left to end by itself. */
  detach(): void {
    this.detached = true;
    this.writer.detach();
  }

  /** Detaches and ends our side of the call. */
  close(): void {
    this.detach();
    this.call.end();
  }
}
