/**
 * Sizes of tensors on the wire and the shapes each encoding allows: what the chunker and the
 * assembler both check against (the limits themselves are in limits.ts).
 */
import { status } from '@grpc/grpc-js';
import { TensorEncoding } from '../gen/spngd/v1/tensor.js';
import { TransportError } from './errors.js';
import { MAX_TENSOR_RANK } from './limits.js';

/** Bytes of one float32 value. */
export const FLOAT32_BYTES = 4;

/** n(n+1)/2: number of values in the upper triangle (diagonal included) of an n x n matrix. */
export function triangleSize(n: number): number {
  return (n * (n + 1)) / 2;
}

/** Product of the dimensions (1 for a scalar shape []). */
export function shapeSize(shape: readonly number[]): number {
  let p = 1;
  for (const d of shape) p *= d;
  return p;
}

/**
 * Number of float32 values a tensor of this shape carries on the wire: product(shape) when dense,
 * product(shape[:-2]) * n(n+1)/2 when symmetric-upper. Throws INVALID_ARGUMENT for shapes the
 * encoding does not allow.
 */
export function encodedElementCount(shape: readonly number[], encoding: TensorEncoding): number {
  checkTensorShape(shape, encoding);
  if (encoding === TensorEncoding.TENSOR_ENCODING_DENSE) return shapeSize(shape);
  const n = shape[shape.length - 1];
  return shapeSize(shape.slice(0, -2)) * triangleSize(n);
}

/** Bytes of a tensor's payload: 4 * encodedElementCount. */
export function encodedByteLength(shape: readonly number[], encoding: TensorEncoding): number {
  return encodedElementCount(shape, encoding) * FLOAT32_BYTES;
}

/** Throws INVALID_ARGUMENT for an unknown encoding or a shape it does not allow (rank, dimensions < 1, not [..., n, n]). */
function checkTensorShape(shape: readonly number[], encoding: TensorEncoding): void {
  if (encoding !== TensorEncoding.TENSOR_ENCODING_DENSE && encoding !== TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER) {
    throw new TransportError(status.INVALID_ARGUMENT, 'bad_encoding', `unsupported tensor encoding ${encoding}`);
  }
  if (shape.length > MAX_TENSOR_RANK) {
    throw new TransportError(status.INVALID_ARGUMENT, 'bad_shape', `shape [${shape}] has more than ${MAX_TENSOR_RANK} dimensions`);
  }
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 1) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_shape', `shape [${shape}] has a dimension < 1`);
    }
  }
  if (encoding === TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER) {
    if (shape.length < 2 || shape[shape.length - 1] !== shape[shape.length - 2]) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_shape', `symmetric-upper tensor needs shape [..., n, n], got [${shape}]`);
    }
  }
}
