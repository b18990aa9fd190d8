/**
 * Checkpoints: the file format detects truncation and corruption and falls back to the previous
 * good checkpoint; a single-process run stopped and resumed ends with exactly the parameters of a
 * run that was never stopped.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CheckpointError, decodeCheckpoint, encodeCheckpoint, listCheckpoints, loadLatestCheckpoint, saveCheckpoint } from '../src/checkpoint/format.js';
import { checkpointToState } from '../src/checkpoint/training-state.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { RunOutput } from '../src/run/output.js';
import { runSingleProcess } from '../src/run/single-process.js';
import { silentLogger } from '../src/util/log.js';
import { createBlasBackend } from '../workers/kernels/blas/blas-backend.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'spngd-ckpt-'));

test('a checkpoint round-trips float32 and float64 tensors and its header', (t) => {
  const tensors = new Map<string, Float32Array | Float64Array>([
    ['a', Float32Array.from([1.5, -2, 3])],
    ['b', Float64Array.from([Math.PI, 1e-300])],
  ]);
  const back = decodeCheckpoint<{ step: number }>('x', encodeCheckpoint({ header: { step: 7 }, tensors }));
  t.is(back.header.step, 7);
  t.deepEqual(Array.from(back.tensors.get('a')!), [1.5, -2, 3]);
  t.true(back.tensors.get('b') instanceof Float64Array);
  t.deepEqual(Array.from(back.tensors.get('b')!), [Math.PI, 1e-300]);
});

test('a truncated or corrupted checkpoint is detected, and the previous good one is used', async (t) => {
  const dir = tmp();
  for (const step of [10, 20, 30]) await saveCheckpoint(dir, step, { header: { step }, tensors: new Map([['w', Float32Array.from([step])]]) }, 5);
  t.deepEqual(listCheckpoints(dir), ['checkpoint-00000010.spngd', 'checkpoint-00000020.spngd', 'checkpoint-00000030.spngd']);
  const newest = join(dir, 'checkpoint-00000030.spngd');
  const second = join(dir, 'checkpoint-00000020.spngd');
  const bytes = readFileSync(newest);
  writeFileSync(newest, bytes.subarray(0, bytes.length - 10)); // truncated
  const flipped = Buffer.from(readFileSync(second));
  flipped[20] ^= 0xff; // corrupted
  writeFileSync(second, flipped);
  const bad: string[] = [];
  const found = loadLatestCheckpoint<{ step: number }>(dir, (file, why) => bad.push(`${file}: ${why}`));
  t.is(found?.contents.header.step, 10);
  t.is(bad.length, 2);
  t.regex(bad[0], /checkpoint-00000030\.spngd: .*checksum mismatch/);
  t.regex(bad[1], /checkpoint-00000020\.spngd: .*checksum mismatch/);
  t.throws(() => decodeCheckpoint('junk', Buffer.from('not a checkpoint at all, really')), {
    instanceOf: CheckpointError,
    message: /junk: not a spngd checkpoint/,
  });
});

test('only the newest `keep` checkpoints are kept', async (t) => {
  const dir = tmp();
  for (const step of [1, 2, 3, 4]) await saveCheckpoint(dir, step, { header: {}, tensors: new Map() }, 2);
  t.deepEqual(listCheckpoints(dir), ['checkpoint-00000003.spngd', 'checkpoint-00000004.spngd']);
});

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));

test('a single-process SP-NGD run stopped at step 7 and resumed ends with the parameters of an uninterrupted run', async (t) => {
  const backend = await createBlasBackend();
  const base = {
    seed: 3,
    batchSize: 256,
    evalEvery: 6,
    checkpointEvery: 5,
    data: { dir: dataDir, trainLimit: 2048, testLimit: 500 },
    optimizer: { kind: 'spngd', lr: 0.05, schedule: { decayEndEpoch: 2, power: 1 }, kfac: { averaging: 0.7, stale: { alpha: 0.5 } } },
  };
  const full = resolveTrainConfig({ ...base, steps: 12 });
  const a = new RunOutput(tmp());
  await runSingleProcess(full, { logger: silentLogger(), output: a, backend, progress: false });

  const b = new RunOutput(tmp());
  await runSingleProcess(resolveTrainConfig({ ...base, steps: 7 }), { logger: silentLogger(), output: b, backend, progress: false });
  t.deepEqual(listCheckpoints(b.dir), ['checkpoint-00000005.spngd', 'checkpoint-00000007.spngd']);
  await runSingleProcess(full, { logger: silentLogger(), output: b, backend, progress: false, resume: true });

  const final = (dir: string) => checkpointToState(loadLatestCheckpoint<never>(dir, () => t.fail())!.contents as never);
  const sa = final(a.dir);
  const sb = final(b.dir);
  t.is(sa.step, 12);
  t.is(sb.step, 12);
  for (const [name, values] of Object.entries(sa.model)) t.deepEqual(sb.model[name], values, name);
  for (const [name, values] of sa.velocity) t.deepEqual(sb.velocity.get(name), values, `velocity ${name}`);
  // The resumed run appended to the same metrics file: steps 1..7 then 8..12.
  const steps = readFileSync(b.metricsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === 'step')
    .map((r) => r.step);
  t.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  await backend.dispose();
});
