/**
 * Sending tensors: `chunkTensor` splits float32 values into TensorChunk messages of at most
 * `chunkBytes` bytes of raw little-endian data; `chunkSymmetric` first packs a symmetric matrix (or
 * a batch of them) into upper triangles.
 */
import { type TensorChunk, TensorEncoding } from '../gen/spngd/v1/tensor.js';
import { float32ToBytes } from './float-bytes.js';
import { DEFAULT_CHUNK_BYTES, MAX_TENSOR_NAME_LENGTH } from './limits.js';
import { encodedElementCount, FLOAT32_BYTES } from './tensor-sizes.js';
import { packUpperTriangle } from './upper-triangle.js';

/** Options of chunkTensor / chunkSymmetric. */
export interface ChunkOptions {
  /** Version stamp (step or preconditioner version). Default 0. */
  version?: number;
  /** Maximum data bytes per chunk; a multiple of 4, >= 4. Default DEFAULT_CHUNK_BYTES. */
  chunkBytes?: number;
  /**
   * Default true: every chunk owns a copy of its bytes, so `values` may be modified as soon as the
   * generator has produced the chunk. false: chunks are views of `values` (little-endian hosts), so
   * `values` must stay unchanged until every write of every chunk has completed (grpc-js
   * serializes lazily; see flow.ts).
   */
  copy?: boolean;
}

/** Number of chunks a payload of totalBytes bytes is split into. */
export function chunkCountFor(totalBytes: number, chunkBytes = DEFAULT_CHUNK_BYTES): number {
  checkChunkBytes(chunkBytes);
  return Math.max(1, Math.ceil(totalBytes / chunkBytes));
}

function checkChunkBytes(chunkBytes: number): void {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < FLOAT32_BYTES || chunkBytes % FLOAT32_BYTES !== 0) {
    throw new RangeError(`chunkBytes must be a positive multiple of 4, got ${chunkBytes}`);
  }
}

/**
 * Splits encoded float32 values into TensorChunk messages, lazily (one chunk per iteration).
 * `values.length` must equal encodedElementCount(shape, encoding).
 */
export function* chunkTensor(
  name: string,
  values: Float32Array,
  shape: readonly number[],
  encoding: TensorEncoding = TensorEncoding.TENSOR_ENCODING_DENSE,
  options: ChunkOptions = {},
): Generator<TensorChunk, void, undefined> {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const copy = options.copy ?? true;
  const version = options.version ?? 0;
  checkChunkBytes(chunkBytes);
  if (name.length === 0 || name.length > MAX_TENSOR_NAME_LENGTH) {
    throw new RangeError(`tensor name must have 1..${MAX_TENSOR_NAME_LENGTH} characters`);
  }
  if (!Number.isSafeInteger(version) || version < 0) throw new RangeError(`bad version ${version}`);
  const expected = encodedElementCount(shape, encoding);
  if (values.length !== expected) {
    throw new RangeError(`tensor ${name}: shape [${shape}] (${TensorEncoding[encoding]}) needs ${expected} values, got ${values.length}`);
  }
  const totalBytes = values.byteLength;
  const chunkCount = chunkCountFor(totalBytes, chunkBytes);
  const perChunk = chunkBytes / FLOAT32_BYTES;
  const shapeCopy = [...shape];
  for (let i = 0; i < chunkCount; i++) {
    const part = values.subarray(i * perChunk, Math.min(values.length, (i + 1) * perChunk));
    yield {
      name,
      shape: shapeCopy,
      encoding,
      version,
      chunkIndex: i,
      chunkCount,
      totalBytes,
      offsetBytes: i * chunkBytes,
      data: float32ToBytes(part, copy),
    };
  }
}

/**
 * Packs `batch` symmetric n x n matrices (row-major; only the upper triangle is read) and chunks them
 * with the symmetric-upper encoding, shape [n, n] (batch 1) or [batch, n, n].
 */
export function chunkSymmetric(
  name: string,
  matrix: ArrayLike<number>,
  n: number,
  options: ChunkOptions & { batch?: number } = {},
): Generator<TensorChunk, void, undefined> {
  const batch = options.batch ?? 1;
  const packed = packUpperTriangle(matrix, n, batch);
  const shape = batch === 1 && options.batch === undefined ? [n, n] : [batch, n, n];
  // `packed` is private to this call, so the chunks may view it without copying.
  return chunkTensor(name, packed, shape, TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER, { ...options, copy: false });
}

/** Data bytes of a chunk plus a fixed allowance for its header: what a byte budget should count. */
export function chunkWireBytes(chunk: TensorChunk): number {
  return chunk.data.byteLength + 64 + chunk.name.length + 5 * chunk.shape.length;
}
