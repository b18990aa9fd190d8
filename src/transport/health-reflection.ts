/**
 * grpc.health.v1 health checking (npm grpc-health-check) and server reflection (npm
 * @grpc/reflection) for a grpc-js Server.
 *
 * Reflection is fed from the FileDescriptorSet that `buf build` writes (embedded in
 * src/gen/descriptor-set.ts): descriptors produced by proto-loader's loadSync from .proto files
 * come out invalid for map<> fields, a descriptor set does not. The health and reflection protos
 * are added so that reflection lists them too.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

import type { Server } from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer, loadSync, type Options, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from "grpc-health-check";

import { SPNGD_DESCRIPTOR_SET_BASE64 } from "../gen/descriptor-set.js";

export type { ServingStatus };

/** Full name of the health service. */
export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";
/** Full name of the reflection service (v1; v1alpha is served too). */
export const REFLECTION_SERVICE_NAME = "grpc.reflection.v1.ServerReflection";

/** Full names of the spngd services. */
export const SPNGD_SERVICES = {
  parameterServer: "spngd.v1.ParameterServerService",
  factorOwner: "spngd.v1.FactorOwnerService",
  membership: "spngd.v1.MembershipService",
  state: "spngd.v1.StateService",
} as const;

const LOADER_OPTIONS: Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/** The spngd FileDescriptorSet (bytes of src/gen/spngd.binpb without source info). */
export function spngdDescriptorSet(): Buffer {
  return Buffer.from(SPNGD_DESCRIPTOR_SET_BASE64, "base64");
}

/** proto-loader package definition of the spngd services, built from the descriptor set. */
export function spngdPackageDefinition(): PackageDefinition {
  return loadFileDescriptorSetFromBuffer(spngdDescriptorSet(), LOADER_OPTIONS);
}

let reflectionProtoDir: string | undefined;
function reflectionProtoPath(): string {
  if (reflectionProtoDir === undefined) {
    const require = createRequire(import.meta.url);
    // build/src/index.js -> build/proto
    reflectionProtoDir = join(dirname(require.resolve("@grpc/reflection")), "..", "proto");
  }
  return join(reflectionProtoDir, "grpc", "reflection", "v1", "reflection.proto");
}

/**
 * Health checking handle: one status per service name plus the overall status (""), all set
 * together by `setAll` (e.g. NOT_SERVING while draining).
 */
export class HealthStatus {
  readonly implementation: HealthImplementation;
  private readonly services: string[];

  constructor(services: readonly string[], initial: ServingStatus) {
    this.services = ["", ...services.filter((s) => s !== "")];
    const map: Record<string, ServingStatus> = {};
    for (const s of this.services) map[s] = initial;
    this.implementation = new HealthImplementation(map);
  }

  /** Sets one service's status ("" is the server as a whole). */
  set(service: string, status: ServingStatus): void {
    this.implementation.setStatus(service, status);
  }

  /** Sets the status of the server and of every registered service. */
  setAll(status: ServingStatus): void {
    for (const s of this.services) this.implementation.setStatus(s, status);
  }
}

/**
 * Adds grpc.health.v1.Health to `server`, answering for "" and each of `services`.
 * Call before `server.bindAsync`.
 */
export function addHealth(server: Server, services: readonly string[], initial: ServingStatus = "SERVING"): HealthStatus {
  const health = new HealthStatus(services, initial);
  health.implementation.addToServer(server);
  return health;
}

/**
 * Adds server reflection (grpc.reflection.v1 and v1alpha) to `server`, listing `services` (full
 * names of the spngd services the server implements) plus health and reflection.
 * Call before `server.bindAsync`.
 */
export function addReflection(server: Server, services: readonly string[]): ReflectionService {
  const health = loadSync(healthProtoPath, LOADER_OPTIONS);
  const reflection = loadSync(reflectionProtoPath(), LOADER_OPTIONS);
  const definition: PackageDefinition = { ...reflection, ...health, ...spngdPackageDefinition() };
  const listed = [...new Set([...services, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME])];
  const service = new ReflectionService(definition, { services: listed });
  service.addToServer(server);
  return service;
}

/** addHealth + addReflection for the given spngd services. */
export function addHealthAndReflection(
  server: Server,
  services: readonly string[],
  initial: ServingStatus = "SERVING",
): { health: HealthStatus; reflection: ReflectionService } {
  const health = addHealth(server, services, initial);
  const reflection = addReflection(server, services);
  return { health, reflection };
}
