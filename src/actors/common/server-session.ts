/**
 * The server side of a client stream that opens with hello (Train, PushStatistics,
 * PublishPreconditioners): the first message must be hello and opens the session, a second hello
 * or an empty message is refused, a refused message is logged with its sender and ends the call
 * with its status, and the session's end is reported once the call is over.
 * The client side is `stream-session.ts`.
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import type { Logger } from '../../util/log.js';

type KindOf<Req> = NonNullable<Req extends { kind?: infer K } ? K : never>;
/** What the hello of a request type carries. */
export type HelloOf<Req> = KindOf<Req> extends infer K ? (K extends { $case: 'hello'; value: infer V } ? V : never) : never;
/** Every other message of a request type. */
export type MessageOf<Req> = Exclude<KindOf<Req>, { $case: 'hello' }>;

export interface ServerSessionHandlers<Req, S> {
  /** The RPC's name, for refusals: "Train". */
  rpc: string;
  /** What the log calls the stream: "train stream". */
  what: string;
  logger: Logger;
  /** Checks a hello and opens the session; throws (a TransportError) to refuse it. */
  open(hello: HelloOf<Req>): S;
  /** Who the session speaks for, in log lines. */
  label(session: S): string;
  /** A message after hello; throws to refuse it (the call then fails). */
  onMessage(session: S, message: MessageOf<Req>): void;
  /** After a refusal has failed the call. */
  onRefused?(session: S | undefined, err: unknown): void;
  /** The call is over: the client ended it, cancelled it, or it broke. */
  onGone?(session: S | undefined): void;
}

export function acceptSession<Req extends { kind?: { $case: string } | undefined }, Res, S>(
  call: ServerDuplexStream<Req, Res>,
  h: ServerSessionHandlers<Req, S>,
): void {
  let session: S | undefined;
  call.on('data', (req: Req) => {
    try {
      const k = req.kind as KindOf<Req> | undefined;
      if (!k) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `empty ${h.rpc}Request`);
      if (k.$case === 'hello') {
        if (session !== undefined) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'hello sent twice');
        session = h.open((k as unknown as { value: HelloOf<Req> }).value);
        return;
      }
      if (session === undefined) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `the first message on ${h.rpc} must be hello`);
      h.onMessage(session, k as MessageOf<Req>);
    } catch (err) {
      h.logger.warn(`${h.what} ${session === undefined ? '(no hello)' : h.label(session)}: ${(err as Error).message}`);
      failServerCall(call, err);
      h.onRefused?.(session, err);
    }
  });
  const gone = () => h.onGone?.(session);
  call.on('end', () => {
    gone();
    call.end();
  });
  call.on('cancelled', gone);
  call.on('error', gone);
}
