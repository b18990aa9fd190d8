/**
 * The PS's gradient inbox without a network: two workers on fake Train streams get their shard
 * of a step, send gradients, and collect() keeps the finite contributions. Each gradient tensor is
 * checked when it is assembled; a contribution with a non-finite one is left out with a warning, a
 * refusal and a dropped_contribution metric, and a tensor sent again with finite values counts as
 * finite.
 */
import { EventEmitter } from 'node:events';
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import test from 'ava';
import { ActorStateTracker } from '../src/actors/common/actor-state.js';
import { SESSION_METADATA } from '../src/actors/common/identity.js';
import { MetricHub } from '../src/actors/common/metric-hub.js';
import { Admission } from '../src/actors/ps/admission.js';
import { GradientInbox } from '../src/actors/ps/gradient-inbox.js';
import { Membership } from '../src/actors/ps/membership.js';
import { LifecycleState, Role, type Member } from '../src/gen/spngd/v1/membership.js';
import type { TrainRequest, TrainResponse } from '../src/gen/spngd/v1/parameter_server.js';
import { buildModel } from '../src/nn/models.js';
import { TensorEncoding } from '../src/gen/spngd/v1/tensor.js';
import { chunkTensor } from '../src/transport/tensor-chunker.js';
import { silentLogger } from '../src/util/log.js';
import { capturingLogger } from './helpers/cluster.js';

function member(id: string, role: Role): Member {
  return { id, role, address: '', state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 0, lastHeartbeatUnixMs: Date.now(), capacity: 1 };
}

function setup() {
  const model = buildModel('mlp', 1);
  const membership = new Membership([], member('ps-0', Role.ROLE_PARAMETER_SERVER), 60_000);
  const state = new ActorStateTracker(Role.ROLE_PARAMETER_SERVER, 'ps-0');
  const metrics = new MetricHub(() => 'ps-0');
  const admission = new Admission(state, silentLogger());
  const { logger, messages } = capturingLogger('warn');
  const inbox = new GradientInbox({ model, holds: () => true, membership, admission, state, metrics, logger, chunkBytes: 1 << 20, step: () => 0 });
  const sent = new Map<string, TrainResponse[]>();
  const calls = new Map<string, EventEmitter>();
  for (const id of ['worker-1', 'worker-2']) {
    membership.join(member(id, Role.ROLE_WORKER));
    const out: TrainResponse[] = [];
    const call = Object.assign(new EventEmitter(), {
      metadata: new Metadata(),
      destroyed: false,
      getPeer: () => `test:${id}`,
      write: (m: TrainResponse, cb?: (err?: Error | null) => void) => {
        out.push(m);
        queueMicrotask(() => cb?.());
        return true;
      },
      end: () => undefined,
    });
    call.metadata.set(SESSION_METADATA, admission.issue(id, Role.ROLE_WORKER));
    inbox.onTrainStream(call as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    call.emit('data', { kind: { $case: 'hello', value: { workerId: id } } });
    sent.set(id, out);
    calls.set(id, call);
  }
  /** Worker `id` sends gradient `name` of step 0 (the model's shape). */
  const gradient = (id: string, name: string, values: Float32Array) => {
    const shape = model.stateEntries().find((e) => e.name === name)!.value.shape;
    for (const tensor of chunkTensor(name, values, shape, TensorEncoding.TENSOR_ENCODING_DENSE, { version: 0, chunkBytes: 1 << 20 }))
      calls.get(id)!.emit('data', { kind: { $case: 'gradient', value: { step: 0, tensor } } });
  };
  /** Worker `id` sends a gradient of every parameter and buffer, with `override` for some, then GradientsComplete. */
  const deliver = (id: string, samples: number, override: Map<string, Float32Array> = new Map()) => {
    const entries = model.stateEntries();
    for (const e of entries) gradient(id, e.name, override.get(e.name) ?? new Float32Array(e.value.data.length));
    const done = { step: 0, workerId: id, numSamples: samples, gradientTensors: entries.length, lossSum: 1, numCorrect: 1, phaseMs: {} };
    calls.get(id)!.emit('data', { kind: { $case: 'gradientsComplete', value: done } });
  };
  const startStep = async () => {
    const participants = await inbox.waitForWorkers(2, () => false);
    const params = model.stateEntries().map((e) => ({ name: e.name, shape: e.value.shape, data: new Float32Array(e.value.data) }));
    await inbox.broadcast(participants, 0, params, {
      step: 0,
      epoch: membership.epoch,
      parameterTensors: params.length,
      globalBatchSize: 9,
      learningRate: 0.1,
      psShards: 1,
    });
    return participants;
  };
  return { model, inbox, state, metrics, messages, sent, gradient, deliver, startStep };
}

test('each worker gets its shard of the step, and collect() keeps only the finite contributions', async (t) => {
  const { model, inbox, state, metrics, messages, sent, deliver, startStep } = setup();
  const participants = await startStep();
  const starts = ['worker-1', 'worker-2'].map((id) => sent.get(id)!.find((m) => m.kind?.$case === 'stepStart')?.kind);
  t.deepEqual(
    starts.map((k) => (k?.$case === 'stepStart' ? [k.value.shardIndex, k.value.batchSize] : undefined)),
    [
      [0, 5],
      [1, 4],
    ],
  );
  const bad = model.stateEntries()[0]!;
  const nan = new Float32Array(bad.value.data.length);
  nan[3] = Number.NaN;
  deliver('worker-1', 5);
  deliver('worker-2', 4, new Map([[bad.name, nan]]));
  const arrived = await inbox.collect(participants, 0);
  t.deepEqual(
    arrived.map((w) => w.id),
    ['worker-1'],
  );
  t.is(state.snapshot().refusals.non_finite_gradient, 1);
  t.deepEqual(
    metrics
      .recent()
      .filter((e) => e.name === 'dropped_contribution')
      .map((e) => e.labels),
    [{ worker: 'worker-2', tensor: bad.name }],
  );
  t.true(messages.some((m) => m === `step 0: ${bad.name} from worker-2 is not finite; that worker's contribution is left out of the step`));
});

test('a gradient sent again with finite values replaces a non-finite one', async (t) => {
  const { model, inbox, state, gradient, deliver, startStep } = setup();
  const participants = await startStep();
  const entry = model.stateEntries()[1]!;
  const inf = new Float32Array(entry.value.data.length).fill(Number.POSITIVE_INFINITY);
  gradient('worker-2', entry.name, inf);
  deliver('worker-1', 5);
  deliver('worker-2', 4); // every tensor again, finite
  const arrived = await inbox.collect(participants, 0);
  t.deepEqual(
    arrived.map((w) => w.id),
    ['worker-1', 'worker-2'],
  );
  t.false('non_finite_gradient' in state.snapshot().refusals);
});

test('release(): collect() stops waiting for a worker a PS shard did not get, and keeps one that delivered', async (t) => {
  const { inbox, deliver, startStep } = setup();
  const participants = await startStep();
  deliver('worker-1', 5);
  // worker-2 never delivers; without release() the collect below would wait for it forever.
  inbox.release(['worker-2', 'worker-1'], 0);
  const arrived = await inbox.collect(participants, 0);
  t.deepEqual(
    arrived.map((w) => w.id),
    ['worker-1'],
  );
  // A release for another step changes nothing.
  inbox.release(['worker-1'], 7);
  t.is(participants[0]!.complete?.step, 0);
});
