/**
 * Raw gRPC clients for fuzzing the actors: every method of the spngd services with identity
 * (de)serializers, so a call sends exactly the bytes given (a generated encoding, a mangled one,
 * random bytes) and returns the bytes received. One call = one sequence of request messages; the
 * result is the call's final status and the raw responses.
 */
import {
  credentials,
  makeGenericClientConstructor,
  status,
  type Client,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { withSession } from '../../src/actors/common/identity.js';
import { FactorOwnerServiceService } from '../../src/gen/spngd/v1/factor_owner.js';
import { MembershipServiceService } from '../../src/gen/spngd/v1/membership.js';
import { ParameterServerServiceService } from '../../src/gen/spngd/v1/parameter_server.js';

export type ServiceName = 'ps' | 'membership' | 'owner';

const DEFINITIONS: Record<ServiceName, ServiceDefinition> = {
  ps: ParameterServerServiceService as unknown as ServiceDefinition,
  membership: MembershipServiceService as unknown as ServiceDefinition,
  owner: FactorOwnerServiceService as unknown as ServiceDefinition,
};

const identity = (b: Buffer): Buffer => b;

/** The service definition with identity serializers on both directions. */
function rawDefinition(def: ServiceDefinition): ServiceDefinition {
  return Object.fromEntries(
    Object.entries(def).map(([name, m]) => [
      name,
      { ...m, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
    ]),
  ) as ServiceDefinition;
}

const CONSTRUCTORS = Object.fromEntries(
  Object.entries(DEFINITIONS).map(([k, def]) => [k, makeGenericClientConstructor(rawDefinition(def), `fuzz.${k}`)]),
) as Record<ServiceName, ReturnType<typeof makeGenericClientConstructor>>;

export interface CallResult {
  code: status;
  details: string;
  /** Raw response messages, in order. */
  responses: Buffer[];
  ms: number;
}

type AnyMethod = (...args: unknown[]) => unknown;

/**
 * One channel per (service, address). No send limit on the client (grpc-js's default), so
 * oversized messages reach the server, whose 8 MiB receive limit must reject them; a generous
 * receive limit so that whatever the server answers is seen.
 */
export class RawClients {
  private readonly clients = new Map<string, Client>();

  private client(service: ServiceName, address: string): Client {
    const key = `${service}@${address}`;
    let c = this.clients.get(key);
    if (!c) {
      c = new CONSTRUCTORS[service](address, credentials.createInsecure(), {
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        'grpc.max_send_message_length': -1,
        'grpc.initial_reconnect_backoff_ms': 100,
      });
      this.clients.set(key, c);
    }
    return c;
  }

  private method(service: ServiceName, address: string, name: string): AnyMethod {
    const c = this.client(service, address) as unknown as Record<string, AnyMethod>;
    const m = c[name];
    if (typeof m !== 'function') throw new Error(`no method ${service}.${name}`);
    return m.bind(c);
  }

  /** A bidi call: writes every message, half-closes, waits for the final status. */
  duplex(service: ServiceName, address: string, name: string, messages: Buffer[], timeoutMs = 30000, session?: string): Promise<CallResult> {
    const t0 = performance.now();
    const call = this.method(service, address, name)(withSession(session), { deadline: Date.now() + timeoutMs }) as ClientDuplexStream<Buffer, Buffer>;
    const responses: Buffer[] = [];
    return new Promise((resolve) => {
      call.on('data', (b: Buffer) => responses.push(b));
      call.on('error', () => undefined); // the status carries it
      call.on('status', (s) => resolve({ code: s.code, details: s.details, responses, ms: performance.now() - t0 }));
      for (const m of messages) call.write(m, () => undefined);
      call.end();
    });
  }

  /** A server-streaming call. */
  serverStream(service: ServiceName, address: string, name: string, request: Buffer, timeoutMs = 30000, session?: string): Promise<CallResult> {
    const t0 = performance.now();
    const call = this.method(service, address, name)(request, withSession(session), { deadline: Date.now() + timeoutMs }) as ClientReadableStream<Buffer>;
    const responses: Buffer[] = [];
    return new Promise((resolve) => {
      call.on('data', (b: Buffer) => responses.push(b));
      call.on('error', () => undefined);
      call.on('status', (s) => resolve({ code: s.code, details: s.details, responses, ms: performance.now() - t0 }));
    });
  }

  /** A unary call. */
  unary(service: ServiceName, address: string, name: string, request: Buffer, timeoutMs = 30000, session?: string): Promise<CallResult> {
    const t0 = performance.now();
    return new Promise((resolve) => {
      this.method(service, address, name)(request, withSession(session), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res?: Buffer) => {
        if (err) resolve({ code: err.code, details: err.details, responses: [], ms: performance.now() - t0 });
        else resolve({ code: status.OK, details: '', responses: res ? [res] : [], ms: performance.now() - t0 });
      });
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** "INVALID_ARGUMENT" etc. */
export function codeName(code: status): string {
  return status[code] ?? `STATUS_${code}`;
}
