/**
 * Traffic per link: a local cluster of processes (1 PS, 2 workers, 1 owner) records in every step
 * record the bytes the PS moved on each RPC method, and they match what the model's shapes say a
 * step must move: each worker's gradients in and its parameters out.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatState } from '../src/cli/status-command.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { buildModel } from '../src/nn/models.js';
import type { StepRecord } from '../src/run/records.js';
import { spngd } from './helpers/cli.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-traffic-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('every cluster step record holds the bytes of gradients in and parameters out, per worker about the model size', async (t) => {
  const out = join(tmp, 'run');
  const workers = 2;
  const r = await spngd(
    [
      'train',
      '--workers',
      String(workers),
      '--owners',
      '1',
      '--steps',
      '4',
      '--batch-size',
      '64',
      '--train-limit',
      '640',
      '--test-limit',
      '200',
      '--no-progress',
      '--out',
      out,
    ],
    180_000,
  );
  t.is(r.code, 0, r.stderr);
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as StepRecord)
    .filter((x) => x.type === 'step');
  t.is(steps.length, 4);
  // The default model (the MLP) in float32: what one worker's gradients and parameters weigh.
  const modelBytes = buildModel('mlp', 1)
    .params()
    .reduce((n, p) => n + p.value.data.length * 4, 0);
  let preconditionerBytes = 0;
  for (const s of steps) {
    const train = s.traffic?.['ParameterServerService/Train'];
    t.truthy(train, `step ${s.step}: no Train traffic in ${JSON.stringify(s.traffic)}`);
    // Tensor payloads plus their envelopes (names, shapes, offsets): within 1 % and a few KiB.
    for (const [what, bytes] of [
      ['gradients in', train!.receivedBytes],
      ['parameters out', train!.sentBytes],
    ] as const) {
      t.true(bytes >= workers * modelBytes, `step ${s.step}: ${what} ${bytes} < ${workers} × ${modelBytes}`);
      t.true(bytes <= workers * modelBytes * 1.01 + 16384, `step ${s.step}: ${what} ${bytes} ≫ ${workers} × ${modelBytes}`);
    }
    preconditionerBytes += s.traffic?.['ParameterServerService/PublishPreconditioners']?.receivedBytes ?? 0;
  }
  // The owner published at least the inverses of every layer once: fc1's A⁻¹ alone is 785·786/2 floats.
  t.true(preconditionerBytes >= ((785 * 786) / 2) * 4, `preconditioners in: ${preconditionerBytes} bytes over 4 steps`);
});

test('ActorState.traffic holds the totals per method, and spngd status prints them', async (t) => {
  const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
  const config = resolveTrainConfig({
    batchSize: 64,
    steps: 2,
    data: { dir: dataDir, trainLimit: 640 },
    cluster: { waitForPreconditioners: true, minWorkers: 1 },
  });
  const cluster = await startCluster({ config, workers: 1, owners: 1, backend: await clusterBackend(), trainSize: 640 });
  try {
    await cluster.ps.run();
    const state = cluster.ps.state.snapshot();
    const train = state.traffic.find((x) => x.method === 'ParameterServerService/Train');
    // The actors share this test's process, so the meter holds both ends of every stream.
    t.truthy(train, JSON.stringify(state.traffic));
    t.true(train!.sentBytes > 0 && train!.receivedBytes > 0 && train!.sentMessages > 0 && train!.receivedMessages > 0);
    t.regex(formatState(state), /traffic \(MB sent\/received\): .*ParameterServerService\/Train \d+\.\d\/\d+\.\d/);
  } finally {
    await cluster.stop();
  }
});
