/**
 * A worker's gathering of one step from several PS endpoints, without a network: one PS starts a
 * step alone (ps_shards 0 or 1), two streams start it in either order, a newer step discards an
 * older incomplete one, StepStarts that disagree and a tensor sent twice are refused, and each
 * stream gets back the gradients of its own tensors and a GradientsComplete counting them.
 */
import test from 'ava';
import type { StepStart } from '../src/gen/spngd/v1/parameter_server.js';
import { type GatherOutcome, StepGather, type StepPart } from '../workers/worker/step-gather.js';

function start(step: number, psShards: number, over: Partial<StepStart> = {}): StepStart {
  return { step, epoch: 2, parameterTensors: 0, batchSize: 32, globalBatchSize: 64, learningRate: 0.1, shardIndex: 1, shardCount: 2, psShards, ...over };
}

function part(endpoint: string, s: StepStart, names: string[]): StepPart<string> {
  return { endpoint, start: s, params: new Map(names.map((n) => [n, new Float32Array([1])])), writer: `writer of ${endpoint}` };
}

function ready(outcome: GatherOutcome<string>) {
  if (outcome.kind !== 'ready') throw new Error(`expected a ready step, got ${JSON.stringify(outcome)}`);
  return outcome.step;
}

for (const psShards of [0, 1]) {
  test(`one PS (ps_shards ${psShards}): every StepStart is a step, and all results go to its stream`, (t) => {
    const gather = new StepGather<string>();
    const step = ready(gather.offer(part('ps', start(5, psShards), ['fc1.weight', 'fc1.bias'])));
    t.is(step.start.step, 5);
    t.deepEqual([...step.params.keys()], ['fc1.weight', 'fc1.bias']);
    t.deepEqual(step.routing.writers, ['writer of ps']);
    t.deepEqual([...step.routing.tensorsPerWriter(['fc1.weight', 'fc1.bias', 'bn1.running_mean'])], [['writer of ps', 3]]);
    // Unchanged parameters are not sent again; their gradients still go to the one PS.
    const next = ready(gather.offer(part('ps', start(6, psShards), [])));
    t.is(next.routing.writerFor('fc1.weight'), 'writer of ps');
    t.deepEqual(next.routing.unrouted(['fc1.weight']), []);
    // A restarted PS may start an older step; one PS's steps are taken as they come.
    t.is(ready(gather.offer(part('ps', start(2, psShards), []))).start.step, 2);
  });
}

for (const order of [
  ['coordinator', 'shard'],
  ['shard', 'coordinator'],
]) {
  test(`two streams: the step is ready once both started it (${order.join(' first, then ')})`, (t) => {
    const gather = new StepGather<string>();
    const parts = {
      coordinator: part('coordinator', start(7, 2), ['fc1.weight', 'fc1.bias']),
      shard: part('shard', start(7, 2), ['fc2.weight', 'fc2.bias', 'bn.running_mean']),
    } as Record<string, StepPart<string>>;
    t.is(gather.offer(parts[order[0]!]!).kind, 'waiting');
    t.deepEqual(gather.pending, { step: 7, parts: 1 });
    const step = ready(gather.offer(parts[order[1]!]!));
    t.is(gather.pending, undefined);
    t.is(step.start.step, 7);
    t.deepEqual([...step.params.keys()].sort(), ['bn.running_mean', 'fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']);
    t.deepEqual(
      step.routing.writers,
      order.map((e) => `writer of ${e}`),
    );
    t.is(step.routing.writerFor('fc1.weight'), 'writer of coordinator');
    t.is(step.routing.writerFor('bn.running_mean'), 'writer of shard');
  });
}

test('routing: each stream counts the tensors it carries for its GradientsComplete', (t) => {
  const gather = new StepGather<string>();
  gather.offer(part('a', start(3, 3), ['l1.weight', 'l1.bias']));
  gather.offer(part('b', start(3, 3), ['l2.weight']));
  const step = ready(gather.offer(part('c', start(3, 3), [])));
  const counts = step.routing.tensorsPerWriter(['l1.weight', 'l1.bias', 'l2.weight']);
  t.deepEqual(
    [...counts],
    [
      ['writer of a', 2],
      ['writer of b', 1],
      // A stream that holds no tensor of the model still takes part and gets GradientsComplete with 0.
      ['writer of c', 0],
    ],
  );
  t.deepEqual(step.routing.unrouted(['l1.weight', 'l3.weight']), ['l3.weight']);
  t.throws(() => step.routing.writerFor('l3.weight'), { message: /no PS endpoint sent l3.weight/ });
});

test('a StepStart of a newer step discards the older incomplete one; a straggler of the older is ignored', (t) => {
  const gather = new StepGather<string>();
  t.is(gather.offer(part('coordinator', start(4, 2), ['fc1.weight'])).kind, 'waiting');
  t.is(gather.offer(part('coordinator', start(5, 2), ['fc1.weight'])).kind, 'waiting');
  t.deepEqual(gather.pending, { step: 5, parts: 1 });
  t.is(gather.offer(part('shard', start(4, 2), ['fc2.weight'])).kind, 'waiting', 'step 4 was abandoned');
  t.deepEqual(gather.pending, { step: 5, parts: 1 });
  t.is(ready(gather.offer(part('shard', start(5, 2), ['fc2.weight']))).start.step, 5);
});

test('a stream that sent the pending step and then starts an older one went back (a checkpoint): the older step is gathered', (t) => {
  const gather = new StepGather<string>();
  // Step 6 half-gathered: the shard that would send the rest was lost, and the coordinator went back to step 4.
  t.is(gather.offer(part('coordinator', start(6, 2), ['fc1.weight'])).kind, 'waiting');
  t.is(gather.offer(part('coordinator', start(4, 2), ['fc1.weight'])).kind, 'waiting');
  t.deepEqual(gather.pending, { step: 4, parts: 1 });
  t.is(ready(gather.offer(part('new-shard', start(4, 2), ['fc2.weight']))).start.step, 4);
});

test('a stream that starts the step again replaces its part; a broken stream loses it', (t) => {
  const gather = new StepGather<string>();
  gather.offer(part('coordinator', start(9, 2), ['fc1.weight']));
  t.is(gather.offer(part('coordinator', start(9, 2), ['fc1.weight'])).kind, 'waiting', 'the same tensor from the same stream is no duplicate');
  t.deepEqual(gather.pending, { step: 9, parts: 1 });
  gather.drop('coordinator');
  t.is(gather.pending, undefined);
  gather.offer(part('shard', start(9, 2), ['fc2.weight']));
  gather.clear();
  t.is(gather.pending, undefined);
  t.is(gather.offer(part('coordinator', start(9, 2), ['fc1.weight'])).kind, 'waiting', 'the cleared shard part does not count');
  t.is(ready(gather.offer(part('shard', start(9, 2), ['fc2.weight']))).params.size, 2);
});

const disagreements: [string, Partial<StepStart>][] = [
  ['epoch', { epoch: 3 }],
  ['batchSize', { batchSize: 16 }],
  ['globalBatchSize', { globalBatchSize: 128 }],
  ['shardIndex', { shardIndex: 0 }],
  ['shardCount', { shardCount: 3 }],
  ['psShards', { psShards: 3 }],
];
for (const [field, over] of disagreements) {
  test(`StepStarts of one step that disagree on ${field} are refused`, (t) => {
    const gather = new StepGather<string>();
    gather.offer(part('coordinator', start(8, 2), ['fc1.weight']));
    const outcome = gather.offer(part('shard', start(8, 2, over), ['fc2.weight']));
    t.is(outcome.kind, 'refused');
    if (outcome.kind === 'refused') {
      t.is(outcome.step, 8);
      t.regex(outcome.reason, new RegExp(`disagree on ${field}`));
    }
    t.is(gather.pending, undefined, 'nothing of the refused step is kept');
  });
}

test('a tensor sent for the same step by two streams is refused', (t) => {
  const gather = new StepGather<string>();
  gather.offer(part('coordinator', start(8, 2), ['fc1.weight', 'fc1.bias']));
  const outcome = gather.offer(part('shard', start(8, 2), ['fc2.weight', 'fc1.bias']));
  t.deepEqual(outcome, { kind: 'refused', step: 8, reason: 'fc1.bias came from both coordinator and shard' });
});
