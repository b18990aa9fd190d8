/**
 * float32 values <-> little-endian bytes. Endianness is explicit: on a little-endian host the bytes
 * are copied in bulk (or viewed), on a big-endian host each value is converted through a DataView.
 */
import { status } from '@grpc/grpc-js';
import { endianness } from 'node:os';
import { TransportError } from './errors.js';
import { FLOAT32_BYTES } from './tensor-sizes.js';

const HOST_IS_LE = endianness() === 'LE';

/**
 * Little-endian bytes of `values`. With `copy` false (little-endian hosts only) the result is a view
 * sharing memory with `values`: do not modify them until every write using it has completed.
 */
export function float32ToBytes(values: Float32Array, copy = true): Buffer {
  if (HOST_IS_LE) {
    const view = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    return copy ? Buffer.from(view) : view;
  }
  const out = Buffer.allocUnsafe(values.byteLength);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < values.length; i++) dv.setFloat32(i * FLOAT32_BYTES, values[i], true);
  return out;
}

/**
 * float32 values of little-endian `bytes` (length a multiple of 4). Returns a view when the bytes
 * are 4-byte aligned on a little-endian host and `copy` is false, otherwise a copy (a Float32Array
 * cannot start at an unaligned offset).
 */
export function bytesToFloat32(bytes: Uint8Array, copy = false): Float32Array {
  if (bytes.byteLength % FLOAT32_BYTES !== 0) {
    throw new TransportError(status.INVALID_ARGUMENT, 'bad_data_length', `byte length ${bytes.byteLength} is not a multiple of 4`);
  }
  const n = bytes.byteLength / FLOAT32_BYTES;
  if (HOST_IS_LE) {
    if (!copy && bytes.byteOffset % FLOAT32_BYTES === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * FLOAT32_BYTES, true);
  return out;
}

/** Copies little-endian float32 `bytes` into `dst` starting at byte offset `dstByteOffset`. */
export function copyBytesInto(dst: Float32Array, dstByteOffset: number, bytes: Uint8Array): void {
  if (HOST_IS_LE) {
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(bytes, dstByteOffset);
    return;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = dstByteOffset / FLOAT32_BYTES;
  for (let i = 0; i < bytes.byteLength / FLOAT32_BYTES; i++) dst[first + i] = dv.getFloat32(i * FLOAT32_BYTES, true);
}
