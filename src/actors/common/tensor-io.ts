/**
 * Sending named tensors over a stream as chunk messages under a byte budget, and the one-line
 * wrappers the actors use to build the envelope of each chunk.
 */
import { TensorEncoding, type TensorChunk } from '../../gen/spngd/v1/tensor.js';
import type { ByteBudgetWriter } from '../../transport/flow.js';
import { chunkSymmetric, chunkTensor, chunkWireBytes } from '../../transport/tensor-chunker.js';

/** Options of sendDense. */
export interface SendOptions {
  /**
   * Default true: each chunk carries its own copy of its bytes, so `values` may change as soon as
   * sendDense resolves. false: no copy; the chunks are views of `values`, which the serializer
   * reads when grpc-js gets to each message (lazily, possibly after sendDense resolved). The
   * caller then guarantees that `values` stay unchanged until every write has completed: until
   * `writer.flush()`/`end()` resolves, or the peer has received the chunks, or the stream failed.
   * Safe for private snapshots and for arrays that are never written again (a fresh copy per
   * step); not for live model parameters that are updated while a stream may still be sending.
   */
  copy?: boolean;
}

/** Writes every chunk of a dense tensor, wrapped by `wrap`; resolves when all are handed over. */
export async function sendDense<T>(
  writer: ByteBudgetWriter<T>,
  wrap: (chunk: TensorChunk) => T,
  name: string,
  values: Float32Array,
  shape: number[],
  version: number,
  chunkBytes: number,
  options: SendOptions = {},
): Promise<void> {
  const copy = options.copy ?? true;
  for (const chunk of chunkTensor(name, values, shape, TensorEncoding.TENSOR_ENCODING_DENSE, { version, chunkBytes, copy })) {
    await writer.write(wrap(chunk), chunkWireBytes(chunk));
  }
}

/**
 * Writes a symmetric n×n matrix (or `batch` of them) as upper triangles. The triangles are packed
 * synchronously, when this is called, into a private array that the chunks view (no further copy),
 * so `matrix` may change as soon as the call returns its promise.
 */
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
