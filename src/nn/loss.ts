/**
 * Softmax cross-entropy over logits N×K, averaged over the batch, and 1mc label sampling.
 * Computed in float64 (log-sum-exp) and returned as float32.
 */
import type { Rng } from '../util/rng.js';
import { checkShape, tensor } from './tensor.js';
import type { Tensor } from './types.js';

export interface SoftmaxCrossEntropyResult {
  /** Mean over the batch of −log p[label]. */
  loss: number;
  /** Fraction of rows whose arg-max equals the label. */
  accuracy: number;
  /** Number of rows whose arg-max equals the label. */
  correct: number;
  /** softmax(logits), N×K. */
  probs: Tensor;
  /** dL/dlogits of the mean loss: (probs − onehot(label))/N, N×K. */
  grad: Tensor;
}

function checkLabels(labels: ArrayLike<number>, n: number, k: number): void {
  if (labels.length !== n) throw new RangeError(`softmaxCrossEntropy: ${labels.length} labels for a batch of ${n}`);
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (!(Number.isInteger(l) && l >= 0 && l < k)) throw new RangeError(`softmaxCrossEntropy: label ${l} at row ${i} is not a class index in [0, ${k})`);
  }
}

export function softmaxCrossEntropy(logits: Tensor, labels: ArrayLike<number>): SoftmaxCrossEntropyResult {
  checkShape('softmaxCrossEntropy', 'logits', logits, [null, null]);
  const [n, k] = logits.shape;
  if (n === 0 || k === 0) throw new RangeError('softmaxCrossEntropy: empty logits');
  checkLabels(labels, n, k);
  const z = logits.data;
  const probs = new Float32Array(n * k);
  const grad = new Float32Array(n * k);
  const row = new Float64Array(k);
  let lossSum = 0;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    let arg = 0;
    for (let j = 0; j < k; j++) {
      const v = z[i * k + j];
      if (v > max) {
        max = v;
        arg = j;
      }
    }
    let sum = 0;
    for (let j = 0; j < k; j++) {
      row[j] = Math.exp(z[i * k + j] - max);
      sum += row[j];
    }
    const label = labels[i];
    lossSum += Math.log(sum) - (z[i * k + label] - max);
    if (arg === label) correct++;
    for (let j = 0; j < k; j++) {
      const p = row[j] / sum;
      probs[i * k + j] = p;
      grad[i * k + j] = (p - (j === label ? 1 : 0)) / n;
    }
  }
  return { loss: lossSum / n, accuracy: correct / n, correct, probs: tensor([n, k], probs), grad: tensor([n, k], grad) };
}

/**
 * One label per row drawn from the row's categorical distribution `probs` (N×K), for the 1mc Fisher
 * (the gradient of the loss at these labels gives the sampled per-sample g).
 */
export function sampleLabels(probs: Tensor, draw: Rng | ((row: number) => number)): Int32Array {
  const uniform = typeof draw === 'function' ? draw : () => draw.next();
  checkShape('sampleLabels', 'probs', probs, [null, null]);
  const [n, k] = probs.shape;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let total = 0;
    for (let j = 0; j < k; j++) total += probs.data[i * k + j];
    const u = uniform(i) * total;
    let acc = 0;
    let pick = k - 1;
    for (let j = 0; j < k; j++) {
      acc += probs.data[i * k + j];
      if (u < acc) {
        pick = j;
        break;
      }
    }
    // Never pick a zero-probability class at the tail because of rounding.
    while (pick > 0 && probs.data[i * k + pick] <= 0) pick--;
    out[i] = pick;
  }
  return out;
}
