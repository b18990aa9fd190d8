/**
 * Residual models declared as specs: the built-in ResNets (shapes, K-FAC layers, parameter counts
 * computed here from the architecture), the same model from the TypeScript builder and from a
 * config file, and the errors of bad residual entries.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { parse as parseYaml } from 'yaml';
import { ConfigError, loadTrainConfig } from '../src/config/load.js';
import { curvatureSpecOf } from '../src/kfac/factors.js';
import { curvatureLayerSpecs } from '../src/kfac/layer-specs.js';
import { buildModel, builtinModelSpecs, ModelBuilder, ModelSpecError, modelConfigSchema, modelSpecSchema, planModel } from '../src/nn/models.js';
import { Residual } from '../src/nn/residual.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-residual-spec-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** Parameters of the CIFAR-style ResNet counted from its architecture (convs keep their bias). */
function cifarResnetParameters(blocksPerStage: number): number {
  const conv = (cin: number, cout: number, k: number) => cout * cin * k * k + cout;
  const bn = (c: number) => 2 * c;
  let total = conv(1, 16, 3) + bn(16);
  let cin = 16;
  for (const c of [16, 32, 64]) {
    for (let b = 0; b < blocksPerStage; b++) {
      total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c);
      if (cin !== c) total += conv(cin, c, 1) + bn(c);
      cin = c;
    }
  }
  return total + conv(64, 10, 1);
}

for (const [name, blocks] of [
  ['resnet8', 1],
  ['resnet20', 3],
] as const) {
  test(`built-in ${name}: ${blocks} block(s) per stage, shapes, K-FAC layers and parameter count`, async (t) => {
    const m = buildModel(name, 1);
    t.is(m.parameterCount(), cifarResnetParameters(blocks));
    const blocksOf = m.layers.filter((l): l is Residual => l instanceof Residual);
    t.is(blocksOf.length, 3 * blocks);
    // Stage by stage: 16 channels at 28x28, 32 at 14x14, 64 at 7x7; a projection where the shape changes.
    let shape = m.layers.slice(0, 3).reduce((s, l) => l.outputShape(s), [1, 28, 28]);
    t.deepEqual(shape, [16, 28, 28]);
    blocksOf.forEach((b, i) => {
      const stage = Math.floor(i / blocks);
      const expected = [
        [16, 28, 28],
        [32, 14, 14],
        [64, 7, 7],
      ][stage];
      const changes = stage > 0 && i % blocks === 0;
      t.is(b.shortcut !== undefined, changes, `${b.name} shortcut`);
      shape = b.outputShape(shape);
      t.deepEqual(shape, expected, b.name);
    });
    t.deepEqual(m.outputShape(), [10]);
    // Every conv and BN (main paths and projections) is a K-FAC layer with a unique name.
    const kfac = m.kfacLayers();
    const convs = 1 + 3 * blocks * 2 + 2;
    t.is(kfac.filter((l) => l.kind === 'conv').length, convs);
    t.is(kfac.filter((l) => l.kind === 'bn').length, convs);
    t.is(new Set(kfac.map((l) => l.name)).size, kfac.length);
    t.true(kfac.some((l) => l.name === `res${blocks + 1}.shortcut.conv1` && l.inFeatures === 16 && l.outFeatures === 32));
    const rng = new Rng(1);
    const x = { shape: [2, 1, 28, 28], data: Float32Array.from({ length: 2 * 784 }, () => rng.next()) };
    const y = await m.forward(x, { backend: createReferenceBackend(), training: false, captureA: false });
    t.deepEqual(y.shape, [2, 10]);
  });
}

test('the plan of a residual model: its blocks as the model layers, its leaves in the order of the K-FAC views', (t) => {
  for (const config of ['resnet8', 'resnet20'] as const) {
    const plan = planModel(config);
    const model = buildModel(config, 1);
    t.deepEqual(
      plan.layers.map((l) => l.name),
      model.layers.map((l) => l.name),
    );
    plan.layers.forEach((p, i) => t.deepEqual(model.layers[i].outputShape(p.input), p.output, p.name));
    t.deepEqual(
      plan.leaves.map((l) => l.name),
      model.leaves.map((l) => l.name),
    );
    // Owners read the K-FAC layers off the plan, without building the model.
    t.deepEqual(curvatureLayerSpecs(config), model.kfacLayers().map(curvatureSpecOf));
  }
});

test('resnet8 from a config file, from the builder and the built-in: the same spec and the same model', (t) => {
  const fromFile = loadTrainConfig('docs/examples/resnet8-spec-spngd.yaml').model;
  t.deepEqual(fromFile, builtinModelSpecs.resnet8);
  const a = buildModel(fromFile, 3).exportState();
  const b = buildModel('resnet8', 3).exportState();
  t.deepEqual(Object.keys(a), Object.keys(b));
  for (const k of Object.keys(a)) t.deepEqual(Array.from(a[k]), Array.from(b[k]), k);
  t.true(modelConfigSchema.safeParse('resnet20').success);
});

test('a residual entry from YAML and from the builder: same spec, names and parameters (named layers, identity default)', (t) => {
  const yamlText = `
input: [3, 8, 8]
layers:
  - type: residual
    name: block
    main: [{type: conv, out: 3, kernel: 3, pad: 1, name: c}, {type: bn}]
  - type: residual
    main:
      - {type: conv, out: 5, kernel: 3, stride: 2, pad: 1}
      - {type: relu}
    shortcut: [{type: avgpool, kernel: 2}, {type: conv, out: 5, kernel: 1}]
  - {type: globalavgpool}
  - {type: linear, out: 2}
`;
  const fromYaml = modelSpecSchema.parse(parseYaml(yamlText));
  const spec = new ModelBuilder([3, 8, 8])
    .residual((p) => p.conv(3, 3, { pad: 1, name: 'c' }).bn(), { name: 'block' })
    .residual((p) => p.conv(5, 3, { stride: 2, pad: 1 }).relu(), { shortcut: (p) => p.avgpool(2).conv(5, 1) })
    .globalAvgPool()
    .linear(2)
    .spec();
  t.deepEqual(fromYaml, spec);
  const m = buildModel(spec, 2);
  t.deepEqual(
    m.stateEntries().map((e) => e.name),
    [
      'block.c.weight',
      'block.c.bias',
      'block.bn1.gamma',
      'block.bn1.beta',
      'block.bn1.running_mean',
      'block.bn1.running_var',
      'res1.conv1.weight',
      'res1.conv1.bias',
      'res1.shortcut.conv1.weight',
      'res1.shortcut.conv1.bias',
      'fc1.weight',
      'fc1.bias',
    ],
  );
  const c = buildModel(parseYaml(yamlText), 2).exportState();
  for (const [k, v] of Object.entries(m.exportState())) t.deepEqual(Array.from(c[k]), Array.from(v), k);
});

const image = [4, 8, 8];
const bad = (t: ExecutionContext, layers: unknown[], re: RegExp): void => {
  const e = t.throws(() => buildModel({ input: image, layers }, 1), { instanceOf: ModelSpecError });
  t.regex(e!.message, re);
};

test('bad residual entries: the error names the block, the path and both shapes', (t) => {
  const conv = (out: number, kernel: number, extra: object = {}) => ({ type: 'conv', out, kernel, ...extra });
  bad(
    t,
    [{ type: 'residual', main: [conv(8, 3, { pad: 1 }), { type: 'bn' }], shortcut: [conv(8, 1, { stride: 2 })] }],
    /layers\[0\] \(residual "res1"\): the main path gives \[8,8,8\] but the shortcut gives \[8,4,4\]/,
  );
  bad(
    t,
    [{ type: 'relu' }, { type: 'residual', name: 'down', main: [conv(8, 3, { stride: 2, pad: 1 })] }],
    /layers\[1\] \(residual "down"\): the main path gives \[8,4,4\] but the identity shortcut gives \[4,8,8\].*kernel: 1, stride: 2/,
  );
  bad(t, [{ type: 'residual', main: [{ type: 'linear', out: 3 }] }], /layers\[0\]\.main\[0\] \(linear "res1\.fc1"\): needs a flat input/);
  bad(
    t,
    [{ type: 'residual', main: [{ type: 'relu' }], shortcut: [{ type: 'maxpool', kernel: 9 }] }],
    /layers\[0\]\.shortcut\[0\] \(maxpool "res1\.shortcut\.pool1"\).*does not fit/,
  );
  bad(t, [{ type: 'residual', main: [conv(4, 1, { name: 'a' }), { type: 'bn', name: 'a' }] }], /layers\[0\]\.main\[1\] \(bn "res1\.a"\): duplicate layer name/);
  bad(t, [{ type: 'residual', main: [{ type: 'residual', main: [{ type: 'relu' }] }] }], /layers\[0\]\.main\[0\]\.type: .*\(blocks do not nest\)/);
  bad(
    t,
    [{ type: 'residual', main: [{ type: 'relu' }], shortcut: 'none' }],
    /layers\[0\]\.shortcut: shortcut must be 'identity' or a non-empty list of layers/,
  );
  bad(t, [{ type: 'residual', main: [] }], /layers\[0\]\.main: Too small/);
  bad(t, [{ type: 'residual', main: [{ type: 'relu' }], extra: 1 }], /layers\[0\].*extra/);
  // The zod schema itself checks the shapes, with the path of the entry.
  const r = modelSpecSchema.safeParse({ input: image, layers: [{ type: 'residual', main: [conv(8, 1)] }] });
  t.false(r.success);
  t.deepEqual(r.error?.issues[0].path, ['layers', 0]);
});

test('a config file with a bad residual model fails where it is loaded, naming the block', (t) => {
  const file = join(tmp, 'bad.yaml');
  writeFileSync(
    file,
    'model:\n  input: [1, 28, 28]\n  layers:\n    - {type: conv, out: 16, kernel: 3, pad: 1}\n    - type: residual\n      name: stage2\n      main: [{type: conv, out: 32, kernel: 3, stride: 2, pad: 1}, {type: bn}]\n',
  );
  const e = t.throws(() => loadTrainConfig(file), { instanceOf: ConfigError });
  t.regex(e!.message, /model: .*layers\[1\] \(residual "stage2"\): the main path gives \[32,14,14\] but the identity shortcut gives \[16,28,28\]/s);
});
