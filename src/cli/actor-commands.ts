/**
 * `spngd ps`, `spngd worker`, `spngd owner`: one actor per process, on its own host if need be.
 * Each prints one JSON line on stdout when it listens ({"event":"listening",...}) so that a
 * launcher (or a script) learns its address, then logs to stderr.
 */
import { type Command, Option } from 'commander';
import { FactorOwner } from '../actors/owner/factor-owner.js';
import { ParameterServer } from '../actors/ps/parameter-server.js';
import { PsShard } from '../actors/ps/ps-shard.js';
import { type BackendChoice, backendChoices, type ComputeBackend } from '../compute/backend.js';
import { selectBackend } from '../../workers/kernels/select.js';
import { canonicalConfig, checkAgainstData, ConfigError, configDifferences, loadTrainConfig } from '../config/load.js';
import type { TrainConfig } from '../config/schema.js';
import { existsSync } from 'node:fs';
import { SPLIT_FILES, findIdxFile, loadSplit, resolveDataDir } from '../data/fashion-mnist.js';
import { readIdxLabels } from '../data/idx.js';
import { RunOutput } from '../run/output.js';
import { createLogger, type Logger } from '../util/log.js';
import { Worker } from '../../workers/worker-actor.js';
import { DataFileError } from '../data/idx.js';
import { positiveNumber } from './option-parsers.js';
import { actorCredentials, addSecurityOptions, securityFromFlags, type SecurityFlags } from './security-options.js';

function announce(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

/**
 * A child of `spngd train`'s local cluster (SPNGD_CHILD=1) runs in a process group of its own, so
 * a terminal's Ctrl-C does not reach it; the launcher holds its stdin open, and the end of stdin
 * means the launcher is gone: `onGone` then stops the actor as a signal would.
 */
function watchLauncher(onGone: () => void): void {
  if (process.env.SPNGD_CHILD !== '1' || process.stdin.isTTY) return;
  process.stdin.on('data', () => undefined);
  process.stdin.on('end', onGone);
  process.stdin.on('error', onGone);
  // Reading stdin must not keep the actor alive once its work is done.
  (process.stdin as unknown as { unref?: () => void }).unref?.();
}

/** Stops the actor on SIGINT/SIGTERM (the second signal exits at once). */
function onSignals(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (sig: NodeJS.Signals | 'launcher gone') => {
    if (stopping) {
      if (sig === 'launcher gone') return;
      process.exit(130);
    }
    stopping = true;
    logger.info(`${sig}: shutting down`);
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  watchLauncher(() => handler('launcher gone'));
}

const backendOption = () => new Option('--backend <name>', 'compute backend').choices(backendChoices).default('auto');

/** Selects the compute backend and says which and why (in the log and in the listening event). */
async function startBackend(name: BackendChoice, logger: Logger): Promise<{ backend: ComputeBackend; backendEvent: Record<string, string> }> {
  const { backend, reason } = await selectBackend(name);
  logger.info(`backend: ${backend.name}: ${backend.description} (${reason})`);
  return { backend, backendEvent: { backend: backend.name, backendDescription: backend.description, backendReason: reason } };
}

/** What workers and owners share: the PS they join, their own address and id, security. */
interface MemberFlags extends SecurityFlags {
  ps: string;
  listen: string;
  id?: string;
  joinTimeout: number;
  advertise?: string;
  backend: BackendChoice;
}

/** A member's logger, credentials and backend, and the options every member actor takes from its flags. */
async function startMember(role: string, o: MemberFlags) {
  const logger = createLogger(role);
  const credentials = actorCredentials(securityFromFlags(o), logger, o.listen);
  const { backend, backendEvent } = await startBackend(o.backend, logger);
  const options = {
    listen: o.listen,
    logger,
    backend,
    credentials,
    joinTimeoutMs: o.joinTimeout,
    ...(o.id ? { id: o.id } : {}),
    ...(o.advertise ? { advertise: o.advertise } : {}),
  };
  return { logger, backend, backendEvent, options };
}

function memberCommand(program: Command, name: string, description: string, listenHelp: string): Command {
  return addSecurityOptions(
    program
      .command(name)
      .description(description)
      .requiredOption('--ps <host:port>', 'the parameter server')
      .option('--listen <host:port>', listenHelp, '127.0.0.1:0')
      .option('--id <id>', `${name} id (default: assigned by the PS)`)
      .option('--advertise <host:port>', "address to register with the PS when others reach this one by another (a proxy, NAT, a Service); default: --listen's")
      .option('--join-timeout <ms>', 'how long to keep trying to reach the PS at startup', positiveNumber('--join-timeout'), 15000)
      .addOption(backendOption()),
  );
}

/**
 * The PS's job config: --config (or the defaults) for a new job; for --resume the one recorded in
 * --out (config.json), and a --config that differs from it only with --force.
 */
function psConfig(
  o: SecurityFlags & { config?: string; data?: string; resume?: boolean; force?: boolean },
  output: RunOutput | undefined,
  logger: Logger,
): TrainConfig {
  const overrides = { ...(o.data ? { data: { dir: o.data } } : {}), security: securityFromFlags(o) };
  const recordedFile = output?.path('config.json');
  if (!o.resume || !recordedFile) return loadTrainConfig(o.config, overrides);
  if (!existsSync(recordedFile)) {
    if (!o.config) throw new ConfigError(`--resume: ${recordedFile} does not exist (a run of an older spngd ps); give the job's --config`);
    return loadTrainConfig(o.config, overrides);
  }
  const recorded = loadTrainConfig(recordedFile, overrides);
  if (!o.config) {
    logger.info(`resuming with the job config recorded in ${recordedFile}`);
    return recorded;
  }
  const given = loadTrainConfig(o.config, overrides);
  if (canonicalConfig(given) === canonicalConfig(recorded)) return recorded;
  const diff = configDifferences(recorded, given).join(', ');
  if (!o.force)
    throw new ConfigError(
      `--resume: ${o.config} differs from the config recorded in ${recordedFile}: ${diff}; leave out --config to continue the recorded job, or add --force to use ${o.config}`,
    );
  logger.warn(`--force: resuming with ${o.config}, which differs from the recorded config: ${diff}`);
  return given;
}

export function addActorCommands(program: Command): void {
  addSecurityOptions(
    program
      .command('ps')
      .description('run the parameter server (and membership coordinator) of a job')
      .requiredOption('--listen <host:port>', 'address to serve on (port 0: any free port)')
      .option('-c, --config <file>', 'training config (YAML or JSON)')
      .option('-o, --out <dir>', 'write metrics.jsonl and summary.json here')
      .option('--data <dir>', 'Fashion-MNIST directory for evaluation')
      .option('--resume', 'continue from the newest good checkpoint in --out, with the job config recorded there (config.json)')
      .option('--force', 'with --resume: use --config even though it differs from the recorded one')
      .addOption(backendOption()),
  ).action(
    async (o: SecurityFlags & { listen: string; config?: string; out?: string; data?: string; resume?: boolean; force?: boolean; backend: BackendChoice }) => {
      const logger = createLogger('ps');
      if (o.resume && !o.out) throw new ConfigError('--resume needs --out, the run directory to continue');
      const output = o.out ? new RunOutput(o.out) : undefined;
      const config = psConfig(o, output, logger);
      const credentials = actorCredentials(config.security, logger, o.listen);
      const dataOpts = config.data.dir ? { dir: config.data.dir } : {};
      const test = await loadSplit('test', { ...dataOpts, ...(config.data.testLimit ? { limit: config.data.testLimit } : {}) });
      const dataDir = resolveDataDir(dataOpts);
      const trainLabels = findIdxFile(dataDir.dir, SPLIT_FILES.train.labels);
      if (!trainLabels) throw new DataFileError(dataDir.dir, 'no train-labels-idx1-ubyte[.gz] here');
      const trainCount = (await readIdxLabels(trainLabels)).count;
      const trainSize = Math.min(trainCount, config.data.trainLimit ?? trainCount);
      checkAgainstData(config, trainSize);
      // What this job is, for --resume and for the report (like spngd train).
      output?.writeJson('config.json', config);
      const { backend, backendEvent } = await startBackend(config.backend, logger);
      const ps = new ParameterServer({
        config,
        listen: o.listen,
        logger,
        backend,
        test,
        trainSize,
        ...(output ? { onRecord: (r) => output.appendMetric(r), checkpointDir: output.dir } : {}),
        ...(o.resume ? { resume: true } : {}),
        credentials,
      });
      const address = await ps.start();
      logger.info(`parameter server listening on ${address}; waiting for ${config.cluster.minWorkers} worker(s)`);
      announce({ event: 'listening', role: 'ps', address, ...backendEvent });
      // A signal ends training after the current step, with a checkpoint (the second one exits at once).
      let signalled = false;
      const onSignal = (sig: NodeJS.Signals | 'launcher gone') => {
        if (signalled) {
          if (sig === 'launcher gone') return;
          process.exit(130);
        }
        signalled = true;
        logger.info(`${sig}: stopping after the current step`);
        ps.requestStop();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      watchLauncher(() => onSignal('launcher gone'));
      await ps.run();
      if (ps.outputError) {
        // metrics.jsonl could not be written: training stopped after a step (with a checkpoint if
        // the disk allowed one); end with the one line that says why.
        await ps.stop();
        await backend.dispose();
        throw ps.outputError;
      }
      // A stop between evaluations: the step reached is evaluated first, so the summary and report show it.
      const summary = await ps.summary({
        backend: backend.name,
        data: `Fashion-MNIST from ${dataDir.dir} (${dataDir.source}): ${trainSize} train, ${test.n} test`,
      });
      output?.writeJson('summary.json', summary);
      announce({ event: 'finished', ...summary });
      await ps.stop();
      await backend.dispose();
    },
  );

  memberCommand(program, 'worker', 'run a worker: computes gradients and K-FAC statistics on its data shard', "address of this worker's state service")
    .option('--data <dir>', "Fashion-MNIST directory (default: the job config's, $SPNGD_DATA, ...)")
    .action(async (o: MemberFlags & { data?: string }) => {
      const { logger, backend, backendEvent, options } = await startMember('worker', o);
      const w = new Worker({ ...options, ps: o.ps, ...(o.data ? { dataDir: o.data } : {}) });
      onSignals(logger, () => w.stop());
      await w.start();
      announce({ event: 'listening', role: 'worker', id: w.id, address: w.state.address, ...backendEvent });
      const why = await w.done.promise;
      logger.info(`worker ${w.id} done: ${why}`);
      await w.stop();
      await backend.dispose();
    });

  memberCommand(
    program,
    'ps-shard',
    'run a parameter-server shard: holds the layers the PS (the coordinator, cluster.psShards) gives it, reduces their gradients, applies their update',
    'address workers send gradients to',
  ).action(async (o: MemberFlags) => {
    const { logger, backend, backendEvent, options } = await startMember('ps-shard', o);
    const shard = new PsShard({ ...options, coordinator: o.ps });
    onSignals(logger, () => shard.stop());
    const address = await shard.start();
    announce({ event: 'listening', role: 'ps-shard', id: shard.id, address, ...backendEvent });
    const why = await shard.finished.promise;
    logger.info(`PS shard ${shard.id} done: ${why}`);
    await shard.stop();
    await backend.dispose();
  });

  memberCommand(program, 'owner', 'run a factor owner: reduces statistics, inverts factors, publishes preconditioners', 'address workers send statistics to')
    .option('--capacity <x>', 'relative speed for load balancing', positiveNumber('--capacity'), 1)
    .action(async (o: MemberFlags & { capacity: number }) => {
      const { logger, backendEvent, options } = await startMember('owner', o);
      const owner = new FactorOwner({ ...options, ps: o.ps, capacity: o.capacity });
      onSignals(logger, () => owner.leave('shutdown'));
      await owner.start();
      announce({ event: 'listening', role: 'owner', id: owner.id, address: owner.address, ...backendEvent });
    });
}
