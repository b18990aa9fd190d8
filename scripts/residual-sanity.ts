/**
 * A short single-process training sanity run of a residual built-in (not a test: it takes minutes
 * and its timings depend on the machine). Trains with the default SP-NGD settings on a subset of
 * Fashion-MNIST and fails (exit 1) unless the training loss falls and test accuracy is well above
 * chance; prints the loss, accuracy and milliseconds per step.
 *
 *   npx tsx scripts/residual-sanity.ts [model=resnet8] [steps=30] [batch=128]
 */
import { resolveTrainConfig } from '../src/config/schema.js';
import { loadSplit } from '../src/data/fashion-mnist.js';
import { buildModel } from '../src/nn/models.js';
import { evaluate, Trainer } from '../src/train/trainer.js';
import { selectBackend } from '../workers/kernels/select.js';

const [model = 'resnet8', stepsArg = '30', batchArg = '128'] = process.argv.slice(2);
const steps = Number(stepsArg);
const batchSize = Number(batchArg);
const config = resolveTrainConfig({ model, steps, batchSize, seed: 1 });
const { backend, reason } = await selectBackend('auto');
const train = await loadSplit('train', { limit: Math.max(batchSize * steps, 4096) });
const test = await loadSplit('test', { limit: 2000 });
const net = buildModel(config.model, config.seed);
console.log(`${model}: ${net.parameterCount()} parameters, ${net.kfacLayers().length} K-FAC layers; backend ${backend.name} (${reason})`);

const trainer = new Trainer(config, net, backend, train, test);
const losses: number[] = [];
const ms: number[] = [];
for (let s = 0; s < steps; s++) {
  const t0 = performance.now();
  const m = await trainer.step(s);
  ms.push(performance.now() - t0);
  losses.push(m.loss);
  if ((s + 1) % 5 === 0) console.log(`step ${s + 1}: loss ${m.loss.toFixed(4)}, ${ms[s].toFixed(0)} ms`);
}
const { accuracy } = await evaluate(net, backend, test);
await backend.dispose();

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
const head = mean(losses.slice(0, 3));
const tail = mean(losses.slice(-3));
const sorted = [...ms].sort((a, b) => a - b);
console.log(
  `loss ${head.toFixed(3)} → ${tail.toFixed(3)}; test accuracy ${accuracy.toFixed(4)}; median ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms per step`,
);
const problems = [
  ...(tail < 0.8 * head ? [] : [`the loss did not fall by 20% (${head.toFixed(3)} → ${tail.toFixed(3)})`]),
  ...(accuracy > 0.5 ? [] : [`test accuracy ${accuracy.toFixed(4)} is not above 0.5`]),
];
if (problems.length > 0) {
  console.error(`residual sanity run failed: ${problems.join('; ')}`);
  process.exit(1);
}
console.log('residual sanity run: ok');
