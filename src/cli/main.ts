/**
 * The `spngd` command line. Errors that a user can fix (bad config, missing data, unwritable output)
 * print one line and exit 2; anything else is a bug and prints its stack.
 */
import { Command } from 'commander';
import { ConfigError, loadTrainConfig } from '../config/load.js';
import { DataFileError } from '../data/idx.js';
import { ModelSpecError } from '../nn/models.js';
import { defaultRunDir, OutputDirError, RunOutput } from '../run/output.js';
import { runSingleProcess } from '../run/single-process.js';
import { createLogger } from '../util/log.js';
import { addTrainOptions, flagsToOverrides, type TrainFlags } from './train-options.js';

const userErrors = [ConfigError, DataFileError, ModelSpecError, OutputDirError];

export async function main(argv: string[]): Promise<void> {
  const program = new Command('spngd')
    .description('SP-NGD (scalable and practical natural gradient descent) training runtime')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  addTrainOptions(program.command('train').description('train a model (default: Fashion-MNIST MLP with SP-NGD)')).action(
    async (flags: TrainFlags, cmd: Command) => {
      const staleGiven = cmd.getOptionValueSource('stale') === 'cli';
      const config = loadTrainConfig(flags.config, flagsToOverrides(flags, staleGiven));
      const logger = createLogger('spngd');
      const output = new RunOutput(flags.out ?? defaultRunDir());
      logger.info(`output: ${output.dir}`);
      const summary = await runSingleProcess(config, { logger, output, ...(flags.progress === false ? { progress: false } : {}) });
      logger.info(summary, `done: test accuracy ${summary.testAccuracy.toFixed(4)} after ${summary.steps} steps, ${summary.wallSeconds.toFixed(1)} s`);
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    },
  );

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
