/**
 * Sending named tensors over a stream as chunk messages under a byte budget, and the one-line
 * wrappers the actors use to build the envelope of each chunk.
 */
import { TensorEncoding, type TensorChunk } from '../../gen/spngd/v1/tensor.js';
import type { ByteBudgetWriter } from '../../transport/flow.js';
import { chunkSymmetric, chunkTensor, chunkWireBytes } from '../../transport/tensor-codec.js';

/** Writes every chunk of a dense tensor, wrapped by `wrap`; resolves when all are handed over. */
export async function sendDense<T>(
  writer: ByteBudgetWriter<T>,
  wrap: (chunk: TensorChunk) => T,
  name: string,
  values: Float32Array,
  shape: number[],
  version: number,
  chunkBytes: number,
): Promise<void> {
  for (const chunk of chunkTensor(name, values, shape, TensorEncoding.TENSOR_ENCODING_DENSE, { version, chunkBytes })) {
    await writer.write(wrap(chunk), chunkWireBytes(chunk));
  }
}

/** Writes a symmetric n×n matrix (or `batch` of them) as upper triangles. */
export async function sendSymmetric<T>(
  writer: ByteBudgetWriter<T>,
  wrap: (chunk: TensorChunk) => T,
  name: string,
  matrix: ArrayLike<number>,
  n: number,
  version: number,
  chunkBytes: number,
  batch?: number,
): Promise<void> {
  const opts = batch === undefined ? { version, chunkBytes } : { version, chunkBytes, batch };
  for (const chunk of chunkSymmetric(name, matrix, n, opts)) {
    await writer.write(wrap(chunk), chunkWireBytes(chunk));
  }
}
