/**
 * grpc.health.v1 and server reflection on a grpc-js server, checked from a grpc-js client and, when
 * Debian's python3-grpcio is installed (`apt-get install -y python3-grpcio python3-protobuf`, run
 * with /usr/bin/python3), from an independent Python client that builds the message classes from
 * the reflected descriptors (map fields included) and calls StateService.GetState with them
 * (test/helpers/python-client.ts; skipped without python3-grpcio locally, failed under CI).
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Role, LifecycleState } from '../src/gen/spngd/v1/membership.js';
import { StatisticKind } from '../src/gen/spngd/v1/factor_owner.js';
import { type ActorState, StateServiceClient, type StateServiceServer, StateServiceService } from '../src/gen/spngd/v1/state.js';
import {
  addHealthAndReflection,
  channelOptions,
  HEALTH_SERVICE_NAME,
  type HealthStatus,
  REFLECTION_SERVICE_NAME,
  serverOptions,
  SPNGD_SERVICES,
  spngdDescriptorSet,
} from '../src/transport/index.js';
import { pythonTest, runPythonProbe } from './helpers/python-client.js';

const require = createRequire(import.meta.url);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const STATE: ActorState = {
  role: Role.ROLE_FACTOR_OWNER,
  id: 'owner-1',
  address: '127.0.0.1:0',
  lifecycle: LifecycleState.LIFECYCLE_STATE_READY,
  step: 120,
  epoch: 3,
  members: [
    {
      id: 'ps-0',
      role: Role.ROLE_PARAMETER_SERVER,
      address: 'ps:1',
      state: LifecycleState.LIFECYCLE_STATE_READY,
      joinedEpoch: 1,
      lastHeartbeatUnixMs: 5,
      capacity: 1,
    },
  ],
  assignment: { epoch: 3, layers: [{ layer: 'fc1', ownerId: 'owner-1', cost: 1e6, aDim: 785, gDim: 128, previousOwnerId: '' }] },
  preconditioners: [{ layer: 'fc1', version: 7, computedFromStep: 118, ownerId: 'owner-1', updatedUnixMs: 1700000000000 }],
  statisticSchedules: [{ layer: 'fc1', kind: StatisticKind.STATISTIC_KIND_A, interval: 4, lastRefreshStep: 116, nextRefreshStep: 120, lastDrift: 0.01 }],
  phaseTimings: {
    invert: { count: 7, lastMs: 12.5, meanMs: 13, totalMs: 91 },
    reduce: { count: 30, lastMs: 1.5, meanMs: 1.25, totalMs: 37.5 },
  },
  lastLoss: 0.25,
  lastAccuracy: undefined,
  startedUnixMs: 1700000000000,
  nowUnixMs: 1700000001000,
  warnings: ['no factor owner: steps apply the last preconditioner of each layer until one joins'],
  refusals: { no_session: 2 },
  recentRefusals: ['refused no_session from 127.0.0.1:9 (without a session secret): heartbeat'],
  traffic: [{ method: 'FactorOwnerService/PushStatistics', sentBytes: 0, receivedBytes: 4096, sentMessages: 0, receivedMessages: 2 }],
  psShards: [],
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
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { server, port, health };
}

const LOADER = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function healthClient(port: number): grpc.Client & Record<string, any> {
  const { protoPath } = require('grpc-health-check') as { protoPath: string };
  const pkg = grpc.loadPackageDefinition(loadSync(protoPath, LOADER)) as any;
  return new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function reflectionClient(port: number): grpc.Client & Record<string, any> {
  const proto = join(dirname(require.resolve('@grpc/reflection')), '..', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');
  const pkg = grpc.loadPackageDefinition(loadSync(proto, LOADER)) as any;
  return new pkg.grpc.reflection.v1.ServerReflection(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function check(client: any, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.Check({ service }, (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res.status))));
}

/** Sends reflection requests on one stream and collects the responses. */
function reflect(client: any, requests: object[]): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    const out: any[] = [];
    call.on('data', (m: any) => out.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(out));
    for (const r of requests) call.write(r);
    call.end();
  });
}

test('health answers SERVING for the server and its services, and follows setAll', async (t) => {
  const { server, port, health } = await startServer();
  const client = healthClient(port);
  try {
    t.is(await check(client, ''), 'SERVING');
    t.is(await check(client, SPNGD_SERVICES.state), 'SERVING');
    const err = await t.throwsAsync(check(client, 'no.such.Service'));
    t.is((err as grpc.ServiceError).code, grpc.status.NOT_FOUND);
    health.setAll('NOT_SERVING');
    t.is(await check(client, ''), 'NOT_SERVING');
    t.is(await check(client, SPNGD_SERVICES.state), 'NOT_SERVING');
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('reflection lists the services and returns valid descriptors, map fields included', async (t) => {
  const { server, port } = await startServer();
  const client = reflectionClient(port);
  try {
    const [list, file] = await reflect(client, [{ list_services: '*' }, { file_containing_symbol: 'spngd.v1.StateService' }]);
    const names = list.list_services_response.service.map((s: { name: string }) => s.name).sort();
    t.deepEqual(names, [HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME, SPNGD_SERVICES.state].sort());

    const files = file.file_descriptor_response.file_descriptor_proto.map((b: Buffer) => fromBinary(FileDescriptorProtoSchema, b));
    const state = files.find((f: { name: string }) => f.name === 'spngd/v1/state.proto');
    t.truthy(state, `files: ${files.map((f: { name: string }) => f.name)}`);
    t.deepEqual(state.dependency, ['spngd/v1/factor_owner.proto', 'spngd/v1/membership.proto']);
    const actor = state.messageType.find((m: { name: string }) => m.name === 'ActorState');
    const entry = actor.nestedType.find((m: { name: string }) => m.name === 'PhaseTimingsEntry');
    t.true(entry.options?.mapEntry, 'PhaseTimingsEntry is a map entry');
    const field = actor.field.find((f: { name: string }) => f.name === 'phase_timings');
    t.is(field.typeName, '.spngd.v1.ActorState.PhaseTimingsEntry');
    t.true(state.service.some((s: { name: string }) => s.name === 'StateService'));
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('the committed descriptor set matches the embedded one and holds every spngd service', (t) => {
  const committed = fromBinary(FileDescriptorSetSchema, readFileSync(join(ROOT, 'src/gen/spngd.binpb')));
  const embedded = fromBinary(FileDescriptorSetSchema, spngdDescriptorSet());
  t.deepEqual(
    committed.file.map((f) => f.name),
    embedded.file.map((f) => f.name),
  );
  const services = embedded.file.flatMap((f) => f.service.map((s) => `${f.package}.${s.name}`)).sort();
  t.deepEqual(services, Object.values(SPNGD_SERVICES).sort());
  t.truthy(
    committed.file.some((f) => f.sourceCodeInfo !== undefined),
    'the committed set keeps comments for tools',
  );
});

test('the generated StateService client reads the state back', async (t) => {
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

pythonTest(test, 'python3-grpcio: health, reflection and a reflected GetState call', async (t) => {
  const { server, port } = await startServer();
  try {
    const out = await runPythonProbe({
      address: `127.0.0.1:${port}`,
      symbols: ['spngd.v1.StateService', 'grpc.health.v1.Health', 'spngd.v1.ParameterServerService'],
      health: ['', 'spngd.v1.StateService'],
      getState: true,
    });
    t.log(`python grpcio ${out.grpc}`);
    t.deepEqual(out.services, [HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME, SPNGD_SERVICES.state].sort());
    t.deepEqual(out.health, { '': 'SERVING', 'spngd.v1.StateService': 'SERVING' });
    // proto3 JSON: uint64 as strings, enums by name, maps as objects, camelCase names.
    t.is(out.state.role, 'ROLE_FACTOR_OWNER');
    t.is(out.state.step, '120');
    t.deepEqual(out.state.phaseTimings.invert, { count: '7', lastMs: 12.5, meanMs: 13, totalMs: 91 });
    t.is(out.state.statisticSchedules[0].kind, 'STATISTIC_KIND_A');
    t.is(out.state.lastLoss, 0.25);
    t.false('lastAccuracy' in out.state);
    // Every spngd file went into the strict pool; a oneof envelope, a map and a proto3 optional survived.
    t.deepEqual(out.files, [
      'health/v1/health.proto',
      'spngd/v1/factor_owner.proto',
      'spngd/v1/membership.proto',
      'spngd/v1/parameter_server.proto',
      'spngd/v1/state.proto',
      'spngd/v1/tensor.proto',
    ]);
    t.deepEqual(out.checks, {
      train_oneof: ['hello', 'gradient', 'gradients_complete', 'parameters_ack'],
      phase_ms_is_map: true,
      last_loss_has_presence: true,
    });
  } finally {
    server.forceShutdown();
  }
});
