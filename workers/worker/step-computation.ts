/**
 * A worker's share of one step: the forward/backward pass of its shard of the global batch
 * (src/train/local-pass.ts, the same code as the single-process trainer), then the due
 * statistics to the owners and the gradients to the PS at the same time, each to the PS endpoint
 * that sent its parameters, then GradientsComplete to every endpoint of the step.
 */
import type { ActorStateTracker } from '../../src/actors/common/actor-state.js';
import type { MetricHub } from '../../src/actors/common/metric-hub.js';
import { sendDense } from '../../src/actors/common/tensor-io.js';
import type { ComputeBackend } from '../../src/compute/backend.js';
import type { TrainConfig } from '../../src/config/schema.js';
import { BatchPlan, gather, shardRange } from '../../src/data/batches.js';
import type { Dataset } from '../../src/data/fashion-mnist.js';
import type { StepStart } from '../../src/gen/spngd/v1/parameter_server.js';
import type { StatKind } from '../../src/kfac/factors.js';
import { buildModel } from '../../src/nn/models.js';
import type { Sequential } from '../../src/nn/sequential.js';
import { bnGroupSizeOf } from '../../src/train/bn-groups.js';
import { localPass } from '../../src/train/local-pass.js';
import type { GradientRouting } from './step-gather.js';
import type { TrainWriter } from './train-stream.js';

/** Sends a step's statistics to the owners (the worker's OwnerLinks). */
export type SendStatistics = (step: number, shardCount: number, samples: number, stats: Map<string, Float32Array>) => Promise<void>;

export interface StepInputs {
  start: StepStart;
  /** Layer → statistics due this step. */
  due: Map<string, StatKind[]>;
  /** Seed of the step's 1mc labels. */
  mcSeed: number;
  /** The Train streams that started the step, and which of them takes each tensor's gradient. */
  routing: GradientRouting<TrainWriter>;
}

export class StepComputation {
  readonly model: Sequential;
  private readonly plan: BatchPlan;

  constructor(
    private readonly config: TrainConfig,
    private readonly train: Dataset,
    private readonly backend: ComputeBackend,
    private readonly state: ActorStateTracker,
    private readonly metrics: MetricHub,
  ) {
    this.plan = new BatchPlan(train.n, config.batchSize, config.seed);
    this.model = buildModel(config.model, config.seed);
  }

  /** Takes the parameters the PS sent before the step (none: the model keeps its own). */
  load(params: Map<string, Float32Array>): void {
    if (params.size > 0) this.model.importState(Object.fromEntries(params), { strict: false });
  }

  /** Computes the step, sends its statistics and gradients; `t0` is when the step began. */
  async run({ start, due, mcSeed, routing }: StepInputs, sendStatistics: SendStatistics, t0: number): Promise<void> {
    const c = this.config;
    const s = start.step;
    // Sharded, every tensor must have come from some endpoint, or its gradient would have nowhere to go.
    const unrouted = routing.unrouted([...this.model.params(), ...this.model.buffers()].map((t) => t.name));
    if (unrouted.length > 0) throw new Error(`no PS endpoint sent ${unrouted.join(', ')} for step ${s}; not computing it`);
    const { start: offset, end } = shardRange(start.globalBatchSize, start.shardIndex, start.shardCount);
    const indices = this.plan.indices(s).subarray(offset, end);
    // Augmented as drawn for each sample's position in the global batch: the same rows as any other split.
    const batch = gather(this.train, indices, { config: c.data.augment, seed: c.seed, step: s, offset });
    const res = await this.state.timings.time('compute', () =>
      localPass(
        this.model,
        this.backend,
        { x: batch.x, y: batch.y, samples: indices.length },
        { due, fisher: c.optimizer.kfac.fisher, mcSeed, sampleOffset: offset, bnGroupSize: bnGroupSizeOf(c), microBatch: c.microBatch },
      ),
    );

    // Statistics go to the owners while the gradients go to the PS: neither waits for the other.
    const t1 = performance.now();
    let statisticsMs = 0;
    const statistics = this.state.timings
      .time('send_statistics', () => sendStatistics(s, start.shardCount, indices.length, res.stats))
      .finally(() => (statisticsMs = performance.now() - t1));
    // Awaited after the gradients; a failed gradient upload must not leave this rejection unhandled.
    statistics.catch(() => undefined);
    const tensors: { name: string; values: Float32Array; shape: number[] }[] = [];
    for (const p of this.model.params()) tensors.push({ name: p.name, values: res.grads.get(p.name)!, shape: p.value.shape });
    // BN running statistics travel with the gradients; the PS averages them like gradients.
    for (const b of this.model.buffers()) tensors.push({ name: b.name, values: new Float32Array(b.value.data), shape: b.value.shape });
    const perWriter = routing.tensorsPerWriter(tensors.map((t) => t.name));
    // In model order on each stream; the streams of different PS endpoints upload side by side.
    await Promise.all(
      [...perWriter.keys()].map(async (writer) => {
        for (const t of tensors) {
          if (routing.writerFor(t.name) !== writer) continue;
          await sendDense(
            writer,
            (tensor) => ({ kind: { $case: 'gradient' as const, value: { step: s, workerId: this.state.id, numSamples: indices.length, tensor } } }),
            t.name,
            t.values,
            t.shape,
            s,
            c.cluster.chunkBytes,
            // localPass's gradients and the buffers' copies above are this step's own and never written
            // again, so the chunks may view them instead of copying each megabyte once more.
            { copy: false },
          );
        }
      }),
    );
    const uploadMs = performance.now() - t1;
    await statistics;
    const phaseMs = { forwardBackward: res.phases.forwardBackward, statistics: res.phases.statistics, upload: uploadMs, sendStatistics: statisticsMs };
    await Promise.all(
      [...perWriter].map(([writer, gradientTensors]) =>
        writer.write(
          {
            kind: {
              $case: 'gradientsComplete',
              value: { step: s, workerId: this.state.id, numSamples: indices.length, gradientTensors, lossSum: res.lossSum, numCorrect: res.correct, phaseMs },
            },
          },
          256,
        ),
      ),
    );
    this.state.timings.record('upload_gradients', performance.now() - t1);
    this.state.step = s + 1;
    this.metrics.emit('step_ms', performance.now() - t0, s + 1, this.state.epoch);
  }
}
