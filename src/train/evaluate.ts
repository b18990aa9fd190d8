/** Test-set evaluation, run by the single-process trainer and by the parameter server. */
import type { ComputeBackend } from '../compute/backend.js';
import { evalBatches } from '../data/batches.js';
import type { Dataset } from '../data/fashion-mnist.js';
import { softmaxCrossEntropy } from '../nn/loss.js';
import type { Sequential } from '../nn/sequential.js';
import { tensor } from '../nn/tensor.js';

export interface EvalMetrics {
  loss: number;
  accuracy: number;
  samples: number;
}

/**
 * Images per evaluation batch. Small, because every layer's scratch buffers grow to the largest
 * batch they see and stay that size (resnet8 trained at batch 256 peaked at 2.95 GB resident when it
 * evaluated 2000 at a time, 1.49 GB at 250), and because the compute of a batch holds the event loop.
 */
export const EVAL_BATCH = 250;

/**
 * Test-set loss and accuracy in evaluation mode (BN running statistics). Between batches it yields
 * to the event loop, so an actor that evaluates keeps answering heartbeats and keepalive pings
 * (the compute of a batch is synchronous).
 */
export async function evaluate(model: Sequential, backend: ComputeBackend, data: Dataset, batchSize = EVAL_BATCH): Promise<EvalMetrics> {
  let lossSum = 0;
  let correct = 0;
  let samples = 0;
  const shape = model.inputShape ?? [data.dim];
  for (const b of evalBatches(data, batchSize)) {
    const n = b.y.length;
    const logits = await model.forward(tensor([n, ...shape], b.x), { backend, training: false, captureA: false });
    const r = softmaxCrossEntropy(logits, b.y);
    lossSum += r.loss * n;
    correct += r.correct;
    samples += n;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return { loss: lossSum / samples, accuracy: correct / samples, samples };
}
