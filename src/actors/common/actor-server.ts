/**
 * The gRPC server every actor runs: its own services plus StateService, grpc.health.v1 and server
 * reflection, bound to HOST:PORT (port 0 picks a free one), with the transport's message limits
 * and keepalive, and the process's credentials (mutual TLS and/or the bearer-token check; see
 * credentials.ts).
 */
import { Server, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { StateServiceService } from '../../gen/spngd/v1/state.js';
import { resolveTransportOptions, serverOptions, type TransportOptions } from '../../transport/channel-options.js';
import { raiseServerReceiveWindow } from '../../transport/server-window.js';
import { addHealthAndReflection, SPNGD_SERVICES, type HealthStatus } from '../../transport/health-reflection.js';
import type { ActorStateTracker } from './actor-state.js';
import { INSECURE, type ActorCredentials } from './credentials.js';
import type { MetricHub } from './metric-hub.js';
import { stateService } from './state-service.js';
import { rejectUndecodable, tolerateUndecodable } from '../../transport/undecodable.js';

export interface ServiceBinding {
  /** Full name, e.g. "spngd.v1.ParameterServerService". */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface RunningServer {
  server: Server;
  /** host:port actually bound. */
  address: string;
  port: number;
  health: HealthStatus;
  /** Graceful shutdown, forced after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export class ListenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ListenError';
  }
}

export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address.trim());
  if (!m) throw new ListenError(`"${address}" is not HOST:PORT`);
  const port = Number(m[2]);
  if (port > 65535) throw new ListenError(`"${address}": port ${port} is out of range`);
  return { host: m[1], port };
}

export async function startActorServer(
  listen: string,
  services: ServiceBinding[],
  state: ActorStateTracker,
  metrics: MetricHub,
  transport: TransportOptions = {},
  security: ActorCredentials = INSECURE,
): Promise<RunningServer> {
  const { host } = splitHostPort(listen);
  const server = new Server({ ...serverOptions(transport), interceptors: [...security.serverInterceptors(), rejectUndecodable] });
  // Requests that are not valid protobuf get INVALID_ARGUMENT rather than grpc-js's INTERNAL.
  for (const s of services) server.addService(tolerateUndecodable(s.definition), s.implementation);
  server.addService(tolerateUndecodable(StateServiceService), stateService(state, metrics));
  const { health } = addHealthAndReflection(server, [...services.map((s) => s.name), SPNGD_SERVICES.state], 'NOT_SERVING');
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, security.serverCredentials(), (err, p) => {
      if (err) reject(new ListenError(`cannot listen on ${listen}: ${err.message}`));
      else resolve(p);
    });
  });
  raiseServerReceiveWindow(server, resolveTransportOptions(transport).serverFlowControlWindow);
  const address = `${host}:${port}`;
  state.address = address;
  return {
    server,
    address,
    port,
    health,
    stop: (graceMs = 2000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
