/**
 * The `spngd` command line. Errors that a user can fix (bad config, missing data, unwritable output,
 * unreachable peers, a port in use) print one line and exit 2; anything else is a bug and prints
 * its stack.
 */
import { format } from 'node:util';
import { setLogger } from '@grpc/grpc-js';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { Command } from 'commander';
import { CheckpointError, listCheckpoints } from '../checkpoint/format.js';
import { ListenError } from '../actors/common/actor-server.js';
import { CoordinatorUnreachableError } from '../actors/common/member-client.js';
import { SecurityError } from '../actors/common/credentials.js';
import { ConfigError, loadTrainConfig } from '../config/load.js';
import type { TrainConfig } from '../config/schema.js';
import { packageRoot, resolveDataDir } from '../data/fashion-mnist.js';
import { join } from 'node:path';
import { DataFileError } from '../data/idx.js';
import { ModelSpecError } from '../nn/models.js';
import { ChildFailedError, runLocalCluster } from '../run/local-cluster.js';
import { createRunDir, openRunDir, OutputDirError, OutputWriteError, type RunOutput } from '../run/output.js';
import { runSingleProcess } from '../run/single-process.js';
import { resumeHint, watchInterrupt } from '../run/interrupt.js';
import { TrainingDivergedError } from '../train/diverged.js';
import { createLogger, envLogFormat } from '../util/log.js';
import { addReportCommands, ReportError, writeRunReport } from '../report/commands.js';
import { addActorCommands } from './actor-commands.js';
import { addCertsCommand, CertsError } from './certs-command.js';
import { addStatusCommand, UnreachableError } from './status-command.js';
import { addTrainOptions, flagsToOverrides, type TrainFlags } from './train-options.js';

/** How a run directory was trained (run.json), so that --resume continues it the same way. */
function readRunInfo(output: RunOutput): { mode: 'single' | 'cluster' } {
  try {
    const info = JSON.parse(readFileSync(output.path('run.json'), 'utf8')) as { mode?: string };
    if (info.mode === 'single' || info.mode === 'cluster') return { mode: info.mode };
  } catch {
    /* reported below */
  }
  throw new ConfigError(`${output.dir} is not a spngd run directory (no readable run.json)`);
}

const userErrors = [
  TrainingDivergedError,
  CheckpointError,
  ReportError,
  ConfigError,
  DataFileError,
  ModelSpecError,
  OutputDirError,
  OutputWriteError,
  ListenError,
  CoordinatorUnreachableError,
  UnreachableError,
  ChildFailedError,
  SecurityError,
  CertsError,
];

export async function main(argv: string[]): Promise<void> {
  // grpc-js's own log lines (e.g. "E No address added out of total 1 resolved" before a bind
  // fails with the ListenError below) go through the structured log, not as bare stderr lines.
  let grpcLog: ReturnType<typeof createLogger> | undefined;
  const log =
    (level: 'error' | 'info') =>
    (m: unknown, ...p: unknown[]) =>
      (grpcLog ??= createLogger('grpc'))[level](format(m, ...p));
  setLogger({ error: log('error'), info: log('info'), debug: log('info') });
  const program = new Command('spngd')
    .description('SP-NGD (scalable and practical natural gradient descent) training runtime')
    .version(packageVersion(), '-V, --version', 'print the spngd version')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  addTrainOptions(
    program.command('train').description('train a model: by default the Fashion-MNIST MLP with SP-NGD on a local cluster (1 PS, 2 workers, 2 owners)'),
  ).action(async (flags: TrainFlags, cmd: Command) => {
    const staleGiven = cmd.getOptionValueSource('stale') === 'cli';
    if (flags.resume && flags.config) throw new ConfigError("--resume takes the run's own config.json; use flags to change it");
    if (flags.resume && flags.out) throw new ConfigError("--resume continues in the run's directory; --out does not apply");
    if (flags.resume && flags.force) throw new ConfigError("--force replaces an earlier run's files; --resume continues the run");
    // Everything is checked before the run directory is created: a rejected command leaves nothing.
    let output: RunOutput | undefined;
    let run: { mode: 'single' | 'cluster' };
    let config: TrainConfig;
    if (flags.resume) {
      output = openRunDir(flags.resume);
      run = readRunInfo(output);
      config = loadTrainConfig(output.path('config.json'), flagsToOverrides(flags, staleGiven));
      const reached = newestCheckpointStep(output.dir);
      if (reached >= config.steps) {
        throw new ConfigError(
          `${flags.resume} already reached step ${reached} of ${config.steps}: nothing to do; add --steps N (more than ${reached}) to train it further`,
        );
      }
    } else {
      run = { mode: flags.single ? 'single' : 'cluster' };
      config = loadTrainConfig(flags.config, flagsToOverrides(flags, staleGiven));
    }
    // A bad data directory is one line here, not a child's failure reported by the launcher.
    resolveDataDir(config.data.dir === undefined ? {} : { dir: config.data.dir });
    // Only a directory this command creates is removed again when the run is rejected.
    const created = output === undefined && (flags.out === undefined || !existsSync(flags.out));
    output ??= createRunDir(flags.out, { force: flags.force === true });
    try {
      await train(output, run, config, flags);
    } catch (err) {
      // A run rejected before its first step (a bad model, security files, a port in use) leaves
      // no directory of its own behind.
      if (created && userErrors.some((E) => err instanceof E) && !existsSync(output.metricsFile)) rmSync(output.dir, { recursive: true, force: true });
      throw err;
    }
  });
  addActorCommands(program);
  addStatusCommand(program);
  addCertsCommand(program);
  addReportCommands(program);

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (userErrors.some((E) => err instanceof E)) {
      process.stderr.write(`spngd: ${(err as Error).message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** spngd's version, from its package.json. */
function packageVersion(): string {
  try {
    return String((JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

/** The step of the newest checkpoint in `dir` by its file name (0: none). */
function newestCheckpointStep(dir: string): number {
  const names = listCheckpoints(dir);
  const newest = names[names.length - 1];
  return newest === undefined ? 0 : Number(/(\d{8})/.exec(newest)?.[1] ?? 0);
}

async function train(output: RunOutput, run: { mode: 'single' | 'cluster' }, config: TrainConfig, flags: TrainFlags): Promise<void> {
  // Off a terminal (logs, pipes, CI): plain lines, as the docs promise; SPNGD_LOG_FORMAT=json for JSON.
  const logger = createLogger('spngd', { format: envLogFormat() ?? (process.stderr.isTTY === true ? 'pretty' : 'plain') });
  logger.info(`output: ${output.dir}${flags.resume ? ` (resuming a ${run.mode} run)` : ''}`);
  output.writeJson('run.json', run);
  const progress = flags.progress === false ? { progress: false } : {};
  const resume = flags.resume ? { resume: true } : {};
  let summary: Record<string, unknown>;
  if (run.mode === 'single') {
    // Ctrl-C: finish the step, write a checkpoint, summary and report, stop (a later second
    // Ctrl-C exits at once).
    let interrupted: () => void = () => undefined;
    const interrupt = new Promise<void>((r) => (interrupted = r));
    const signals = watchInterrupt(() => interrupted());
    try {
      summary = { ...(await runSingleProcess(config, { logger, output, interrupt, ...progress, ...resume })) };
    } finally {
      signals.dispose();
    }
  } else {
    summary = await runLocalCluster(config, { logger, output, ...progress, ...resume });
  }
  try {
    logger.info(`report: ${writeRunReport(output.dir)}`);
  } catch (err) {
    logger.warn(`no report: ${(err as Error).message}`);
  }
  if (summary.interrupted === true) {
    logger.info(
      `interrupted: test accuracy ${Number(summary.testAccuracy).toFixed(4)} after ${summary.steps} of ${config.steps} steps; results in ${output.dir}`,
    );
    // On a line of its own, after the logs (and after any progress bar has stopped).
    process.stderr.write(`${resumeHint(output.dir)}\n`);
    process.exitCode = 130;
  } else {
    logger.info(`done: test accuracy ${Number(summary.testAccuracy).toFixed(4)} after ${summary.steps} steps; results in ${output.dir}`);
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}
