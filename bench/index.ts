/**
 * `npm run bench -- <name> [options]`: kernels, step, convergence, overhead, stale-study, transport, cluster, scale. Benchmarks print ratios against a
 * baseline measured in the same run, with min/median/max; they are never part of the tests.
 */
import { Command, Option } from 'commander';
import { type BackendChoice, backendChoices, type ComputeBackend } from '../src/compute/backend.js';
import { selectBackend } from '../workers/kernels/select.js';
import { clusterBench } from './cluster.js';
import { convergenceBench, convergenceFromRuns } from './convergence.js';
import { convergenceJobs } from './convergence-jobs.js';
import { kernelsBench } from './kernels.js';
import { overheadBench } from './overhead.js';
import { defaultCalibrationFile, defaultRuns, parseRunSpec, scaleBench } from './scale.js';
import { staleStudyBench } from './stale-study.js';
import { stepBench } from './step.js';
import { transportBench } from './transport.js';

const program = new Command('bench').description('spngd benchmarks');

const backendOption = () => new Option('--backend <name>').choices(backendChoices).default('auto');

/** Ends the bench with a usage error. */
function fail(message: string): never {
  program.error(message);
  throw new Error(message);
}

/** Runs a benchmark on the chosen backend and releases it afterwards. */
async function withBackend(choice: BackendChoice, run: (backend: ComputeBackend) => Promise<void>): Promise<void> {
  const { backend } = await selectBackend(choice);
  try {
    await run(backend);
  } finally {
    await backend.dispose();
  }
}

program
  .command('kernels')
  .description(
    'GFLOP/s of matmul and XᵀX on each backend, against OpenBLAS called directly and a naive gpu.js kernel; ' +
      'the element-wise layer kernels on blas against plain TypeScript',
  )
  .option('--repeats <n>', 'timed runs per case', '7')
  .addOption(new Option('--only <group>', 'run one group of cases').choices(['products', 'elementwise']))
  .action(async (o: { repeats: string; only?: 'products' | 'elementwise' }) => kernelsBench({ repeats: Number(o.repeats), only: o.only }));

program
  .command('step')
  .description(
    'where one training step goes (im2col/col2im, gemm, batch norm, element-wise work, K-FAC statistics by kind, inversion, ' +
      'preconditioning, update) and the evaluation time, per model, min/median/max over repeats',
  )
  .option('--model <list>', 'built-in models, comma-separated', 'resnet8,cnn')
  .option('--batch-size <n>', 'batch size', '256')
  .option('--repeats <n>', 'timed repeats (each: a step without statistics, one with all of them, one evaluation)', '5')
  .option('--warmup <n>', 'untimed repeats first', '1')
  .option('--eval-samples <n>', 'images evaluated per repeat', '10000')
  .option('--eval-batch <n>', 'evaluation batch size (the trainer uses 250)', '250')
  .option('--json', 'print the medians as one JSON line')
  .addOption(backendOption())
  .action(
    async (o: {
      model: string;
      batchSize: string;
      repeats: string;
      warmup: string;
      evalSamples: string;
      evalBatch: string;
      json?: boolean;
      backend: BackendChoice;
    }) =>
      withBackend(o.backend, (backend) =>
        stepBench({
          backend,
          models: o.model.split(','),
          batchSize: Number(o.batchSize),
          repeats: Number(o.repeats),
          warmup: Number(o.warmup),
          evalSamples: Number(o.evalSamples),
          evalBatch: Number(o.evalBatch),
          json: o.json === true,
        }),
      ),
  );

program
  .command('convergence')
  .description(
    'the large-batch study: steps, epochs and seconds to target accuracies, SP-NGD against SGD with momentum over a learning-rate grid per batch size',
  )
  .addOption(new Option('--model <name>', 'built-in model').choices(['mlp', 'cnn', 'resnet8', 'resnet20']).default('mlp'))
  .option('--config <file>', 'a config laid under every run (schedule, damping, data.augment, ...)')
  .option('--batch-sizes <list>', 'global batch sizes', '1024,4096')
  .option('--targets <list>', 'test accuracy targets', '0.85,0.88')
  .option('--sgd-lrs <list>', 'SGD learning-rate grid (none: no SGD run)', '0.05,0.1,0.2,0.4')
  .option('--spngd-lrs <list>', "SP-NGD's learning-rate grid (default: the config's learning rate; none: no SP-NGD run)")
  .option('--no-dense', 'skip the SP-NGD run with stale statistics off')
  .option('--epochs <n>', 'budget of every run, in epochs', '5')
  .option('--eval-every <n>', 'steps between evaluations', '5')
  .option('--data <dir>', 'data directory')
  .option('--keep-runs <dir>', 'keep every run folder here, with compare-b<batch>.html plotting them per batch size')
  .option('--jobs <n>', 'runs side by side, each a process with one OpenBLAS thread (needs --keep-runs)', '1')
  .option('--from-runs <dir>', 'train nothing: the table, verdicts and plots of the run folders kept in DIR (e.g. by runs made side by side)')
  .addOption(new Option('--via <how>', 'one process, or the local cluster of processes').choices(['single', 'cluster']).default('single'))
  .addOption(backendOption())
  .action(
    async (o: {
      keepRuns?: string;
      fromRuns?: string;
      jobs: string;
      model: string;
      config?: string;
      batchSizes: string;
      targets: string;
      sgdLrs: string;
      spngdLrs?: string;
      dense: boolean;
      epochs: string;
      evalEvery: string;
      data?: string;
      via: 'single' | 'cluster';
      backend: BackendChoice;
    }) =>
      o.fromRuns !== undefined
        ? convergenceFromRuns(o.fromRuns, o.targets.split(',').map(Number))
        : Number(o.jobs) > 1
          ? convergenceJobs(
              o,
              {
                batchSizes: o.batchSizes.split(','),
                spngdLrs: o.spngdLrs === 'none' ? [] : o.spngdLrs ? o.spngdLrs.split(',') : ['config'],
                sgdLrs: o.sgdLrs === 'none' ? [] : o.sgdLrs.split(','),
              },
              Number(o.jobs),
              o.keepRuns ?? fail('--jobs needs --keep-runs DIR: the runs are read back from their folders'),
            )
          : withBackend(o.backend, (backend) =>
              convergenceBench({
                backend,
                via: o.via,
                model: o.model,
                ...(o.config ? { baseConfig: o.config } : {}),
                batchSizes: o.batchSizes.split(',').map(Number),
                targets: o.targets.split(',').map(Number),
                sgdLrs: o.sgdLrs === 'none' ? [] : o.sgdLrs.split(',').map(Number),
                spngdLrs: o.spngdLrs === 'none' ? 'none' : o.spngdLrs ? o.spngdLrs.split(',').map(Number) : [],
                dense: o.dense,
                epochs: Number(o.epochs),
                evalEvery: Number(o.evalEvery),
                ...(o.data ? { dataDir: o.data } : {}),
                ...(o.keepRuns ? { keepRuns: o.keepRuns } : {}),
              }),
            ),
  );

program
  .command('overhead')
  .description(
    "SP-NGD's time per step over SGD's (alternating whole runs), refreshes per statistic as a fraction of steps, and final accuracy with stale statistics on and off",
  )
  .option('--steps <n>', 'steps per run (293: 5 epochs at batch 1024)', '293')
  .option('--batch-size <n>', 'global batch size', '1024')
  .option('--repeats <n>', 'alternating rounds of (SP-NGD, SGD)', '3')
  .option('--data <dir>', 'data directory')
  .addOption(backendOption())
  .action(async (o: { steps: string; batchSize: string; repeats: string; data?: string; backend: BackendChoice }) =>
    withBackend(o.backend, (backend) =>
      overheadBench({ backend, steps: Number(o.steps), batchSize: Number(o.batchSize), repeats: Number(o.repeats), ...(o.data ? { dataDir: o.data } : {}) }),
    ),
  );

program
  .command('stale-study')
  .description('the study behind the stale-statistics defaults: drift of the raw statistics, then runs over averaging, α and maximum interval')
  .option('--steps <n>', 'steps per run', '293')
  .option('--batch-size <n>', 'global batch size', '1024')
  .option('--seed <n>', 'seed of every run', '1')
  .addOption(new Option('--model <name>', 'built-in model').choices(['mlp', 'cnn']).default('mlp'))
  .option('--data <dir>', 'data directory')
  .addOption(backendOption())
  .action(async (o: { steps: string; batchSize: string; seed: string; model: string; data?: string; backend: BackendChoice }) =>
    withBackend(o.backend, (backend) =>
      staleStudyBench({
        backend,
        steps: Number(o.steps),
        batchSize: Number(o.batchSize),
        seed: Number(o.seed),
        model: o.model,
        ...(o.data ? { dataDir: o.data } : {}),
      }),
    ),
  );

program
  .command('transport')
  .description('tensor download MB/s over loopback: the gRPC transport path against a raw TCP socket')
  .option('--repeats <n>', 'timed transfers per size and transport (>= 5)', '7')
  .option('--sizes <MiB,...>', 'tensor sizes in MiB', '4,64')
  .addOption(
    new Option('--receiver <where>', 'receiving side: a child process, or this process (shared event loop)').choices(['child', 'inline']).default('child'),
  )
  .action(async (o: { repeats: string; sizes: string; receiver: 'child' | 'inline' }) =>
    transportBench({ repeats: Number(o.repeats), sizesMiB: o.sizes.split(',').map(Number), receiver: o.receiver }),
  );

program
  .command('cluster')
  .description('time per step of a local cluster (separate processes) over the single-process time per step, same model and batch')
  .option('--steps <n>', 'steps per run', '80')
  // The first cluster.preconditionerLagFrom (20) steps wait for their own preconditioners by design,
  // and statistics start out refreshed every step: the ratio is of the steady state after them.
  .option('--warmup <n>', 'first steps of each run not in the ratio (their medians are printed apart)', '25')
  .option('--batch-size <n>', 'global batch size', '1024')
  .option('--workers <n>', 'worker processes', '2')
  .option('--owners <n>', 'factor-owner processes', '2')
  .option('--repeats <n>', 'alternating pairs of runs (single process, cluster)', '3')
  .option('--wait-preconditioners', "the PS waits for each step's preconditioners (cluster.waitForPreconditioners)")
  .option('--data <dir>', 'data directory')
  .addOption(backendOption())
  .action(
    async (o: {
      steps: string;
      warmup: string;
      batchSize: string;
      workers: string;
      owners: string;
      repeats: string;
      waitPreconditioners?: boolean;
      data?: string;
      backend: BackendChoice;
    }) =>
      clusterBench({
        steps: Number(o.steps),
        warmup: Number(o.warmup),
        batchSize: Number(o.batchSize),
        workers: Number(o.workers),
        owners: Number(o.owners),
        repeats: Number(o.repeats),
        waitForPreconditioners: o.waitPreconditioners === true,
        backend: o.backend,
        ...(o.data ? { dataDir: o.data } : {}),
      }),
  );

program
  .command('scale')
  .description(
    'the step cost model (docs/scaling.md) against a real cluster on rate-limited links (one network namespace per actor, tbf; needs root), ' +
      'then its predictions for 16-1,024 workers',
  )
  .option('--runs <list>', 'configurations MODEL:WxO[xS]@RATE: workers, owners, PS shards (models mlp, wide; rates like 1g, 100m, none)', defaultRuns.join(','))
  .option('--steps <n>', 'steps per run', '9')
  .option('--warmup <n>', 'first steps of each run not counted', '4')
  .option('--calibration <file>', 'calibration JSON (measured and written when missing)', defaultCalibrationFile)
  .option('--calibrate', 'measure the calibration again')
  .option('--predict-only', 'no validation runs: the predictions from the calibration file')
  .option('--bandwidth <gbit>', "predictions' link bandwidth, Gbit/s", '10')
  .option('--refresh <f>', "predictions' fraction of statistics due per step (0.075: the stale-statistics steady state)", '0.075')
  .option('--svg <dir>', 'write the predicted step breakdown per model as SVG here')
  .option('--worker-tflops <x>', 'predictions again with workers this fast (forward, backward, statistics), e.g. 10 for a GPU')
  .option('--stream-gbps <x>', "predictions again with a tensor stream's CPU this fast, Gbit/s")
  .option('--keep <dir>', 'keep every run folder here')
  .option('--reuse', 'read the runs already kept in --keep instead of running them again')
  .action(
    async (o: {
      runs: string;
      steps: string;
      warmup: string;
      calibration: string;
      calibrate?: boolean;
      predictOnly?: boolean;
      bandwidth: string;
      refresh: string;
      svg?: string;
      keep?: string;
      workerTflops?: string;
      streamGbps?: string;
      reuse?: boolean;
    }) =>
      scaleBench({
        calibrationFile: o.calibration,
        recalibrate: o.calibrate === true,
        runs: o.runs.split(',').map(parseRunSpec),
        steps: Number(o.steps),
        warmup: Number(o.warmup),
        predictOnly: o.predictOnly === true,
        bandwidthBps: Number(o.bandwidth) * 1e9,
        refreshFraction: Number(o.refresh),
        ...(o.svg ? { svgDir: o.svg } : {}),
        ...(o.keep ? { keep: o.keep } : {}),
        ...(o.workerTflops ? { workerTflops: Number(o.workerTflops) } : {}),
        ...(o.streamGbps ? { streamGbps: Number(o.streamGbps) } : {}),
        reuse: o.reuse === true,
      }),
  );

await program.parseAsync(process.argv);
