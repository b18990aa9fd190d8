/**
 * The layers' element-wise ComputeBackend operations in plain TypeScript, as one set: what backends
 * without native versions (gpu, reference) delegate to. Each layer family's kernels live in
 * elementwise-{add,relu,max-pool,batch-norm,conv-layout}.ts: argument checks (argument-checks.ts),
 * then the loop; they reject rather than throw. The blas addon computes the same values: the same
 * float64 sums in the same order and the same roundings, so both paths give identical results.
 */
import type { ComputeBackend } from './backend.js';
import { typescriptAdd } from './elementwise-add.js';
import { typescriptBatchNorm } from './elementwise-batch-norm.js';
import { typescriptConvLayout } from './elementwise-conv-layout.js';
import { typescriptMaxPool } from './elementwise-max-pool.js';
import { typescriptRelu } from './elementwise-relu.js';

/** The layers' element-wise operations of ComputeBackend. */
export type ElementwiseKernels = Pick<
  ComputeBackend,
  | 'add'
  | 'relu'
  | 'reluBackward'
  | 'maxPool'
  | 'maxPoolBackward'
  | 'channelMoments'
  | 'batchNormForward'
  | 'batchNormSums'
  | 'batchNormInputGrad'
  | 'im2colOnes'
  | 'channelMajor'
  | 'rowsScaled'
>;

/** The TypeScript implementations as one set. */
export const TYPESCRIPT_ELEMENTWISE: ElementwiseKernels = {
  ...typescriptAdd,
  ...typescriptRelu,
  ...typescriptMaxPool,
  ...typescriptBatchNorm,
  ...typescriptConvLayout,
};
