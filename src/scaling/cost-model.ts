/**
 * The cost model of one SP-NGD step (docs/scaling.md): its time and where the time goes, for W
 * workers, O factor owners and S parameter-server shards on links of a given bandwidth and
 * latency, from a model's layer shapes (layers.ts) and per-operation costs measured on one
 * machine (Calibration, written by `npm run bench -- scale --calibrate`).
 *
 * The PS's step (src/actors/ps/parameter-server.ts `oneStep`) is sequential: send the parameters,
 * wait for the gradients (the workers' compute and upload), reduce, wait for the preconditioners
 * the lag asks for, precondition, update. Each shard does this for its own layers at the same
 * time, so a phase lasts as long as its slowest shard. The owners' path (statistics in, reduce,
 * invert, publish) runs beside the next step and costs time only when the PS has to wait for it.
 *
 * Two modes: `deployment` (every actor on its own host: a worker's compute is its own) and
 * `shared` (this validation machine: every process's compute shares `cores` cores).
 */
import { assignLayers } from '../actors/ps/assignment.js';
import { modelTotals, type ScalingLayer } from './layers.js';

/** Per-operation costs on one core of the calibrating machine. */
export interface Calibration {
  /** Where and when it was measured, and the backend. */
  machine: string;
  measuredAt: string;
  /** Forward and backward, per flop of ScalingLayer.fwdBwdFlops (ns). */
  fwdBwdNsPerFlop: number;
  /** The statistics, per flop of ScalingLayer.statFlops (ns). */
  statNsPerFlop: number;
  /** G⁻¹ ∇W A⁻¹, per flop (ns). */
  preconditionNsPerFlop: number;
  /** A damped inverse, per unit of inversionCost (n³) (ns). */
  inversionNsPerCost: number;
  /** Weight decay, momentum and rescaling, per parameter (ns). */
  updateNsPerValue: number;
  /** The sample-weighted mean, per value of each worker (ns). */
  reduceNsPerValue: number;
  /** CPU-bound throughput of one gRPC tensor stream (sender and receiver on their own cores), ns per byte. */
  transferNsPerByte: number;
  /** Fixed time of a step besides the above (StepStart, acknowledgements, scheduling), ms. */
  stepOverheadMs: number;
  /** One-way latency of the calibrating machine's links (veth between namespaces), ms. */
  latencyMs: number;
  /**
   * How much faster k busy processes get through their work than one on the calibrating machine
   * (k → speed-up): min(k, 2) on an idle 2-core machine; under other processes' load, each more
   * process takes a larger share of the machine.
   */
  parallelism: Record<string, number>;
  /** Measured per-sample times of named models, which replace the flop-rate estimate for them. */
  models?: Record<string, { fwdBwdMsPerSample: number; statMsPerSample: number }>;
}

export type Mode = 'deployment' | 'shared';

export interface StepInputs {
  layers: readonly ScalingLayer[];
  /** A name of calibration.models, to use its measured per-sample times. */
  modelName?: string;
  globalBatch: number;
  workers: number;
  owners: number;
  /** PS shards, the coordinator included. */
  shards: number;
  /** Every host's link, bits per second, each direction. */
  bandwidthBps: number;
  /** One-way link latency, ms (default: the calibration's). */
  latencyMs?: number;
  /** Fraction of the statistics (by bytes) due per step, on average: 1 with stale statistics off, about 0.075 in steady state. */
  refreshFraction: number;
  /** 0: the PS waits for each step's own preconditioners; k ≥ 1: for those of step s − k. */
  lag: number;
  mode: Mode;
  calibration: Calibration;
}

/** The time of each phase of the PS's step, ms; they add up to stepMs. */
export interface StepPhasesMs {
  /**
   * Workers waiting, before they compute, for the owners to have reduced the statistics they sent
   * at the step before (docs/protocol.md § 1.2): the statistics' way in and the owners' reduction,
   * less what the gradients' way to the PS and the parameters' way back took meanwhile.
   */
  waitStatistics: number;
  sendParams: number;
  compute: number;
  uploadGradients: number;
  reduce: number;
  waitPreconditioners: number;
  precondition: number;
  update: number;
  overhead: number;
  /**
   * Shared mode only: how much longer the step is because every process's CPU work (compute,
   * transfers, the PS's and the owners' work) shares the machine's cores, beyond the critical path
   * of the phases above.
   */
  cpuContention: number;
}

export interface ShardLoad {
  layers: string[];
  /** Parameter and buffer bytes the shard holds (what each worker receives from it and sends back). */
  bytes: number;
}

export interface StepPrediction {
  stepMs: number;
  phases: StepPhasesMs;
  /** Bytes per step on each link, each direction, averaged over the refresh schedule. */
  bytes: {
    /** Through the busiest shard's link, each way: W × its parameter bytes (+ preconditioners in). */
    psShardIn: number;
    psShardOut: number;
    workerIn: number;
    /** Gradients to the shards and the due statistics to the owners. */
    workerOut: number;
    /** The busiest owner: statistics in from every worker, preconditioners out. */
    ownerIn: number;
    ownerOut: number;
  };
  /** Link time of those bytes at the bandwidth, ms. */
  linkMs: { psShardIn: number; psShardOut: number; workerIn: number; workerOut: number; ownerIn: number; ownerOut: number };
  /** The busiest owner's path when every statistic is due: statistics in, reduce, invert, publish (ms). */
  ownerChainMs: number;
  /** The busiest owner's inversion when every factor is due (ms). */
  inversionMs: number;
  shards: ShardLoad[];
  owners: { id: string; layers: string[]; cost: number }[];
  /** What limits the step: the largest of compute, communication (both ways), PS work, waiting. */
  bound: 'compute' | 'communication' | 'ps' | 'owners' | 'cpu';
}

const FLOAT = 4;

/** Layers over S shards balanced by bytes: largest first, each to the lightest shard (ties: lower index). */
export function shardLayers(layers: readonly ScalingLayer[], shards: number): ShardLoad[] {
  const out: ShardLoad[] = Array.from({ length: Math.max(1, shards) }, () => ({ layers: [], bytes: 0 }));
  const order = layers.filter((l) => l.params + l.buffers > 0).sort((a, b) => b.params + b.buffers - (a.params + a.buffers) || (a.name < b.name ? -1 : 1));
  for (const l of order) {
    let best = 0;
    for (let i = 1; i < out.length; i++) if (out[i].bytes < out[best].bytes) best = i;
    out[best].layers.push(l.name);
    out[best].bytes += (l.params + l.buffers) * FLOAT;
  }
  return out;
}

/** The calibration's speed-up of k processes, interpolated linearly between measured k, flat beyond the largest. */
export function speedUp(cal: Pick<Calibration, 'parallelism'>, k: number): number {
  const points = Object.entries(cal.parallelism)
    .map(([n, v]) => [Number(n), v] as const)
    .sort((a, b) => a[0] - b[0]);
  if (points.length === 0) return 1;
  if (k <= points[0][0]) return points[0][1];
  for (let i = 1; i < points.length; i++) {
    const [k1, v1] = points[i];
    const [k0, v0] = points[i - 1];
    if (k <= k1) return v0 + ((v1 - v0) * (k - k0)) / (k1 - k0);
  }
  return points[points.length - 1][1];
}

/** Per-sample forward/backward and statistics time of the model (ms), measured or from the flop rates. */
export function perSampleMs(inputs: Pick<StepInputs, 'layers' | 'modelName' | 'calibration'>): { fwdBwd: number; stats: number } {
  const measured = inputs.modelName ? inputs.calibration.models?.[inputs.modelName] : undefined;
  if (measured) return { fwdBwd: measured.fwdBwdMsPerSample, stats: measured.statMsPerSample };
  const t = modelTotals(inputs.layers);
  return { fwdBwd: (t.fwdBwdFlops * inputs.calibration.fwdBwdNsPerFlop) / 1e6, stats: (t.statFlops * inputs.calibration.statNsPerFlop) / 1e6 };
}

export function predictStep(inputs: StepInputs): StepPrediction {
  const { layers, globalBatch: batch, calibration: cal, refreshFraction: f } = inputs;
  const W = Math.max(1, inputs.workers);
  const byName = new Map(layers.map((l) => [l.name, l]));
  const bytesPerMs = inputs.bandwidthBps / 8 / 1000;
  const latency = inputs.latencyMs ?? cal.latencyMs;
  const txMsPerByte = cal.transferNsPerByte / 1e6;
  const link = (bytes: number) => bytes / bytesPerMs;
  /** A stream's time: the link or the CPU of the one thread that serialises it, whichever is slower. */
  const stream = (bytes: number) => Math.max(link(bytes), bytes * txMsPerByte);

  const shards = shardLayers(layers, inputs.shards);
  const totalBytes = shards.reduce((x, s) => x + s.bytes, 0);

  // Owners: the PS's assignment (largest inversion cost first to the least-loaded owner).
  const kfac = layers.filter((l) => l.curvature);
  const ownerIds = Array.from({ length: Math.max(0, inputs.owners) }, (_, i) => `owner-${i + 1}`);
  const assignment = assignLayers(
    kfac.map((l) => ({ layer: l.name, cost: l.inversionCost, aDim: 0, gDim: 0 })),
    ownerIds.map((id) => ({ id, capacity: 1 })),
  );
  const owners = ownerIds.map((id) => {
    const mine = assignment.filter((a) => a.ownerId === id).map((a) => byName.get(a.layer)!);
    return { id, layers: mine.map((l) => l.name), cost: mine.reduce((x, l) => x + l.inversionCost, 0), statBytes: mine.reduce((x, l) => x + l.statBytes, 0) };
  });
  const statBytes = kfac.reduce((x, l) => x + l.statBytes, 0);
  // Preconditioners arriving at each shard (the layers it holds), every step on average. Owners
  // publish to the coordinator (shard 0), which relays the other shards' ones: it receives them all.
  const precondIn = shards.map((s, i) => (i === 0 ? f * statBytes : f * s.layers.reduce((x, n) => x + (byName.get(n)!.statBytes ?? 0), 0)));

  // 1. Parameters out: every shard sends its part to each of the W workers over its own link.
  const psShardOut = Math.max(...shards.map((s) => W * s.bytes));
  const sendParams = Math.max(stream(psShardOut), stream(totalBytes)) + latency;

  // 2. Compute: a worker's share of the batch; on the shared machine every worker's (and the owners' inversions) share the cores.
  const perSample = perSampleMs(inputs);
  const sampleMs = perSample.fwdBwd + f * perSample.stats;
  const ownInversions = owners.reduce((x, o) => x + (f * o.cost * cal.inversionNsPerCost) / 1e6, 0);
  let compute = (batch / W) * sampleMs;
  if (inputs.mode === 'shared') compute = Math.max(compute, (batch * sampleMs + ownInversions) / speedUp(cal, W));

  // 3. Gradients in: each shard receives W × its bytes (and its preconditioners); each worker sends its gradients and due statistics.
  const psShardIn = Math.max(...shards.map((s, i) => W * s.bytes + precondIn[i]));
  const workerOut = totalBytes + f * statBytes;
  const uploadGradients = Math.max(link(psShardIn), Math.max(...shards.map((s) => W * s.bytes * txMsPerByte)), stream(workerOut)) + latency;

  // 4-6. Each shard reduces, preconditions and updates its own layers.
  const shardWork = shards.map((s) => {
    const ls = s.layers.map((n) => byName.get(n)!);
    const values = ls.reduce((x, l) => x + l.params + l.buffers, 0);
    const params = ls.reduce((x, l) => x + l.params, 0);
    return {
      reduce: (W * values * cal.reduceNsPerValue) / 1e6,
      precondition: (ls.reduce((x, l) => x + l.preconditionFlops, 0) * cal.preconditionNsPerFlop) / 1e6,
      update: (params * cal.updateNsPerValue) / 1e6,
    };
  });
  const slowest = shardWork.reduce((a, b) => (b.reduce + b.precondition + b.update > a.reduce + a.precondition + a.update ? b : a));

  // The owners' path for a step whose statistics are all due: in from W workers, reduce, invert, publish.
  const chain = owners.map((o) => {
    const inMs = link(W * o.statBytes) + latency;
    const reduceMs = (W * (o.statBytes / FLOAT) * cal.reduceNsPerValue) / 1e6;
    const ackMs = inMs + reduceMs + latency;
    const invMs = (o.cost * cal.inversionNsPerCost) / 1e6;
    const outMs = stream(o.statBytes) + latency;
    return { total: inMs + reduceMs + invMs + outMs, ackMs, invMs, in: W * o.statBytes, out: o.statBytes };
  });
  const worstChain = chain.reduce((a, b) => (b.total > a.total ? b : a), { total: 0, ackMs: 0, invMs: 0, in: 0, out: 0 });
  const ack = Math.max(0, ...chain.map((c) => c.ackMs));
  const waitStatistics = Math.min(1, f) * Math.max(0, ack - (uploadGradients + slowest.reduce + slowest.precondition + slowest.update + sendParams));
  const base = waitStatistics + sendParams + compute + uploadGradients + slowest.reduce + slowest.precondition + slowest.update + cal.stepOverheadMs;
  // The chain starts when the workers send their statistics (with their gradients); the PS needs its
  // result after the upload and reduction of step s + lag, so lag whole steps of slack besides those.
  const slack = uploadGradients + slowest.reduce + inputs.lag * base;
  // Waiting happens at refreshes only: expected over the schedule.
  const waitPreconditioners = inputs.owners > 0 ? Math.min(1, f) * Math.max(0, worstChain.total - slack) : 0;

  // On one machine every process's CPU work of a step shares the cores: the step lasts at least the
  // whole work over the speed-up of the processes running (workers, owners, the PS).
  let cpuContention = 0;
  if (inputs.mode === 'shared') {
    const statsValues = (W * statBytes) / FLOAT;
    const cpuWork =
      batch * sampleMs +
      (2 * W * totalBytes + f * (W + 1) * statBytes) * txMsPerByte +
      shardWork.reduce((x, w) => x + w.reduce + w.precondition + w.update, 0) +
      f * ((statsValues * cal.reduceNsPerValue) / 1e6) +
      ownInversions +
      cal.stepOverheadMs;
    const critical = base + waitPreconditioners;
    cpuContention = Math.max(0, cpuWork / speedUp(cal, W + inputs.owners + inputs.shards) - critical);
  }
  const phases: StepPhasesMs = {
    waitStatistics,
    sendParams,
    compute,
    uploadGradients,
    reduce: slowest.reduce,
    waitPreconditioners,
    precondition: slowest.precondition,
    update: slowest.update,
    overhead: cal.stepOverheadMs,
    cpuContention,
  };
  const stepMs = Object.values(phases).reduce((a, b) => a + b, 0);
  const parts = {
    compute,
    communication: sendParams + uploadGradients,
    ps: slowest.reduce + slowest.precondition + slowest.update,
    owners: waitPreconditioners + waitStatistics,
    cpu: cpuContention,
  };
  const bound = (Object.keys(parts) as (keyof typeof parts)[]).reduce((a, b) => (parts[b] > parts[a] ? b : a));
  const ownerIn = f * Math.max(0, ...chain.map((c) => c.in));
  const ownerOut = f * Math.max(0, ...chain.map((c) => c.out));
  return {
    stepMs,
    phases,
    bytes: { psShardIn, psShardOut, workerIn: totalBytes, workerOut, ownerIn, ownerOut },
    linkMs: {
      psShardIn: link(psShardIn),
      psShardOut: link(psShardOut),
      workerIn: link(totalBytes),
      workerOut: link(workerOut),
      ownerIn: link(ownerIn),
      ownerOut: link(ownerOut),
    },
    ownerChainMs: worstChain.total,
    inversionMs: worstChain.invMs,
    shards,
    owners: owners.map(({ id, layers: ls, cost }) => ({ id, layers: ls, cost })),
    bound,
  };
}

/** The (S, O) among the candidates with the shortest predicted step (ties: fewer shards, then fewer owners). */
export function bestLayout(
  inputs: Omit<StepInputs, 'shards' | 'owners'>,
  candidates: { shards: readonly number[]; owners: readonly number[] },
): { shards: number; owners: number; prediction: StepPrediction } {
  let best: { shards: number; owners: number; prediction: StepPrediction } | undefined;
  for (const shards of candidates.shards) {
    for (const owners of candidates.owners) {
      const prediction = predictStep({ ...inputs, shards, owners });
      if (!best || prediction.stepMs < best.prediction.stepMs * (1 - 1e-9)) best = { shards, owners, prediction };
    }
  }
  return best!;
}
