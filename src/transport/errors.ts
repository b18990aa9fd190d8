/**
 * Typed transport errors that carry the gRPC status code a server (or client) should answer with.
 */
import { Metadata, status, type StatusObject } from '@grpc/grpc-js';

/** Machine-readable reason of a TransportError (tests and logs match on it). */
export type TransportErrorReason =
  // INVALID_ARGUMENT: a chunk is malformed by itself or disagrees with its tensor's first chunk
  | 'bad_name'
  | 'bad_encoding'
  | 'bad_shape'
  | 'bad_chunk_count'
  | 'bad_chunk_index'
  | 'bad_total_bytes'
  | 'bad_offset'
  | 'bad_data_length'
  | 'header_mismatch'
  | 'overrun'
  | 'short_tensor'
  | 'bad_argument'
  // FAILED_PRECONDITION: the chunk is well-formed but the stream's state does not allow it
  | 'gap'
  | 'duplicate'
  | 'incomplete'
  | 'closed'
  // RESOURCE_EXHAUSTED: a size cap
  | 'tensor_too_large'
  | 'too_many_pending';

const NAMES: Partial<Record<status, string>> = {
  [status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [status.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [status.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [status.UNAVAILABLE]: 'UNAVAILABLE',
  [status.CANCELLED]: 'CANCELLED',
  [status.INTERNAL]: 'INTERNAL',
};

/** Name of a gRPC status code, e.g. "INVALID_ARGUMENT". */
export function statusName(code: status): string {
  return NAMES[code] ?? status[code] ?? `STATUS_${code}`;
}

/** An error with the gRPC status code to report it with. */
export class TransportError extends Error {
  override readonly name = 'TransportError';
  constructor(
    /** gRPC status code to answer with. */
    readonly code: status,
    /** Machine-readable reason. */
    readonly reason: TransportErrorReason,
    message: string,
  ) {
    super(message);
  }

  /** The status object to pass to a grpc-js callback or `call.destroy()` / `call.emit("error")`. */
  toStatus(): Partial<StatusObject> {
    return { code: this.code, details: this.message, metadata: new Metadata() };
  }
}

/** True if `err` is a TransportError. */
export function isTransportError(err: unknown): err is TransportError {
  return err instanceof TransportError;
}

/**
 * A status object for any thrown value: TransportErrors keep their code, errors that already carry
 * a numeric gRPC `code` (grpc-js ServiceErrors) keep it, everything else becomes INTERNAL.
 */
export function toGrpcStatus(err: unknown): Partial<StatusObject> {
  if (err instanceof TransportError) return err.toStatus();
  if (err !== null && typeof err === 'object') {
    const e = err as { code?: unknown; details?: unknown; message?: unknown };
    if (typeof e.code === 'number' && e.code > 0 && e.code <= 16) {
      const details = typeof e.details === 'string' ? e.details : String(e.message ?? '');
      return { code: e.code as status, details, metadata: new Metadata() };
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: status.INTERNAL, details: message, metadata: new Metadata() };
}

/**
 * Ends a grpc-js *server* streaming call (server-streaming or bidi) with the status for `err`.
 * grpc-js turns an 'error' event on a server stream into the call's final status.
 */
export function failServerCall(call: { emit(event: 'error', status: Partial<StatusObject>): boolean }, err: unknown): void {
  call.emit('error', toGrpcStatus(err));
}
