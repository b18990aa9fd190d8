/**
 * grpc.health.v1 and server reflection on a grpc-js server, checked from a grpc-js client and, when
 * Debian's python3-grpcio is installed (`apt-get install -y python3-grpcio python3-protobuf`, run
 * with /usr/bin/python3), from an independent Python client that builds the message classes from
 * the reflected descriptors (map fields included) and calls StateService.GetState with them.
 */
import test from "ava";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Role, LifecycleState } from "../src/gen/spngd/v1/membership.js";
import { StatisticKind } from "../src/gen/spngd/v1/factor_owner.js";
import { type ActorState, StateServiceClient, type StateServiceServer, StateServiceService } from "../src/gen/spngd/v1/state.js";
import {
  addHealthAndReflection,
  channelOptions,
  HEALTH_SERVICE_NAME,
  type HealthStatus,
  REFLECTION_SERVICE_NAME,
  serverOptions,
  SPNGD_SERVICES,
  spngdDescriptorSet,
} from "../src/transport/index.js";

const require = createRequire(import.meta.url);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

const STATE: ActorState = {
  role: Role.ROLE_FACTOR_OWNER,
  id: "owner-1",
  address: "127.0.0.1:0",
  lifecycle: LifecycleState.LIFECYCLE_STATE_READY,
  step: 120,
  epoch: 3,
  members: [
    { id: "ps-0", role: Role.ROLE_PARAMETER_SERVER, address: "ps:1", state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 1, lastHeartbeatUnixMs: 5, capacity: 1 },
  ],
  assignment: { epoch: 3, layers: [{ layer: "fc1", ownerId: "owner-1", cost: 1e6, aDim: 785, gDim: 128 }] },
  preconditioners: [{ layer: "fc1", version: 7, computedFromStep: 118, ownerId: "owner-1", updatedUnixMs: 1700000000000 }],
  statisticSchedules: [
    { layer: "fc1", kind: StatisticKind.STATISTIC_KIND_A, interval: 4, lastRefreshStep: 116, nextRefreshStep: 120, lastDrift: 0.01 },
  ],
  phaseTimings: {
    invert: { count: 7, lastMs: 12.5, meanMs: 13, totalMs: 91 },
    reduce: { count: 30, lastMs: 1.5, meanMs: 1.25, totalMs: 37.5 },
  },
  lastLoss: 0.25,
  lastAccuracy: undefined,
  startedUnixMs: 1700000000000,
  nowUnixMs: 1700000001000,
};

async function startServer(): Promise<{ server: grpc.Server; port: number; health: HealthStatus }> {
  const server = new grpc.Server(serverOptions());
  const impl: StateServiceServer = {
    getState(_call, callback) {
      callback(null, { state: STATE });
    },
    watchMetrics(call) {
      call.end();
    },
  };
  server.addService(StateServiceService, impl);
  const { health } = addHealthAndReflection(server, [SPNGD_SERVICES.state]);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { server, port, health };
}

const LOADER = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function healthClient(port: number): grpc.Client & Record<string, any> {
  const { protoPath } = require("grpc-health-check") as { protoPath: string };
  const pkg = grpc.loadPackageDefinition(loadSync(protoPath, LOADER)) as any;
  return new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function reflectionClient(port: number): grpc.Client & Record<string, any> {
  const proto = join(dirname(require.resolve("@grpc/reflection")), "..", "proto", "grpc", "reflection", "v1", "reflection.proto");
  const pkg = grpc.loadPackageDefinition(loadSync(proto, LOADER)) as any;
  return new pkg.grpc.reflection.v1.ServerReflection(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function check(client: any, service: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Check({ service }, (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res.status))),
  );
}

/** Sends reflection requests on one stream and collects the responses. */
function reflect(client: any, requests: object[]): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    const out: any[] = [];
    call.on("data", (m: any) => out.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(out));
    for (const r of requests) call.write(r);
    call.end();
  });
}

test("health answers SERVING for the server and its services, and follows setAll", async (t) => {
  const { server, port, health } = await startServer();
  const client = healthClient(port);
  try {
    t.is(await check(client, ""), "SERVING");
    t.is(await check(client, SPNGD_SERVICES.state), "SERVING");
    const err = await t.throwsAsync(check(client, "no.such.Service"));
    t.is((err as grpc.ServiceError).code, grpc.status.NOT_FOUND);
    health.setAll("NOT_SERVING");
    t.is(await check(client, ""), "NOT_SERVING");
    t.is(await check(client, SPNGD_SERVICES.state), "NOT_SERVING");
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("reflection lists the services and returns valid descriptors, map fields included", async (t) => {
  const { server, port } = await startServer();
  const client = reflectionClient(port);
  try {
    const [list, file] = await reflect(client, [
      { list_services: "*" },
      { file_containing_symbol: "spngd.v1.StateService" },
    ]);
    const names = list.list_services_response.service.map((s: { name: string }) => s.name).sort();
    t.deepEqual(names, [HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME, SPNGD_SERVICES.state].sort());

    const files = file.file_descriptor_response.file_descriptor_proto.map((b: Buffer) => fromBinary(FileDescriptorProtoSchema, b));
    const state = files.find((f: { name: string }) => f.name === "spngd/v1/state.proto");
    t.truthy(state, `files: ${files.map((f: { name: string }) => f.name)}`);
    t.deepEqual(state.dependency, ["spngd/v1/factor_owner.proto", "spngd/v1/membership.proto"]);
    const actor = state.messageType.find((m: { name: string }) => m.name === "ActorState");
    const entry = actor.nestedType.find((m: { name: string }) => m.name === "PhaseTimingsEntry");
    t.true(entry.options?.mapEntry, "PhaseTimingsEntry is a map entry");
    const field = actor.field.find((f: { name: string }) => f.name === "phase_timings");
    t.is(field.typeName, ".spngd.v1.ActorState.PhaseTimingsEntry");
    t.true(state.service.some((s: { name: string }) => s.name === "StateService"));
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("the committed descriptor set matches the embedded one and holds every spngd service", (t) => {
  const committed = fromBinary(FileDescriptorSetSchema, readFileSync(join(ROOT, "src/gen/spngd.binpb")));
  const embedded = fromBinary(FileDescriptorSetSchema, spngdDescriptorSet());
  t.deepEqual(
    committed.file.map((f) => f.name),
    embedded.file.map((f) => f.name),
  );
  const services = embedded.file.flatMap((f) => f.service.map((s) => `${f.package}.${s.name}`)).sort();
  t.deepEqual(services, Object.values(SPNGD_SERVICES).sort());
  t.truthy(committed.file.some((f) => f.sourceCodeInfo !== undefined), "the committed set keeps comments for tools");
});

test("the generated StateService client reads the state back", async (t) => {
  const { server, port } = await startServer();
  const client = new StateServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), channelOptions());
  try {
    const res = await new Promise<any>((resolve, reject) => client.getState({}, (e, r) => (e ? reject(e) : resolve(r))));
    t.deepEqual(res.state, STATE);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

// ---- Python interop ----------------------------------------------------------------------------

const PYTHON = "/usr/bin/python3";

const PY_CLIENT = String.raw`
import json, sys
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

addr = sys.argv[1]
ch = grpc.insecure_channel(addr)
ident = lambda b: b

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data

def parse(buf):
    """Minimal protobuf wire parser: {field number: [values]} (bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                v |= (b & 0x7F) << shift; shift += 7
                if b < 0x80: break
        elif wt == 2:
            n, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                n |= (b & 0x7F) << shift; shift += 7
                if b < 0x80: break
            v = buf[i:i + n]; i += n
        elif wt == 1:
            v = buf[i:i + 8]; i += 8
        elif wt == 5:
            v = buf[i:i + 4]; i += 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out

reflection = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              request_serializer=ident, response_deserializer=ident)
# ServerReflectionRequest: list_services = 7, file_containing_symbol = 4.
reqs = [field_bytes(7, b"*"),
        field_bytes(4, b"spngd.v1.StateService"),
        field_bytes(4, b"grpc.health.v1.Health"),
        field_bytes(4, b"spngd.v1.ParameterServerService")]
resps = [parse(r) for r in reflection(iter(reqs), timeout=10)]
services = sorted(parse(s)[1][0].decode() for s in parse(resps[0][6][0]).get(1, []))

pool = descriptor_pool.DescriptorPool()
protos = {}
for r in resps[1:]:
    for raw in parse(r[4][0])[1]:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        protos[fd.name] = fd
added = set()
while len(added) < len(protos):
    progress = False
    for name, fd in protos.items():
        if name not in added and all(d in added for d in fd.dependency):
            pool.Add(fd); added.add(name); progress = True
    if not progress:
        raise RuntimeError("unresolvable dependencies: %s" % sorted(set(protos) - added))

def cls(full_name):
    desc = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)

HReq, HRes = cls("grpc.health.v1.HealthCheckRequest"), cls("grpc.health.v1.HealthCheckResponse")
health = ch.unary_unary("/grpc.health.v1.Health/Check",
                        request_serializer=lambda m: m.SerializeToString(), response_deserializer=HRes.FromString)
status = {s: HRes.ServingStatus.Name(health(HReq(service=s), timeout=10).status) for s in ["", "spngd.v1.StateService"]}

SReq, SRes = cls("spngd.v1.GetStateRequest"), cls("spngd.v1.GetStateResponse")
get_state = ch.unary_unary("/spngd.v1.StateService/GetState",
                           request_serializer=lambda m: m.SerializeToString(), response_deserializer=SRes.FromString)
state = json_format.MessageToDict(get_state(SReq(), timeout=10))["state"]
# Every spngd file went into the strict pool; check a oneof envelope and a proto3 optional survived.
train = pool.FindMessageTypeByName("spngd.v1.TrainRequest")
actor = pool.FindMessageTypeByName("spngd.v1.ActorState")
checks = {
    "files": sorted(protos),
    "train_oneof": [f.name for f in train.oneofs_by_name["kind"].fields],
    "phase_ms_is_map": pool.FindMessageTypeByName("spngd.v1.GradientsComplete").fields_by_name["phase_ms"].message_type.GetOptions().map_entry,
    "last_loss_has_presence": actor.fields_by_name["last_loss"].containing_oneof is not None,
}
print(json.dumps({"services": services, "health": status, "state": state, "checks": checks, "grpc": grpc.__version__}))
`;

function pythonHasGrpc(): boolean {
  if (!existsSync(PYTHON)) return false;
  const r = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"], { encoding: "utf8" });
  return r.status === 0;
}

const havePython = pythonHasGrpc();
(havePython ? test : test.skip)("python3-grpcio: health, reflection and a reflected GetState call", async (t) => {
  const { server, port } = await startServer();
  try {
    // Run asynchronously: the server lives in this process's event loop.
    const { spawn } = await import("node:child_process");
    const child = spawn(PYTHON, ["-c", PY_CLIENT, `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    t.is(code, 0, stderr);
    const out = JSON.parse(stdout);
    t.log(`python grpcio ${out.grpc}`);
    t.deepEqual(out.services, [HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME, SPNGD_SERVICES.state].sort());
    t.deepEqual(out.health, { "": "SERVING", "spngd.v1.StateService": "SERVING" });
    // proto3 JSON: uint64 as strings, enums by name, maps as objects, camelCase names.
    t.is(out.state.role, "ROLE_FACTOR_OWNER");
    t.is(out.state.step, "120");
    t.deepEqual(out.state.phaseTimings.invert, { count: "7", lastMs: 12.5, meanMs: 13, totalMs: 91 });
    t.is(out.state.statisticSchedules[0].kind, "STATISTIC_KIND_A");
    t.is(out.state.lastLoss, 0.25);
    t.false("lastAccuracy" in out.state);
    t.deepEqual(out.checks, {
      files: [
        "health/v1/health.proto",
        "spngd/v1/factor_owner.proto",
        "spngd/v1/membership.proto",
        "spngd/v1/parameter_server.proto",
        "spngd/v1/state.proto",
        "spngd/v1/tensor.proto",
      ],
      train_oneof: ["hello", "gradient", "gradients_complete", "parameters_ack"],
      phase_ms_is_map: true,
      last_loss_has_presence: true,
    });
  } finally {
    server.forceShutdown();
  }
});
