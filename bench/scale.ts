/**
 * `npm run bench -- scale`: the step cost model (src/scaling/cost-model.ts, docs/scaling.md)
 * against measured steps of a real cluster on rate-limited links, and its predictions for large
 * clusters.
 *
 * Validation: for each configuration (model, workers W, owners O, link rate) it builds one network
 * namespace per actor host with tbf-limited veth links (scale-net.ts), runs `spngd ps`, `spngd
 * worker` and `spngd owner` from dist/ in them for a few steps, reads the PS's step records
 * (stepMs, phases, traffic) after a warm-up, and prints the measured step time next to the model's
 * prediction in its `shared` mode (every process computes on this machine's cores).
 *
 * Calibration (cached in a JSON file, redone with --calibrate): compute costs measured in this
 * process (scale-calibrate.ts), then two unthrottled W = 1 runs give the two constants the
 * transport adds: the CPU time per byte of a tensor stream (the wide MLP's sendParams) and a fixed
 * time per step (the MLP's step less the model's prediction of it).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { lineChart } from '../src/report/charts.js';
import { bestLayout, predictStep, type Calibration, type StepPrediction } from '../src/scaling/cost-model.js';
import { modelTotals, scalingLayers, type ScalingLayer } from '../src/scaling/layers.js';
import { resnet50Spec, wideMlpSpec } from '../src/scaling/reference-models.js';
import { spread } from '../src/util/stats.js';
import { selectBackend } from '../workers/kernels/select.js';
import { calibrateCompute } from './scale-calibrate.js';
import { ScaleNet, scaleNetUnavailable } from './scale-net.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const spngd = join(root, 'bin', 'spngd.js');
const dataDir = join(root, 'data', 'fashion-mnist');
export const defaultCalibrationFile = join(root, 'bench', 'scale-calibration.json');

/** The validation's models: name → config, and the global batch each runs at. */
const models: Record<string, { config: unknown; batch: number }> = {
  mlp: { config: 'mlp', batch: 512 },
  wide: { config: wideMlpSpec, batch: 256 },
};

export interface RunSpec {
  model: string;
  workers: number;
  owners: number;
  /** PS processes, the coordinator included (each on its own host). */
  shards: number;
  /** Bits per second of every link (undefined: unlimited). */
  rateBps: number | undefined;
}

/** "mlp:2x1@1g" or "wide:2x2x2@100m" (2 PS shards) → spec; rates: 1g, 100m, 10g, none. */
export function parseRunSpec(s: string): RunSpec {
  const m = /^([a-z0-9]+):(\d+)x(\d+)(?:x(\d+))?@(none|\d+(?:\.\d+)?[kmg])$/.exec(s.trim());
  if (!m || !models[m[1]] || m[4] === '0')
    throw new Error(`bad configuration "${s}": MODEL:WORKERSxOWNERS[xSHARDS]@RATE, MODEL one of ${Object.keys(models).join(', ')}, RATE e.g. 1g, 100m or none`);
  const rate = m[5] === 'none' ? undefined : Number.parseFloat(m[5]) * { k: 1e3, m: 1e6, g: 1e9 }[m[5].slice(-1) as 'k' | 'm' | 'g'];
  return { model: m[1], workers: Number(m[2]), owners: Number(m[3]), shards: Number(m[4] ?? 1), rateBps: rate };
}

function specName(r: RunSpec): string {
  const rate = r.rateBps === undefined ? 'none' : r.rateBps >= 1e9 ? `${r.rateBps / 1e9}g` : `${r.rateBps / 1e6}m`;
  return `${r.model}:${r.workers}x${r.owners}${r.shards > 1 ? `x${r.shards}` : ''}@${rate}`;
}

/** A few minutes: workers 1-8, owners 1-4, 1 Gbit/s and 100 Mbit/s, both models (docs/scaling.md has a longer list). */
export const defaultRuns = ['mlp:1x1@1g', 'mlp:4x2@1g', 'mlp:8x4@1g', 'mlp:2x1@100m', 'mlp:8x2@100m', 'wide:2x2@100m', 'wide:2x2x2@100m'];

interface StepRecordJson {
  type: string;
  step: number;
  workers: number;
  stepMs: number;
  phases: Record<string, number>;
  traffic?: Record<string, { sentBytes: number; receivedBytes: number }>;
}

export interface Measured {
  spec: RunSpec;
  steps: number;
  stepMs: { median: number; mean: number; min: number; max: number };
  phases: Record<string, number>;
  trainSent: number;
  trainReceived: number;
  preconditionersReceived: number;
  refreshFraction: number;
  /** The workers' own compute per sample of their share (slowest worker): without statistics, and the statistics' extra when all are due. */
  workerFwdBwdMsPerSample: number;
  workerStatMsPerSample: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/**
 * Runs one configuration on its own hosts; the PS's step records after `warmup` steps. With
 * `reuse`, a finished run already in `keep` is read instead of run again.
 */
export async function runCluster(spec: RunSpec, steps: number, warmup: number, log: (l: string) => void, keep?: string, reuse = false): Promise<Measured> {
  const { config, batch } = models[spec.model];
  const hosts = [
    'ps',
    ...Array.from({ length: spec.workers }, (_, i) => `w${i + 1}`),
    ...Array.from({ length: spec.owners }, (_, i) => `o${i + 1}`),
    ...Array.from({ length: spec.shards - 1 }, (_, i) => `p${i + 2}`),
  ];
  const dir = keep ? join(keep, specName(spec).replace(/[:@]/g, '-')) : mkdtempSync(join(tmpdir(), 'spngd-scale-'));
  mkdirSync(dir, { recursive: true });
  const job = join(dir, 'job.yaml');
  if (!reuse || !existsSync(job))
    writeFileSync(
      job,
      stringify({
        seed: 1,
        model: config,
        batchSize: batch,
        steps,
        evalEvery: 100_000,
        checkpointEvery: 100_000,
        data: { dir: dataDir, trainLimit: 8192, testLimit: 500 },
        optimizer: { kind: 'spngd' },
        // Lag 1 from the first step (the steady state's overlap of inversion and compute); a loaded
        // machine must not expire anyone.
        cluster: {
          minWorkers: spec.workers,
          minOwners: spec.owners,
          psShards: spec.shards,
          preconditionerLagFrom: 0,
          heartbeatMs: 1000,
          leaseMs: 60_000,
          keepaliveMs: 30_000,
          keepaliveTimeoutMs: 30_000,
        },
      }),
    );
  if (!(reuse && existsSync(join(dir, 'summary.json')))) {
    const net = ScaleNet.create(hosts, spec.rateBps);
    const env = { OPENBLAS_NUM_THREADS: '1' };
    const node = [process.execPath, spngd];
    try {
      const ps = net.start('ps', 'ps', [...node, 'ps', '--listen', 'ps:7000', '--config', job, '--out', dir], dir, env);
      await Promise.race([ps.listening, ps.exited.then((c) => Promise.reject(new Error(`the PS exited (${c}); see ${dir}/ps.log`)))]);
      for (const h of hosts.slice(1)) {
        const role = h.startsWith('w') ? 'worker' : h.startsWith('o') ? 'owner' : 'ps-shard';
        net.start(h, h, [...node, role, '--ps', 'ps:7000', '--listen', `${h}:7001`, '--id', h], dir, env);
      }
      const limitMs = 600_000;
      const code = await Promise.race([ps.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), limitMs).unref())]);
      if (code === 'timeout') throw new Error(`${specName(spec)}: the PS did not finish ${steps} steps within ${limitMs / 1000} s; see ${dir}`);
      if (code !== 0) throw new Error(`${specName(spec)}: the PS exited with ${code}; see ${dir}/ps.log`);
    } finally {
      await net.destroy();
    }
  } else log(`  ${specName(spec)}: the steps recorded in ${dir}`);
  const records = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as StepRecordJson)
    .filter((r) => r.type === 'step' && r.step > warmup && r.workers === spec.workers);
  if (!keep) rmSync(dir, { recursive: true, force: true });
  if (records.length === 0) throw new Error(`${specName(spec)}: no step after the warm-up with all ${spec.workers} workers`);
  const ms = records.map((r) => r.stepMs);
  const phaseNames = [...new Set(records.flatMap((r) => Object.keys(r.phases)))];
  const traffic = (method: string, k: 'sentBytes' | 'receivedBytes') => mean(records.map((r) => r.traffic?.[`ParameterServerService/${method}`]?.[k] ?? 0));
  const statBytes = modelTotals(scalingLayers(config)).statBytes;
  const preconditionersReceived = traffic('PublishPreconditioners', 'receivedBytes');
  const s = spread(ms);
  const m: Measured = {
    spec,
    steps: records.length,
    stepMs: { median: s.median, mean: mean(ms), min: s.min, max: s.max },
    phases: Object.fromEntries(phaseNames.map((p) => [p, spread(records.map((r) => r.phases[p] ?? 0)).median])),
    trainSent: traffic('Train', 'sentBytes'),
    trainReceived: traffic('Train', 'receivedBytes'),
    preconditionersReceived,
    refreshFraction: Math.min(1, preconditionersReceived / statBytes),
    workerFwdBwdMsPerSample: 0,
    workerStatMsPerSample: 0,
  };
  // Per sample of a worker's share: forward/backward at steps with no statistic due; the statistics' extra at the others, scaled to all due.
  const share = batch / spec.workers;
  const plain = records.filter((r) => !(r.phases.workerStatistics > 0));
  const due = records.filter((r) => r.phases.workerStatistics > 0);
  const compute = (r: StepRecordJson) => (r.phases.workerForwardBackward ?? 0) + (r.phases.workerStatistics ?? 0);
  m.workerFwdBwdMsPerSample = spread((plain.length > 0 ? plain : records).map((r) => r.phases.workerForwardBackward ?? 0)).median / share;
  if (due.length > 0 && m.refreshFraction > 0) {
    const dueFraction = Math.min(1, (m.refreshFraction * records.length) / due.length);
    m.workerStatMsPerSample = Math.max(0, mean(due.map(compute)) / share - m.workerFwdBwdMsPerSample) / dueFraction;
  }
  log(
    `  ${specName(spec)}: ${m.steps} steps, median ${s.median.toFixed(0)} ms (mean ${m.stepMs.mean.toFixed(0)}), refresh fraction ${m.refreshFraction.toFixed(2)}`,
  );
  return m;
}

/** One-way latency between two of the bench's hosts: half the median TCP round trip of one byte. */
function measureLatencyMs(): number {
  const net = ScaleNet.create(['a', 'b'], undefined);
  try {
    const server = `require('node:net').createServer((s) => s.on('data', (d) => s.write(d))).listen(7100, () => console.log('up'))`;
    const client = `const s = require('node:net').connect(7100, process.argv[1], () => { s.setNoDelay(true); const t = []; let t0 = performance.now(); s.write('x'); s.on('data', () => { t.push(performance.now() - t0); if (t.length === 300) { t.sort((a, b) => a - b); console.log(t[150]); process.exit(0); } t0 = performance.now(); s.write('x'); }); });`;
    const srv = net.start('a', 'echo', [process.execPath, '-e', server], tmpdir());
    execFileSync('sleep', ['0.5']);
    const out = net.exec('b', [process.execPath, '-e', client, net.hosts.get('a')!]);
    srv.proc.kill('SIGKILL');
    return Number(out.trim()) / 2;
  } finally {
    void net.destroy();
  }
}

function predictFor(m: Pick<Measured, 'spec' | 'refreshFraction'>, cal: Calibration): StepPrediction {
  const { config, batch } = models[m.spec.model];
  return predictStep({
    layers: scalingLayers(config),
    modelName: m.spec.model,
    globalBatch: batch,
    workers: m.spec.workers,
    owners: m.spec.owners,
    shards: m.spec.shards,
    bandwidthBps: m.spec.rateBps ?? 1e13,
    refreshFraction: m.refreshFraction,
    lag: 1,
    mode: 'shared',
    calibration: cal,
  });
}

export async function calibrate(file: string, steps: number, warmup: number, log: (l: string) => void, keep?: string, reuse = false): Promise<Calibration> {
  log('calibration: compute in this process (one core)');
  const { backend } = await selectBackend('auto');
  let compute: Awaited<ReturnType<typeof calibrateCompute>>;
  try {
    compute = await calibrateCompute(backend, { mlp: 'mlp', wide: wideMlpSpec, resnet8: 'resnet8' }, log);
  } finally {
    await backend.dispose();
  }
  const latencyMs = measureLatencyMs();
  log(`calibration: one-way latency between namespaces ${(latencyMs * 1000).toFixed(0)} µs`);
  const cal: Calibration = {
    machine: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}`,
    measuredAt: new Date().toISOString(),
    ...compute,
    transferNsPerByte: 0,
    stepOverheadMs: 0,
    latencyMs,
  };
  log("calibration: unthrottled W = 1 runs for the workers' compute in the actor processes and the transport constants");
  const wide = await runCluster({ model: 'wide', workers: 1, owners: 1, shards: 1, rateBps: undefined }, steps, warmup, log, keep, reuse);
  cal.transferNsPerByte = ((wide.phases.sendParams ?? 0) * 1e6) / modelTotals(scalingLayers(wideMlpSpec)).paramBytes;
  const mlp = await runCluster({ model: 'mlp', workers: 1, owners: 1, shards: 1, rateBps: undefined }, steps, warmup, log, keep, reuse);
  // The workers' compute as the actors measure it replaces the in-process figures of these models.
  for (const [name, run] of [
    ['wide', wide],
    ['mlp', mlp],
  ] as const) {
    const before = cal.models?.[name];
    cal.models = {
      ...cal.models,
      [name]: { fwdBwdMsPerSample: run.workerFwdBwdMsPerSample, statMsPerSample: run.workerStatMsPerSample || (before?.statMsPerSample ?? 0) },
    };
    log(
      `  ${name} in a worker: forward+backward ${(run.workerFwdBwdMsPerSample * 1000).toFixed(1)} µs/sample, statistics ${(run.workerStatMsPerSample * 1000).toFixed(1)} µs/sample`,
    );
  }
  // The fixed time per step that makes the model meet the MLP's measured step (bisection: the prediction grows with it).
  let [lo, hi] = [0, mlp.stepMs.median];
  for (let i = 0; i < 40; i++) {
    cal.stepOverheadMs = (lo + hi) / 2;
    if (predictFor(mlp, cal).stepMs > mlp.stepMs.median) hi = cal.stepOverheadMs;
    else lo = cal.stepOverheadMs;
  }
  cal.stepOverheadMs = lo;
  log(
    `  transfer ${cal.transferNsPerByte.toFixed(2)} ns/byte (${(1000 / cal.transferNsPerByte).toFixed(0)} MB/s), step overhead ${cal.stepOverheadMs.toFixed(1)} ms`,
  );
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(cal, null, 2)}\n`);
  log(`calibration written to ${file}`);
  return cal;
}

export interface ValidationRow {
  name: string;
  measured: Measured;
  predicted: StepPrediction;
  /** The prediction with the compute phase replaced by the workers' own recorded compute (network model alone). */
  predictedGivenCompute: number;
  /** predicted / measured − 1, against the median and the mean of the measured steps. */
  error: number;
  errorMean: number;
}

const pct = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(0)}%`;
const mb = (b: number) => (b / 1e6).toFixed(2);

export function validationTable(rows: ValidationRow[]): string {
  const lines = [
    '| configuration | steps | measured median (mean) ms | predicted ms | error vs median (vs mean) | Train sent at PS MB: measured / predicted | refresh f | sendParams + waitGradients ms m/p | worker compute ms m/p | given compute ms (error) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const m = r.measured;
    const p = r.predicted.phases;
    const workerCompute = (m.phases.workerForwardBackward ?? 0) + (m.phases.workerStatistics ?? 0);
    lines.push(
      `| ${r.name} | ${m.steps} | ${m.stepMs.median.toFixed(0)} (${m.stepMs.mean.toFixed(0)}) | ${r.predicted.stepMs.toFixed(0)} | ${pct(r.error)} (${pct(r.errorMean)}) | ${mb(m.trainSent)} / ${mb(r.predicted.bytes.psShardOut)} | ${m.refreshFraction.toFixed(2)} | ${((m.phases.sendParams ?? 0) + (m.phases.waitGradients ?? 0)).toFixed(0)} / ${(p.sendParams + p.waitStatistics + p.compute + p.uploadGradients).toFixed(0)} | ${workerCompute.toFixed(0)} / ${p.compute.toFixed(0)} | ${r.predictedGivenCompute.toFixed(0)} (${pct(r.predictedGivenCompute / m.stepMs.median - 1)}) |`,
    );
  }
  return lines.join('\n');
}

/**
 * For every run with S > 1 shards whose 1-shard twin (same model, workers, owners, rate) also ran:
 * the step time of 1 shard over S shards, measured and predicted.
 */
export function shardSpeedups(rows: ValidationRow[]): string[] {
  const lines: string[] = [];
  for (const r of rows) {
    const s = r.measured.spec;
    if (s.shards <= 1) continue;
    const one = rows.find((x) => {
      const o = x.measured.spec;
      return o.shards === 1 && o.model === s.model && o.workers === s.workers && o.owners === s.owners && o.rateBps === s.rateBps;
    });
    if (!one) continue;
    const measured = one.measured.stepMs.median / r.measured.stepMs.median;
    const predicted = one.predicted.stepMs / r.predicted.stepMs;
    lines.push(
      `${r.name} against ${one.name}: 1 shard's step / ${s.shards} shards' measured ×${measured.toFixed(2)}, predicted ×${predicted.toFixed(2)} (error ${pct(predicted / measured - 1)})`,
    );
  }
  return lines;
}

export async function validate(
  cal: Calibration,
  runs: RunSpec[],
  steps: number,
  warmup: number,
  log: (l: string) => void,
  keep?: string,
  reuse = false,
): Promise<ValidationRow[]> {
  const rows: ValidationRow[] = [];
  for (const spec of runs) {
    const measured = await runCluster(spec, steps, warmup, log, keep, reuse);
    const predicted = predictFor(measured, cal);
    const workerCompute = (measured.phases.workerForwardBackward ?? 0) + (measured.phases.workerStatistics ?? 0);
    rows.push({
      name: specName(spec),
      measured,
      predicted,
      predictedGivenCompute: predicted.stepMs - predicted.phases.compute + workerCompute,
      error: predicted.stepMs / measured.stepMs.median - 1,
      errorMean: predicted.stepMs / measured.stepMs.mean - 1,
    });
  }
  return rows;
}

/** The models of the predictions: name, layers, the measured model the per-sample times come from (if any). */
function predictionModels(): { name: string; layers: ScalingLayer[]; measured?: string }[] {
  return [
    { name: 'mlp', layers: scalingLayers('mlp'), measured: 'mlp' },
    { name: 'resnet8', layers: scalingLayers('resnet8'), measured: 'resnet8' },
    { name: 'resnet50', layers: scalingLayers(resnet50Spec()) },
  ];
}

export const predictionWorkers = [16, 32, 64, 128, 256, 512, 1024];

/** Predictions at batch 32,768 for 16-1,024 workers, (S, O) chosen to minimise the step; markdown, and an SVG per model. */
export function predictions(
  measuredCal: Calibration,
  bandwidthBps: number,
  refreshFraction: number,
  svgDir?: string,
  faster: { workerTflops?: number; streamGbps?: number } = {},
): string {
  const lines: string[] = [];
  // A faster worker (an accelerator) or transport replaces this machine's figures for them.
  const cal: Calibration = {
    ...measuredCal,
    ...(faster.workerTflops ? { fwdBwdNsPerFlop: 1 / (faster.workerTflops * 1e3), statNsPerFlop: 1 / (faster.workerTflops * 1e3), models: {} } : {}),
    ...(faster.streamGbps ? { transferNsPerByte: 8 / faster.streamGbps } : {}),
  };
  const what = [
    faster.workerTflops ? `workers at ${faster.workerTflops} TFLOP/s` : "workers at this machine's measured speed",
    faster.streamGbps ? `streams at ${faster.streamGbps} Gbit/s of CPU` : "streams at this machine's measured CPU rate",
  ].join(', ');
  for (const model of predictionModels()) {
    const t = modelTotals(model.layers);
    lines.push(
      `**${model.name}** (${(t.paramBytes / 1e6).toFixed(1)} MB of parameters, ${(t.statBytes / 1e6).toFixed(1)} MB of statistics), batch 32,768, ${bandwidthBps / 1e9} Gbit/s links, refresh fraction ${refreshFraction}, ${what}:`,
      '',
      '| workers | samples/worker | best S | best O | step ms | compute | params out | gradients in | PS work | wait | bound | step ms with S = 1 (best O) | PS link each way MB (S = 1) |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    const series: Record<string, { x: number; y: number }[]> = {
      step: [],
      'step, S = 1': [],
      compute: [],
      'params out': [],
      'gradients in': [],
      'PS work': [],
    };
    for (const W of predictionWorkers) {
      const base = {
        layers: model.layers,
        ...(model.measured ? { modelName: model.measured } : {}),
        globalBatch: 32_768,
        workers: W,
        bandwidthBps,
        refreshFraction,
        lag: 1,
        mode: 'deployment' as const,
        calibration: cal,
      };
      const owners = [1, 2, 4, 8, 16, 32, 64].filter((o) => o <= Math.max(1, model.layers.filter((l) => l.curvature).length));
      const best = bestLayout(base, { shards: [1, 2, 4, 8, 16, 32, 64, 128], owners });
      const one = bestLayout(base, { shards: [1], owners });
      const p = best.prediction.phases;
      const ps = p.reduce + p.precondition + p.update;
      lines.push(
        `| ${W} | ${32_768 / W} | ${best.shards} | ${best.owners} | ${best.prediction.stepMs.toFixed(0)} | ${p.compute.toFixed(0)} | ${p.sendParams.toFixed(0)} | ${p.uploadGradients.toFixed(0)} | ${ps.toFixed(0)} | ${p.waitPreconditioners.toFixed(0)} | ${best.prediction.bound} | ${one.prediction.stepMs.toFixed(0)} | ${mb(one.prediction.bytes.psShardOut)} |`,
      );
      series.step.push({ x: W, y: best.prediction.stepMs });
      series['step, S = 1'].push({ x: W, y: one.prediction.stepMs });
      series.compute.push({ x: W, y: p.compute });
      series['params out'].push({ x: W, y: p.sendParams });
      series['gradients in'].push({ x: W, y: p.uploadGradients });
      series['PS work'].push({ x: W, y: ps });
    }
    lines.push('');
    if (svgDir) {
      mkdirSync(svgDir, { recursive: true });
      const svg = lineChart({
        title: `${model.name}: predicted step, batch 32,768, ${bandwidthBps / 1e9} Gbit/s${faster.workerTflops ? `, ${faster.workerTflops} TFLOP/s workers` : ''}`,
        xLabel: 'workers (log2)',
        yLabel: 'ms',
        series: Object.entries(series).map(([name, pts]) => ({ name, points: pts.map((q): [number, number] => [Math.log2(q.x), q.y]) })),
        xFromZero: false,
        yFromZero: true,
      });
      writeFileSync(join(svgDir, `scaling-${model.name}${faster.workerTflops ? '-fast' : ''}.svg`), svg);
    }
  }
  return lines.join('\n');
}

export interface ScaleBenchOptions {
  calibrationFile: string;
  recalibrate: boolean;
  runs: RunSpec[];
  steps: number;
  warmup: number;
  predictOnly: boolean;
  bandwidthBps: number;
  refreshFraction: number;
  svgDir?: string;
  keep?: string;
  workerTflops?: number;
  streamGbps?: number;
  /** Read the runs kept in `keep` instead of running them again (a new calibration, the same steps). */
  reuse?: boolean;
}

export async function scaleBench(o: ScaleBenchOptions): Promise<void> {
  const log = (l: string) => console.log(l);
  let cal: Calibration | undefined =
    existsSync(o.calibrationFile) && !o.recalibrate ? (JSON.parse(readFileSync(o.calibrationFile, 'utf8')) as Calibration) : undefined;
  if (!o.predictOnly || !cal) {
    const why = scaleNetUnavailable();
    if (why) {
      console.error(`bench scale: ${why}`);
      if (!cal) console.error(`(predictions need a calibration: none at ${o.calibrationFile})`);
      process.exitCode = 2;
      return;
    }
  }
  if (!cal) cal = await calibrate(o.calibrationFile, o.steps, o.warmup, log, o.keep, o.reuse === true);
  else log(`calibration from ${o.calibrationFile} (${cal.measuredAt}; --calibrate to measure again)`);
  if (!o.predictOnly) {
    log(`validation: ${o.runs.length} configuration(s), ${o.steps} steps each, the first ${o.warmup} not counted`);
    const rows = await validate(cal, o.runs, o.steps, o.warmup, log, o.keep, o.reuse === true);
    log('');
    log(validationTable(rows));
    const errors = rows.map((r) => Math.abs(r.error));
    const errorsMean = rows.map((r) => Math.abs(r.errorMean));
    const given = rows.map((r) => Math.abs(r.predictedGivenCompute / r.measured.stepMs.median - 1));
    log('');
    log(
      `median |error| against the measured median step ${pct(spread(errors).median)} (max ${pct(spread(errors).max)}), against the mean ${pct(spread(errorsMean).median)} (max ${pct(spread(errorsMean).max)}); ` +
        `with the workers' recorded compute in place of the calibrated: ${pct(spread(given).median)} (max ${pct(spread(given).max)})`,
    );
    for (const line of shardSpeedups(rows)) log(line);
  }
  log('');
  log(predictions(cal, o.bandwidthBps, o.refreshFraction, o.svgDir));
  if (o.workerTflops || o.streamGbps) {
    log('');
    log(predictions(cal, o.bandwidthBps, o.refreshFraction, o.svgDir, { workerTflops: o.workerTflops, streamGbps: o.streamGbps }));
  }
}
