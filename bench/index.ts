/**
 * `npm run bench -- <name> [options]`: kernels, convergence. Benchmarks print ratios against a
 * baseline measured in the same run, with min/median/max; they are never part of the tests.
 */
import { Command, Option } from 'commander';
import { selectBackend } from '../src/compute/select.js';
import { convergenceBench } from './convergence.js';
import { kernelsBench } from './kernels.js';

const program = new Command('bench').description('spngd benchmarks');

program
  .command('kernels')
  .description('GFLOP/s of matmul and XᵀX on each backend, against OpenBLAS called directly and a naive gpu.js kernel')
  .option('--repeats <n>', 'timed runs per case', '7')
  .action(async (o: { repeats: string }) => kernelsBench({ repeats: Number(o.repeats) }));

program
  .command('convergence')
  .description('steps and seconds to a target accuracy: SP-NGD against tuned SGD with momentum')
  .option('--batch-size <n>', 'global batch size', '1024')
  .option('--target <acc>', 'test accuracy target', '0.85')
  .option('--sgd-lrs <list>', 'SGD learning-rate grid', '0.05,0.1,0.2,0.4')
  .option('--eval-every <n>', 'steps between evaluations', '5')
  .option('--data <dir>', 'data directory')
  .addOption(new Option('--backend <name>').choices(['auto', 'blas', 'gpu']).default('auto'))
  .action(async (o: { batchSize: string; target: string; sgdLrs: string; evalEvery: string; data?: string; backend: 'auto' | 'blas' | 'gpu' }) => {
    const { backend } = await selectBackend(o.backend);
    try {
      await convergenceBench({
        backend,
        batchSize: Number(o.batchSize),
        target: Number(o.target),
        sgdLrs: o.sgdLrs.split(',').map(Number),
        maxSteps: { spngd: 150, sgd: 500 },
        evalEvery: Number(o.evalEvery),
        ...(o.data ? { dataDir: o.data } : {}),
      });
    } finally {
      await backend.dispose();
    }
  });

await program.parseAsync(process.argv);
