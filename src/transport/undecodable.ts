/**
 * Requests that are not valid protobuf: INVALID_ARGUMENT with the decoder's message.
 *
 * grpc-js answers a request whose deserializer throws with INTERNAL "Error deserializing request",
 * which blames the server for the client's bytes. A server that registers its services through
 * `tolerateUndecodable(definition)` gets deserializers that return an `UndecodableRequest` instead
 * of throwing, and the `rejectUndecodable` server interceptor ends such a call with
 * INVALID_ARGUMENT before the handler sees the message (the handler of a streaming call then gets
 * 'cancelled', as for any call that ends early).
 *
 * ```ts
 * const server = new Server({ ...serverOptions(), interceptors: [rejectUndecodable] });
 * server.addService(tolerateUndecodable(ParameterServerServiceService), impl);
 * ```
 */
import { Metadata, ServerInterceptingCall, status, type ServerInterceptor, type ServiceDefinition } from '@grpc/grpc-js';

/** What a tolerant deserializer returns for bytes it cannot decode. */
export class UndecodableRequest {
  constructor(
    /** The method's path, e.g. "/spngd.v1.ParameterServerService/Train". */
    readonly path: string,
    /** The decoder's error message. */
    readonly reason: string,
    /** Size of the message, bytes. */
    readonly bytes: number,
  ) {}

  get details(): string {
    return `${this.path}: a request of ${this.bytes} bytes is not a valid protobuf message (${this.reason})`;
  }
}

/** The definition with request deserializers that return an UndecodableRequest instead of throwing. */
export function tolerateUndecodable<D extends ServiceDefinition>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (err) {
          return new UndecodableRequest(method.path, err instanceof Error ? err.message : String(err), bytes.length);
        }
      },
    };
  }
  return out as D;
}

/** Ends a call whose request could not be decoded with INVALID_ARGUMENT. */
export const rejectUndecodable: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMessage: (message, nextMessage) => {
          if (message instanceof UndecodableRequest) {
            call.sendStatus({ code: status.INVALID_ARGUMENT, details: message.details, metadata: new Metadata() });
            return;
          }
          nextMessage(message);
        },
      }),
  });
