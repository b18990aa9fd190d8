/** He init, model specs and built-ins, Sequential's state export/import and summary. */
import test from 'ava';
import { parse as parseYaml } from 'yaml';
import { heInit } from '../src/nn/init.js';
import {
  buildModel,
  builtinModelSpecs,
  ModelBuilder,
  ModelSpecError,
  modelConfigSchema,
  modelSpecSchema,
  parseModelSpec,
  resolveModelSpec,
} from '../src/nn/models.js';
import { Linear } from '../src/nn/linear.js';
import { Sequential } from '../src/nn/sequential.js';
import type { ForwardContext } from '../src/nn/types.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const backend = createReferenceBackend();
const fwd = (training: boolean): ForwardContext => ({ backend, training, captureA: false });

function randImages(seed: number, n: number, shape = [1, 28, 28]): { shape: number[]; data: Float32Array } {
  const rng = new Rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return { shape: [n, ...shape], data: Float32Array.from({ length: n * size }, () => rng.next()) };
}

test('He init: same seed ⇒ identical parameters, different seed ⇒ different', (t) => {
  const a = buildModel('cnn', 42).exportState();
  const b = buildModel('cnn', 42).exportState();
  const c = buildModel('cnn', 43).exportState();
  t.deepEqual(Object.keys(a), Object.keys(b));
  for (const k of Object.keys(a)) t.deepEqual(Array.from(a[k]), Array.from(b[k]), k);
  t.notDeepEqual(Array.from(a['conv1.weight']), Array.from(c['conv1.weight']));
  t.notDeepEqual(Array.from(a['fc1.weight']), Array.from(c['fc1.weight']));
  // Re-initialising in place with the same seed gives the same values again.
  const m = buildModel('cnn', 42);
  for (const p of m.params()) p.value.data.fill(3);
  heInit(m, 42);
  const again = m.exportState();
  for (const k of Object.keys(a)) t.deepEqual(Array.from(again[k]), Array.from(a[k]), k);
});

test('He init: weights ~ N(0, 2/fan_in), zero biases, BN gamma 1 beta 0, running stats (0, 1)', (t) => {
  const m = buildModel('mlp', 7);
  for (const info of m.kfacLayers()) {
    const w = info.weight.value.data;
    let mean = 0;
    for (const v of w) mean += v;
    mean /= w.length;
    let varSum = 0;
    for (const v of w) varSum += (v - mean) ** 2;
    const std = Math.sqrt(varSum / w.length);
    const expected = Math.sqrt(2 / info.inFeatures);
    // Relative standard error of a sample std is about 1/sqrt(2·count).
    const tol = 4 / Math.sqrt(2 * w.length) + 1e-3;
    t.true(Math.abs(std / expected - 1) < tol, `${info.name}: std ${std} vs ${expected}`);
    t.true(Math.abs(mean) < (4 * expected) / Math.sqrt(w.length), `${info.name}: mean ${mean}`);
    t.true(info.bias.value.data.every((v) => v === 0));
    t.true(info.weight.rescale);
    t.false(info.bias.rescale);
  }
  const cnn = buildModel('cnn', 7);
  const conv1 = cnn.kfacLayers()[0];
  t.is(conv1.inFeatures, 9);
  const bn = cnn.kfacLayers().filter((l) => l.kind === 'bn');
  t.is(bn.length, 2);
  for (const l of bn) {
    t.true(l.weight.value.data.every((v) => v === 1));
    t.true(l.bias.value.data.every((v) => v === 0));
    t.false(l.weight.rescale || l.bias.rescale);
  }
  const state = cnn.exportState();
  t.true(state['bn1.running_mean'].every((v) => v === 0));
  t.true(state['bn1.running_var'].every((v) => v === 1));
});

test('built-in mlp: 784-256-256-10 with ReLU, 269,322 parameters', async (t) => {
  const m = buildModel('mlp', 1);
  t.is(m.parameterCount(), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
  t.is(m.parameterCount(), 269322);
  t.deepEqual(
    m.layers.map((l) => `${l.kind}:${l.name}`),
    ['flatten:flatten1', 'linear:fc1', 'relu:relu1', 'linear:fc2', 'relu:relu2', 'linear:fc3'],
  );
  t.deepEqual(m.inputShape, [1, 28, 28]);
  t.deepEqual(m.outputShape(), [10]);
  t.deepEqual(
    m.kfacLayers().map((l) => [l.name, l.kind, l.inFeatures, l.outFeatures]),
    [
      ['fc1', 'linear', 784, 256],
      ['fc2', 'linear', 256, 256],
      ['fc3', 'linear', 256, 10],
    ],
  );
  const y = await m.forward(randImages(1, 3), fwd(true));
  t.deepEqual(y.shape, [3, 10]);
});

test('built-in cnn: 16/32-channel conv-BN-ReLU-pool blocks + linear head, 20,586 parameters', async (t) => {
  const m = buildModel('cnn', 1);
  const expected = 16 * 9 + 16 + 2 * 16 + (32 * 16 * 9 + 32) + 2 * 32 + (32 * 7 * 7 * 10 + 10);
  t.is(m.parameterCount(), expected);
  t.is(expected, 20586);
  t.deepEqual(
    m.layers.map((l) => l.name),
    ['conv1', 'bn1', 'relu1', 'pool1', 'conv2', 'bn2', 'relu2', 'pool2', 'flatten1', 'fc1'],
  );
  t.deepEqual(
    m.kfacLayers().map((l) => [l.name, l.kind, l.inFeatures, l.outFeatures]),
    [
      ['conv1', 'conv', 9, 16],
      ['bn1', 'bn', 16, 16],
      ['conv2', 'conv', 144, 32],
      ['bn2', 'bn', 32, 32],
      ['fc1', 'linear', 1568, 10],
    ],
  );
  t.deepEqual(m.params().find((p) => p.name === 'conv2.weight')!.value.shape, [32, 144]);
  t.deepEqual(m.outputShape(), [10]);
  const x = randImages(2, 2);
  const y = await m.forward(x, { backend, training: true, captureA: true });
  t.deepEqual(y.shape, [2, 10]);
  const conv2 = m.kfacLayers()[2].capture;
  t.true(conv2.kind === 'conv' && conv2.positions === 14 * 14 && conv2.rowsA === 2 * 196 && conv2.a!.length === 2 * 196 * 145);
  const summary = m.summary();
  t.regex(summary, /conv2\s+conv\s+\[32,14,14\]\s+4640/);
  t.regex(summary, /fc1\s+linear\s+\[10\]\s+15690/);
  t.regex(summary, /total\s+20586/);
});

test('spec from JSON/YAML and from the TypeScript builder give the same model', (t) => {
  const yamlText = `
input: [3, 12, 10]
layers:
  - {type: conv, out: 4, kernel: 3, stride: 2, pad: 1}
  - {type: bn, eps: 0.001, momentum: 0.05}
  - {type: relu}
  - {type: avgpool, kernel: [2, 1]}
  - {type: conv, out: 5, kernel: [1, 3], name: head_conv}
  - {type: flatten}
  - {type: linear, out: 7}
  - {type: relu}
  - {type: linear, out: 3, name: out}
`;
  const fromYaml = buildModel(parseYaml(yamlText), 5);
  const spec = new ModelBuilder([3, 12, 10])
    .conv(4, 3, { stride: 2, pad: 1 })
    .bn({ eps: 0.001, momentum: 0.05 })
    .relu()
    .avgpool([2, 1])
    .conv(5, [1, 3], { name: 'head_conv' })
    .flatten()
    .linear(7)
    .relu()
    .linear(3, { name: 'out' })
    .spec();
  t.deepEqual(modelSpecSchema.parse(spec), spec);
  const fromBuilder = buildModel(spec, 5);
  t.deepEqual(
    fromYaml.layers.map((l) => l.name),
    ['conv1', 'bn1', 'relu1', 'avgpool1', 'head_conv', 'flatten1', 'fc1', 'relu2', 'out'],
  );
  // conv1: 12x10 → 6x5; avgpool [2,1] stride 2: 3x3 (stride defaults to the kernel height); head_conv: 3x1.
  t.deepEqual(fromYaml.outputShape([3, 12, 10]), [3]);
  t.deepEqual(fromYaml.layers[3].outputShape([4, 6, 5]), [4, 3, 3]);
  t.deepEqual(fromYaml.layers[4].outputShape([4, 3, 3]), [5, 3, 1]);
  const a = fromYaml.exportState();
  const b = fromBuilder.exportState();
  t.deepEqual(Object.keys(a), Object.keys(b));
  for (const k of Object.keys(a)) t.deepEqual(Array.from(a[k]), Array.from(b[k]));
  const bn = fromYaml.layer('bn1') as unknown as { eps: number; momentum: number };
  t.is(bn.eps, 0.001);
  t.is(bn.momentum, 0.05);
  // Built-in names and specs both pass the config schema.
  t.true(modelConfigSchema.safeParse('cnn').success);
  t.true(modelConfigSchema.safeParse(builtinModelSpecs.mlp).success);
  t.false(modelConfigSchema.safeParse('resnet').success);
  t.deepEqual(resolveModelSpec('mlp'), builtinModelSpecs.mlp);
});

test('bad specs give clear errors naming the problem', (t) => {
  const bad = (spec: unknown, re: RegExp): void => {
    const e = t.throws(() => buildModel(spec, 1), { instanceOf: ModelSpecError });
    t.regex(e!.message, re);
  };
  bad({ input: [1, 28, 28], layers: [{ type: 'conv', kernel: 3 }] }, /layers\[0\]\.out/);
  bad({ input: [1, 28, 28], layers: [{ type: 'conv', out: 0, kernel: 3 }] }, /layers\[0\]\.out: Too small/);
  bad({ input: [1, 28, 28], layers: [{ type: 'relu' }, { type: 'dense', out: 3 }] }, /layers\[1\]\.type/);
  bad({ input: [1, 28, 28], layers: [{ type: 'conv', out: 4, kernal: 3 }] }, /layers\[0\].*kernal/s);
  bad({ input: [1, 28, 28], layers: [] }, /layers/);
  bad({ layers: [{ type: 'relu' }] }, /input/);
  bad(
    {
      input: [1, 28, 28],
      layers: [
        { type: 'conv', out: 4, kernel: 3 },
        { type: 'linear', out: 10 },
      ],
    },
    /layers\[1\] \(linear "fc1"\): needs a flat input \[features\], got \[4,26,26\]; add .*flatten/,
  );
  bad({ input: [1, 28, 28], layers: [{ type: 'conv', out: 4, kernel: 31 }] }, /layers\[0\] \(conv "conv1"\).*does not fit a 28x28 input/);
  bad({ input: [1, 4, 4], layers: [{ type: 'maxpool', kernel: 5 }] }, /layers\[0\] \(maxpool "pool1"\).*does not fit/);
  bad({ input: [784], layers: [{ type: 'conv', out: 4, kernel: 3 }] }, /layers\[0\] \(conv "conv1"\): needs an image input/);
  bad(
    {
      input: [784],
      layers: [
        { type: 'linear', out: 4, name: 'x' },
        { type: 'linear', out: 4, name: 'x' },
      ],
    },
    /layers\[1\].*duplicate layer name/,
  );
  bad({ input: [784], layers: [{ type: 'linear', out: 4, name: 'a.b' }] }, /no dots/);
  bad('resnet50', /unknown built-in model "resnet50"/);
  t.throws(() => parseModelSpec({ input: [1], layers: [{ type: 'linear', out: 2.5 }] }), { message: /layers\[0\]\.out/ });
});

test('Sequential: export/import of params and buffers round-trips; strict import reports missing/unknown/size problems', async (t) => {
  const a = buildModel('cnn', 1);
  const b = buildModel('cnn', 2);
  const x = randImages(3, 2);
  // Train-mode passes move the BN running statistics of a.
  await a.forward(x, fwd(true));
  await a.forward(randImages(4, 2), fwd(true));
  const state = a.exportState();
  t.deepEqual(Object.keys(state).slice(0, 6), ['conv1.weight', 'conv1.bias', 'bn1.gamma', 'bn1.beta', 'bn1.running_mean', 'bn1.running_var']);
  t.is(Object.keys(a.exportParams()).length, a.params().length);
  b.importState(state);
  const ya = await a.forward(x, fwd(false));
  const yb = await b.forward(x, fwd(false));
  t.deepEqual(Array.from(yb.data), Array.from(ya.data));
  // Exports are copies; imports write in place (Params held by K-FAC stay valid).
  const w = b.params()[0];
  const before = w.value.data;
  state['conv1.weight'][0] += 1;
  t.not(a.params()[0].value.data[0], state['conv1.weight'][0]);
  b.importParams(a.exportParams());
  t.is(b.params()[0].value.data, before);

  const { 'fc1.bias': _dropped, ...missing } = a.exportState();
  t.throws(() => b.importState(missing), { message: /missing fc1\.bias/ });
  b.importState(missing, { strict: false });
  t.throws(() => b.importState({ ...a.exportState(), 'fc9.weight': new Float32Array(1) }), { message: /unknown fc9\.weight/ });
  t.throws(() => b.importState({ ...a.exportState(), 'fc1.bias': new Float32Array(3) }), { message: /"fc1\.bias" has 3 values, expected 10/ });
  t.throws(() => b.importParams(a.exportState()), { message: /unknown bn1\.running_mean/ });

  // zeroGrads and exportGrads.
  for (const p of b.params()) p.grad.data.fill(1);
  b.zeroGrads();
  t.true(Object.values(b.exportGrads()).every((g) => g.every((v) => v === 0)));
  t.deepEqual(
    b.buffers().map((e) => e.name),
    ['bn1.running_mean', 'bn1.running_var', 'bn2.running_mean', 'bn2.running_var'],
  );
  t.deepEqual(
    b
      .stateEntries()
      .filter((e) => e.kind === 'param')
      .map((e) => e.shape),
    b.params().map((p) => p.value.shape),
  );
});

test('Sequential rejects duplicate layer names', (t) => {
  const l = (): Linear => new Linear({ name: 'a', inFeatures: 1, outFeatures: 1 });
  t.throws(() => new Sequential([l(), l()]), { message: /duplicate layer name "a"/ });
});
