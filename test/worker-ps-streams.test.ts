/**
 * A worker's Train streams (workers/worker/ps-streams.ts) over real gRPC on loopback, against two
 * fake PS endpoints: the coordinator and one PS shard of the view. The shard's stream opens from
 * the view, a step sent half by each becomes one step whose routing writes back to the endpoint
 * that sent each tensor, a drain from the shard closes only its stream, and a shard that leaves
 * the view loses its stream.
 */
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { ActorStateTracker } from '../src/actors/common/actor-state.js';
import { INSECURE } from '../src/actors/common/credentials.js';
import { MemberClient } from '../src/actors/common/member-client.js';
import { LifecycleState, type MembershipView, Role } from '../src/gen/spngd/v1/membership.js';
import type { StepStart, TrainRequest, TrainResponse } from '../src/gen/spngd/v1/parameter_server.js';
import { TensorEncoding } from '../src/gen/spngd/v1/tensor.js';
import { FastParameterServerServiceService } from '../src/transport/fast-services.js';
import { chunkTensor } from '../src/transport/tensor-chunker.js';
import { silentLogger } from '../src/util/log.js';
import { PsStreams } from '../workers/worker/ps-streams.js';
import type { GatheredStep } from '../workers/worker/step-gather.js';
import type { TrainWriter } from '../workers/worker/train-stream.js';
import { capturingLogger } from './helpers/cluster.js';

type ServerCall = grpc.ServerDuplexStream<TrainRequest, TrainResponse>;

/** A fake PS endpoint: records each Train call and what arrives on it. */
interface FakeEndpoint {
  address: string;
  calls: { call: ServerCall; received: TrainRequest[]; ended: boolean }[];
  server: grpc.Server;
}

async function endpoint(): Promise<FakeEndpoint> {
  const server = new grpc.Server();
  const fake: FakeEndpoint = { address: '', calls: [], server };
  const unused = (call: { end?: () => void }) => call.end?.();
  server.addService(FastParameterServerServiceService, {
    train: (call: ServerCall) => {
      const entry = { call, received: [] as TrainRequest[], ended: false };
      fake.calls.push(entry);
      call.on('data', (m: TrainRequest) => entry.received.push(m));
      const end = () => (entry.ended = true);
      call.on('end', end);
      call.on('cancelled', end);
      call.on('error', end);
    },
    publishPreconditioners: unused,
    downloadParameters: unused,
    shardSession: unused,
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  fake.address = `127.0.0.1:${port}`;
  return fake;
}

const settle = (ms = 50) => new Promise((res) => setTimeout(res, ms));

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await settle();
  }
}

function view(epoch: number, shards: { id: string; address: string }[]): MembershipView {
  return {
    epoch,
    members: shards.map((s) => ({
      id: s.id,
      role: Role.ROLE_PS_SHARD,
      address: s.address,
      state: LifecycleState.LIFECYCLE_STATE_READY,
      joinedEpoch: 1,
      lastHeartbeatUnixMs: 0,
      capacity: 1,
    })),
    assignment: undefined,
    firstStep: 0,
    psShards: [],
  };
}

/** Sends `names` (one float each) and StepStart(step) from the endpoint's newest call. */
function sendStep(fake: FakeEndpoint, step: number, psShards: number, names: string[]): void {
  const call = fake.calls.at(-1)!.call;
  for (const name of names) {
    for (const tensor of chunkTensor(name, new Float32Array([step]), [1], TensorEncoding.TENSOR_ENCODING_DENSE, { version: step, chunkBytes: 1 << 20 }))
      call.write({ kind: { $case: 'parameters', value: { step, tensor } } });
  }
  const start: StepStart = {
    step,
    epoch: 1,
    parameterTensors: names.length,
    batchSize: 8,
    globalBatchSize: 16,
    learningRate: 0.1,
    shardIndex: 0,
    shardCount: 2,
    psShards,
  };
  call.write({ kind: { $case: 'stepStart', value: start } });
}

async function setup() {
  const coordinator = await endpoint();
  const shard = await endpoint();
  const state = new ActorStateTracker(Role.ROLE_WORKER, 'worker-1');
  const member = new MemberClient(coordinator.address, silentLogger());
  const steps: GatheredStep<TrainWriter>[] = [];
  const drains: string[] = [];
  const { logger, messages } = capturingLogger();
  const streams = new PsStreams({
    ps: coordinator.address,
    logger,
    security: INSECURE,
    transport: {},
    member,
    state,
    onStep: (s) => steps.push(s),
    onDrain: (reason) => drains.push(reason),
  });
  const teardown = () => {
    streams.close();
    member.close();
    coordinator.server.forceShutdown();
    shard.server.forceShutdown();
  };
  return { coordinator, shard, streams, steps, drains, messages, teardown };
}

test('a step sent half by the coordinator and half by a shard is one step, and each half goes back where it came from', async (t) => {
  const { coordinator, shard, streams, steps, teardown } = await setup();
  try {
    streams.follow(view(1, [{ id: 'ps-1', address: shard.address }]));
    t.is(shard.calls.length, 0, 'no stream before the worker opens its streams');
    streams.open();
    await until('both hellos', () => coordinator.calls[0]?.received.length === 1 && shard.calls[0]?.received.length === 1);
    t.is(shard.calls[0]!.received[0]!.kind?.$case, 'hello');

    sendStep(shard, 4, 2, ['fc2.weight', 'fc2.bias']);
    await settle(150);
    t.is(steps.length, 0, 'the shard alone does not start the step');
    sendStep(coordinator, 4, 2, ['fc1.weight']);
    await until('the step', () => steps.length === 1);
    const step = steps[0]!;
    t.deepEqual([...step.params.keys()].sort(), ['fc1.weight', 'fc2.bias', 'fc2.weight']);
    t.is(step.routing.writers.length, 2);

    const counts = step.routing.tensorsPerWriter(['fc1.weight', 'fc2.weight', 'fc2.bias']);
    for (const [writer, gradientTensors] of counts) {
      await writer.write(
        {
          kind: {
            $case: 'gradientsComplete',
            value: { step: 4, workerId: 'worker-1', numSamples: 8, gradientTensors, lossSum: 1, numCorrect: 1, phaseMs: {} },
          },
        },
        64,
      );
    }
    const completes = (fake: FakeEndpoint) =>
      fake.calls[0]!.received.flatMap((m) => (m.kind?.$case === 'gradientsComplete' ? [m.kind.value.gradientTensors] : []));
    await until('both GradientsCompletes', () => completes(coordinator).length === 1 && completes(shard).length === 1);
    t.deepEqual(completes(coordinator), [1]);
    t.deepEqual(completes(shard), [2]);
  } finally {
    teardown();
  }
});

test('one PS (ps_shards 1) works as before: every StepStart is a step', async (t) => {
  const { coordinator, streams, steps, teardown } = await setup();
  try {
    streams.follow(view(1, []));
    streams.open();
    await until('the hello', () => coordinator.calls[0]?.received.length === 1);
    sendStep(coordinator, 0, 1, ['fc1.weight']);
    sendStep(coordinator, 1, 1, []);
    await until('two steps', () => steps.length === 2);
    t.deepEqual(
      steps.map((s) => [s.start.step, s.params.size, s.routing.writers.length]),
      [
        [0, 1, 1],
        [1, 0, 1],
      ],
    );
  } finally {
    teardown();
  }
});

test("a shard's drain closes only its stream; a shard that leaves the view loses its stream", async (t) => {
  const { coordinator, shard, streams, drains, messages, teardown } = await setup();
  const other = await endpoint();
  try {
    streams.follow(view(1, [{ id: 'ps-1', address: shard.address }]));
    streams.open();
    await until('both hellos', () => coordinator.calls.length === 1 && shard.calls[0]?.received.length === 1);

    shard.calls[0]!.call.write({ kind: { $case: 'drain', value: { reason: 'shard going away', epoch: 0 } } });
    await until("the shard's stream to end", () => shard.calls[0]!.ended);
    await settle(600);
    t.is(shard.calls.length, 1, 'a drained shard is not reconnected to');
    t.deepEqual(drains, [], 'the worker is not drained');
    t.false(coordinator.calls[0]!.ended);
    t.true(messages.some((m) => /drained by PS shard ps-1/.test(m)));

    // A new shard appears and the drained one leaves: a stream to the new one, none to the old.
    streams.follow(view(2, [{ id: 'ps-2', address: other.address }]));
    await until("the new shard's hello", () => other.calls[0]?.received.length === 1);
    streams.follow(view(3, []));
    await until("the departed shard's stream to end", () => other.calls[0]!.ended);
    t.false(coordinator.calls[0]!.ended, "the coordinator's stream stays");
  } finally {
    teardown();
    other.server.forceShutdown();
  }
});
