/**
 * The `spngd train` flags and how they override the config file: each flag maps onto one config
 * key, so a flag and the file can never disagree about what a setting means.
 */
import { type Command, Option } from 'commander';
import { type BackendChoice, backendChoices } from '../compute/backend.js';
import { trainConfigSchema } from '../config/schema.js';
import { builtinModelNames } from '../nn/builtin-models.js';
import { number } from './option-parsers.js';
import { addSecurityOptions, securityFromFlags } from './security-options.js';

export interface TrainFlags {
  config?: string;
  out?: string;
  model?: string;
  optimizer?: 'spngd' | 'sgd';
  backend?: BackendChoice;
  data?: string;
  steps?: number;
  batchSize?: number;
  bnGroupSize?: number;
  microBatch?: number;
  lr?: number;
  momentum?: number;
  damping?: number;
  fisher?: '1mc' | 'empirical';
  stale?: boolean;
  seed?: number;
  evalEvery?: number;
  trainLimit?: number;
  testLimit?: number;
  progress?: boolean;
  workers?: number;
  owners?: number;
  psShards?: number;
  single?: boolean;
  resume?: string;
  force?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tokenFile?: string;
}

/** The defaults the help shows, read from the config schema (the one place they are set). */
const defaults = trainConfigSchema.parse({});
const dflt = (v: unknown): string => ` (default: ${typeof v === 'string' ? v : JSON.stringify(v)})`;

export function addTrainOptions(cmd: Command): Command {
  const d = defaults;
  const k = d.optimizer.kfac;
  cmd
    .option('-c, --config <file>', 'training config (YAML or JSON); flags override it')
    .option('-o, --out <dir>', 'output directory, empty or new (default: a new runs/<timestamp>)')
    .option('--force', 'with --out: replace the files of an earlier run there')
    .option('--model <name>', `built-in model: ${builtinModelNames.join(', ')} (a custom model goes in the config file)${dflt(d.model)}`)
    .addOption(new Option('--optimizer <kind>', `optimizer${dflt(d.optimizer.kind)}`).choices(['spngd', 'sgd']))
    .addOption(new Option('--backend <name>', `compute backend (auto: the fastest available)${dflt(d.backend)}`).choices(backendChoices))
    .option('--data <dir>', 'Fashion-MNIST IDX directory (default: $SPNGD_DATA, /usr/share/datasets/fashion-mnist, the bundled copy)')
    .option('--steps <n>', `optimisation steps${dflt(d.steps)}`, number('--steps'))
    .option('--batch-size <n>', `global mini-batch size${dflt(d.batchSize)}`, number('--batch-size'))
    .option(
      '--bn-group-size <n>',
      "ghost batch norm: BN normalises over groups of N consecutive samples (default: each worker's whole share)",
      number('--bn-group-size'),
    )
    .option(
      '--micro-batch <n>',
      'pass at most N samples at a time and combine them, to bound memory (BN: groups of --bn-group-size, else each micro-batch)',
      number('--micro-batch'),
    )
    .option('--lr <x>', `base learning rate, both optimizers${dflt(d.optimizer.lr)}`, number('--lr'))
    .option('--momentum <x>', `momentum${dflt(d.optimizer.momentum)}`, number('--momentum'))
    .option('--damping <x>', `K-FAC Tikhonov damping λ${dflt(k.damping)}`, number('--damping'))
    .addOption(new Option('--fisher <kind>', `Fisher estimate${dflt(k.fisher)}`).choices(['1mc', 'empirical']))
    .option('--no-stale', 'refresh every K-FAC statistic at every step')
    .option('--seed <n>', `random seed${dflt(d.seed)}`, number('--seed'))
    .option('--eval-every <n>', `evaluate on the test set every N steps${dflt(d.evalEvery)}`, number('--eval-every'))
    .option('--train-limit <n>', 'use only the first N training samples (default: all 60000)', number('--train-limit'))
    .option('--test-limit <n>', 'use only the first N test samples (default: all 10000)', number('--test-limit'))
    .option('--workers <n>', `local cluster: number of worker processes${dflt(d.cluster.workers)}`, number('--workers'))
    .option('--owners <n>', `local cluster: number of factor-owner processes (SP-NGD only)${dflt(d.cluster.owners)}`, number('--owners'))
    .option(
      '--ps-shards <n>',
      `local cluster: parameter-server processes the layers are spread over, the coordinator included${dflt(d.cluster.psShards)}`,
      number('--ps-shards'),
    )
    .option('--single', 'train in this one process instead of a local cluster')
    .option('--resume <dir>', 'continue the run in DIR from its newest good checkpoint (its config.json; flags such as --steps override it)')
    .option('--no-progress', 'plain log lines instead of a progress bar');
  return addSecurityOptions(cmd);
}

/** The config overrides that the given flags stand for (absent flags leave the file's values). */
export function flagsToOverrides(f: TrainFlags, staleFlagGiven: boolean): Record<string, unknown> {
  const kfac = {
    damping: f.damping,
    fisher: f.fisher,
    ...(staleFlagGiven ? { stale: { enabled: f.stale } } : {}),
  };
  return {
    model: f.model,
    backend: f.backend,
    seed: f.seed,
    steps: f.steps,
    batchSize: f.batchSize,
    bnGroupSize: f.bnGroupSize,
    microBatch: f.microBatch,
    evalEvery: f.evalEvery,
    data: { dir: f.data, trainLimit: f.trainLimit, testLimit: f.testLimit },
    optimizer: { kind: f.optimizer, lr: f.lr, momentum: f.momentum, kfac },
    cluster: { workers: f.workers, owners: f.owners, psShards: f.psShards },
    security: securityFromFlags(f),
  };
}
