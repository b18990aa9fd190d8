/**
 * Bytes and messages this process sent and received, per RPC method: the protobuf-encoded size of
 * every message of the tensor-carrying services (ParameterServerService, FactorOwnerService),
 * counted where grpc-js (de)serializes it. gRPC's 5-byte message prefix and HTTP/2 framing are not
 * included. Each method is one kind of link (Train: gradients up, parameters down; PushStatistics:
 * statistics; PublishPreconditioners: preconditioners; ...), so a snapshot's difference between two
 * steps is that step's traffic on each link (docs/protocol.md § Traffic).
 */
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';

export interface TrafficCount {
  sentBytes: number;
  receivedBytes: number;
  sentMessages: number;
  receivedMessages: number;
}

export class TrafficMeter {
  private readonly counts = new Map<string, TrafficCount>();

  private entry(method: string): TrafficCount {
    let c = this.counts.get(method);
    if (c === undefined) {
      c = { sentBytes: 0, receivedBytes: 0, sentMessages: 0, receivedMessages: 0 };
      this.counts.set(method, c);
    }
    return c;
  }

  sent(method: string, bytes: number): void {
    const c = this.entry(method);
    c.sentBytes += bytes;
    c.sentMessages++;
  }

  received(method: string, bytes: number): void {
    const c = this.entry(method);
    c.receivedBytes += bytes;
    c.receivedMessages++;
  }

  /** A copy of the counts so far, by method ("ParameterServerService/Train"), sorted by name. */
  snapshot(): Map<string, TrafficCount> {
    return new Map([...this.counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [k, { ...v }]));
  }
}

/** This process's meter: every metered service definition counts into it. */
export const processTraffic = new TrafficMeter();

/** What each method moved between two snapshots (methods with no traffic in between are left out). */
export function trafficSince(before: Map<string, TrafficCount>, after: Map<string, TrafficCount>): Map<string, TrafficCount> {
  const out = new Map<string, TrafficCount>();
  for (const [method, a] of after) {
    const b = before.get(method) ?? { sentBytes: 0, receivedBytes: 0, sentMessages: 0, receivedMessages: 0 };
    const d = {
      sentBytes: a.sentBytes - b.sentBytes,
      receivedBytes: a.receivedBytes - b.receivedBytes,
      sentMessages: a.sentMessages - b.sentMessages,
      receivedMessages: a.receivedMessages - b.receivedMessages,
    };
    if (d.sentMessages > 0 || d.receivedMessages > 0) out.set(method, d);
  }
  return out;
}

/** "/spngd.v1.ParameterServerService/Train" → "ParameterServerService/Train". */
export function methodName(path: string): string {
  const [service = '', method = ''] = path.replace(/^\//, '').split('/');
  return `${service.split('.').pop()}/${method}`;
}

/**
 * The service definition with every method's (de)serializers counting into `meter`: a client sends
 * requests and receives responses, a server the other way round, so each side counts its own.
 */
export function metered<S extends ServiceDefinition>(service: S, meter: TrafficMeter = processTraffic): S {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [key, m] of Object.entries(service) as [string, MethodDefinition<unknown, unknown>][]) {
    const name = methodName(m.path);
    out[key] = {
      ...m,
      requestSerialize: (v) => {
        const b = m.requestSerialize(v);
        meter.sent(name, b.byteLength);
        return b;
      },
      requestDeserialize: (b) => {
        meter.received(name, b.byteLength);
        return m.requestDeserialize(b);
      },
      responseSerialize: (v) => {
        const b = m.responseSerialize(v);
        meter.sent(name, b.byteLength);
        return b;
      },
      responseDeserialize: (b) => {
        meter.received(name, b.byteLength);
        return m.responseDeserialize(b);
      },
    };
  }
  return out as S;
}
