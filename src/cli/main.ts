/**
 * The `spngd` command line. Errors that a user can fix (bad config, missing data, unwritable output,
 * unreachable peers, a port in use) print one line and exit 2; anything else is a bug and prints
 * its stack.
 */
import { format } from 'node:util';
import { setLogger } from '@grpc/grpc-js';
import { Command } from 'commander';
import { ListenError } from '../actors/common/actor-server.js';
import { CoordinatorUnreachableError } from '../actors/common/member-client.js';
import { ConfigError, loadTrainConfig } from '../config/load.js';
import { resolveDataDir } from '../data/fashion-mnist.js';
import { DataFileError } from '../data/idx.js';
import { ModelSpecError } from '../nn/models.js';
import { ChildFailedError, runLocalCluster } from '../run/local-cluster.js';
import { defaultRunDir, OutputDirError, RunOutput } from '../run/output.js';
import { runSingleProcess } from '../run/single-process.js';
import { createLogger } from '../util/log.js';
import { addActorCommands } from './actor-commands.js';
import { addStatusCommand, UnreachableError } from './status-command.js';
import { addTrainOptions, flagsToOverrides, type TrainFlags } from './train-options.js';

const userErrors = [ConfigError, DataFileError, ModelSpecError, OutputDirError, ListenError, CoordinatorUnreachableError, UnreachableError, ChildFailedError];

export async function main(argv: string[]): Promise<void> {
  // grpc-js's own log lines (e.g. "E No address added out of total 1 resolved" before a bind
  // fails with the ListenError below) go through the structured log, not as bare stderr lines.
  let grpcLog: ReturnType<typeof createLogger> | undefined;
  const log = (level: 'error' | 'info') => (m: unknown, ...p: unknown[]) => (grpcLog ??= createLogger('grpc'))[level](format(m, ...p));
  setLogger({ error: log('error'), info: log('info'), debug: log('info') });
  const program = new Command('spngd')
    .description('SP-NGD (scalable and practical natural gradient descent) training runtime')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  addTrainOptions(
    program.command('train').description('train a model: by default the Fashion-MNIST MLP with SP-NGD on a local cluster (1 PS, 2 workers, 2 owners)'),
  ).action(async (flags: TrainFlags, cmd: Command) => {
    const staleGiven = cmd.getOptionValueSource('stale') === 'cli';
    const config = loadTrainConfig(flags.config, flagsToOverrides(flags, staleGiven));
    // A bad data directory is one line here, not a child's failure reported by the launcher.
    resolveDataDir(config.data.dir === undefined ? {} : { dir: config.data.dir });
    const logger = createLogger('spngd');
    const output = new RunOutput(flags.out ?? defaultRunDir());
    logger.info(`output: ${output.dir}`);
    const progress = flags.progress === false ? { progress: false } : {};
    const summary = flags.single
      ? await runSingleProcess(config, { logger, output, ...progress })
      : await runLocalCluster(config, { logger, output, ...progress });
    logger.info(`done: test accuracy ${Number(summary.testAccuracy).toFixed(4)} after ${summary.steps} steps; results in ${output.dir}`);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  });
  addActorCommands(program);
  addStatusCommand(program);

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
