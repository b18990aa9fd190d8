/**
 * The training configuration: one zod schema gives the defaults, the validation of config files
 * and flags (unknown keys are errors), and the TypeScript type every module reads.
 */
import { z } from 'zod';
import { backendChoices } from '../compute/backend.js';
import { modelConfigSchema } from '../nn/models.js';

const positiveInt = z.number().int().positive();
const nonNegative = z.number().nonnegative();

export const staleSchema = z.strictObject({
  enabled: z.boolean().default(true),
  alpha: z.number().positive().default(0.1),
  growth: z.enum(['add', 'double']).default('double'),
  shrink: z.enum(['reset', 'halve']).default('halve'),
  maxInterval: positiveInt.default(16),
});

export const kfacSchema = z.strictObject({
  /** Tikhonov damping λ (effective: max(λ, weight decay)). */
  damping: z.number().positive().default(1e-2),
  piCorrection: z.boolean().default(true),
  /** Fisher estimate: one sampled label per input (the paper's choice) or the true labels. */
  fisher: z.enum(['1mc', 'empirical']).default('1mc'),
  /** Moving-average weight of a new statistic (1: no averaging). */
  averaging: z.number().gt(0).lte(1).default(0.1),
  stale: staleSchema.prefault({}),
});

export const scheduleSchema = z.strictObject({
  warmupEpochs: nonNegative.default(0),
  warmupStartFactor: z.number().min(0).max(1).default(0.1),
  decayStartEpoch: nonNegative.default(0),
  /** 'end': the run's last step (`steps`); 0: no decay. */
  decayEndEpoch: z.union([nonNegative, z.literal('end')]).default('end'),
  power: nonNegative.default(2),
  finalFactor: z.number().min(0).max(1).default(0),
});

export const optimizerSchema = z.strictObject({
  kind: z.enum(['spngd', 'sgd']).default('spngd'),
  lr: z.number().positive().default(0.05),
  momentum: z.number().min(0).lt(1).default(0.9),
  correctMomentumOnDrop: z.boolean().default(true),
  weightDecay: nonNegative.default(0),
  rescaleWeights: z.boolean().default(true),
  schedule: scheduleSchema.prefault({}),
  kfac: kfacSchema.prefault({}),
});

/**
 * Training-batch augmentation (src/data/augment.ts), never applied to evaluation. Each sample's
 * draws come from (seed, step, its position in the global batch): the same on any split over workers.
 */
export const augmentSchema = z.strictObject({
  /** Random crop: pad this many black pixels on each side, then take a random 28×28 window (0: off). */
  crop: z
    .number({ error: 'crop must be a number of pixels (0: off)' })
    .int({ error: 'crop must be a whole number of pixels' })
    .min(0, { error: 'crop must be 0 (off) or more pixels' })
    .max(14, { error: 'crop must be at most 14 pixels (half the 28-pixel image side)' })
    .default(0),
  /** Random horizontal flip (probability ½). */
  flip: z.boolean({ error: 'flip must be true or false' }).default(false),
});

export const dataSchema = z.strictObject({
  /** Directory of the IDX files; default: SPNGD_DATA, /usr/share/datasets/fashion-mnist, the bundled copy. */
  dir: z.string().min(1).optional(),
  /** Use only the first N training / test samples (quick runs). */
  trainLimit: positiveInt.optional(),
  testLimit: positiveInt.optional(),
  augment: augmentSchema.prefault({}),
});

export const clusterSchema = z.strictObject({
  /** Local cluster size for `spngd train` (separately started actors ignore these two). */
  workers: positiveInt.default(2),
  owners: z.number().int().nonnegative().default(2),
  /** The PS applies step s only once every owner has published the preconditioners of step s. */
  waitForPreconditioners: z.boolean().default(false),
  /**
   * Otherwise step s may use preconditioners computed from statistics up to this many steps old
   * (the PS waits only when they are older); inversion overlaps the next steps' compute.
   */
  preconditionerLag: z.number().int().nonnegative().default(1),
  /**
   * Steps before this one wait for their own preconditioners whatever the lag: early in a run the
   * curvature changes fastest, and a step-old preconditioner with momentum overshoots.
   */
  preconditionerLagFrom: z.number().int().nonnegative().default(20),
  /** How long the PS waits for them before it goes on with the last published ones. */
  preconditionerWaitMs: positiveInt.default(60000),
  /**
   * What the PS applies while no factor owner is left (SP-NGD only): the last preconditioner of
   * each layer, or the plain gradient (SGD with momentum) until an owner is back.
   */
  withoutOwners: z.enum(['last-preconditioners', 'sgd']).default('last-preconditioners'),
  /** Workers the PS waits for before the first step. */
  minWorkers: positiveInt.default(1),
  /** Factor owners the PS waits for before the first step (SP-NGD only). */
  minOwners: z.number().int().nonnegative().default(0),
  /**
   * Parameter-server shards, the coordinator included: the coordinator waits for psShards − 1
   * shards (`spngd ps-shard --ps COORDINATOR`) before the first step and spreads the layers over them.
   */
  psShards: positiveInt.default(1),
  heartbeatMs: positiveInt.default(1000),
  /** A member silent for this long is removed. */
  leaseMs: positiveInt.default(5000),
  /** Bytes of tensor data per message. */
  chunkBytes: z
    .number()
    .int()
    .min(4096)
    .max(4 * 1024 * 1024)
    .multipleOf(4)
    .default(1024 * 1024),
  /** gRPC keepalive: ping interval and the time to wait for its answer. */
  keepaliveMs: positiveInt.default(10000),
  keepaliveTimeoutMs: positiveInt.default(5000),
});

/**
 * How this process authenticates to its peers (docs/operations.md, "Security"): file paths, read
 * once at startup. Local to each process: the PS does not send this section to the actors that
 * join (each has its own files, given with --tls-ca/--tls-cert/--tls-key/--token-file).
 */
export const securitySchema = z
  .strictObject({
    /** PEM CA certificate: peers must present a certificate it issued (mutual TLS). */
    tlsCa: z.string().min(1).optional(),
    /** PEM certificate of this process, issued by tlsCa, for its host name. */
    tlsCert: z.string().min(1).optional(),
    /** Its unencrypted PEM private key. */
    tlsKey: z.string().min(1).optional(),
    /** File holding the cluster's bearer token: required on every call but health checks. */
    tokenFile: z.string().min(1).optional(),
  })
  .superRefine((s, ctx) => {
    const given = (['tlsCa', 'tlsCert', 'tlsKey'] as const).filter((k) => s[k] !== undefined);
    if (given.length > 0 && given.length < 3) {
      ctx.addIssue({ code: 'custom', message: `tlsCa, tlsCert and tlsKey go together (mutual TLS); only ${given.join(', ')} given` });
    }
  });

export const trainConfigSchema = z
  .strictObject({
    seed: z.number().int().nonnegative().default(1),
    backend: z.enum(backendChoices).default('auto'),
    model: modelConfigSchema.default('mlp'),
    data: dataSchema.prefault({}),
    batchSize: positiveInt.default(1024),
    /**
     * Ghost batch norm: in training every BN layer normalises over consecutive groups of this many
     * samples of the local batch (the last may be smaller). Absent: over each worker's whole share.
     * A cluster equals one process with the same value when every worker's share is a multiple of it
     * (docs/numerics.md § Batch norm over a split batch).
     */
    bnGroupSize: positiveInt.optional(),
    /**
     * A worker (or the single process) passes its batch this many samples at a time and combines the
     * runs as the PS combines workers, to bound memory (activations scale with the samples of a pass).
     * BN normalises over groups of bnGroupSize (which must divide it), absent that over each run.
     */
    microBatch: positiveInt.optional(),
    /** Number of optimisation steps. */
    steps: positiveInt.default(120),
    /** Evaluate on the test set every N steps (and after the last step). */
    evalEvery: positiveInt.default(20),
    /** Write a checkpoint every N steps (and at the end); the newest `checkpointKeep` are kept. */
    checkpointEvery: positiveInt.default(50),
    checkpointKeep: positiveInt.default(3),
    /** Test accuracy whose first crossing the run summary reports as `stepsTo`. */
    targetAccuracy: z.number().gt(0).lte(1).default(0.85),
    /** Stop early once test accuracy reaches this (0: never). */
    stopAtAccuracy: z.number().min(0).max(1).default(0),
    optimizer: optimizerSchema.prefault({}),
    cluster: clusterSchema.prefault({}),
    security: securitySchema.prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.bnGroupSize !== undefined && c.bnGroupSize > c.batchSize) {
      ctx.addIssue({
        code: 'custom',
        path: ['bnGroupSize'],
        message: `${c.bnGroupSize} is larger than batchSize ${c.batchSize}; leave bnGroupSize out to normalise over the whole batch`,
      });
    }
    if (c.microBatch !== undefined && c.bnGroupSize !== undefined && c.microBatch % c.bnGroupSize !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['microBatch'],
        message: `${c.microBatch} is not a multiple of bnGroupSize ${c.bnGroupSize}; a micro-batch must hold whole BN groups`,
      });
    }
  });

export type ClusterConfig = z.infer<typeof clusterSchema>;
export type DataConfig = z.infer<typeof dataSchema>;
export type SecurityConfig = z.infer<typeof securitySchema>;
export type TrainConfig = z.infer<typeof trainConfigSchema>;
export type OptimizerConfig = z.infer<typeof optimizerSchema>;
export type KfacConfig = z.infer<typeof kfacSchema>;

/** Defaults filled in; throws zod's error on a bad value (the loader turns it into one clear line). */
export function resolveTrainConfig(input: unknown): TrainConfig {
  return trainConfigSchema.parse(input ?? {});
}
