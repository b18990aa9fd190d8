/**
 * Tensors <-> TensorChunk messages.
 *
 * Sending: `chunkTensor` splits float32 values into chunks of at most `chunkBytes` bytes of raw
 * little-endian data; `chunkSymmetric` first packs a symmetric matrix (or a batch of them) into
 * upper triangles. Receiving: a `TensorAssembler` validates every chunk that comes off the network
 * and reassembles tensors, throwing a TransportError with the status code to answer with.
 *
 * Endianness is explicit: on a little-endian host the bytes are copied in bulk, on a big-endian
 * host each value is converted through a DataView.
 */
import { status } from '@grpc/grpc-js';
import { endianness } from 'node:os';

import { type TensorChunk, TensorEncoding } from '../gen/spngd/v1/tensor.js';
import { TransportError } from './errors.js';
import {
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_PENDING_BYTES,
  DEFAULT_MAX_PENDING_TENSORS,
  DEFAULT_MAX_TENSOR_BYTES,
  MAX_TENSOR_NAME_LENGTH,
  MAX_TENSOR_RANK,
} from './limits.js';

export { TensorEncoding };
export type { TensorChunk };

const HOST_IS_LE = endianness() === 'LE';
const F32 = 4;

// ---------------------------------------------------------------------------------------------
// Sizes and encodings
// ---------------------------------------------------------------------------------------------

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
  checkShape(shape, encoding);
  if (encoding === TensorEncoding.TENSOR_ENCODING_DENSE) return shapeSize(shape);
  const n = shape[shape.length - 1];
  return shapeSize(shape.slice(0, -2)) * triangleSize(n);
}

/** Bytes of a tensor's payload: 4 * encodedElementCount. */
export function encodedByteLength(shape: readonly number[], encoding: TensorEncoding): number {
  return encodedElementCount(shape, encoding) * F32;
}

function checkShape(shape: readonly number[], encoding: TensorEncoding): void {
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

// ---------------------------------------------------------------------------------------------
// Upper-triangle packing
// ---------------------------------------------------------------------------------------------

/**
 * Packs the upper triangles (row-major, diagonal included) of `batch` consecutive n x n row-major
 * matrices into n(n+1)/2 values each. Only the upper triangle of the input is read, so the input
 * need not be exactly symmetric (a lower triangle that differs by rounding is ignored).
 */
export function packUpperTriangle(matrix: ArrayLike<number>, n: number, batch = 1, out?: Float32Array): Float32Array {
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(batch) || batch < 1) {
    throw new RangeError(`packUpperTriangle: bad n=${n} or batch=${batch}`);
  }
  if (matrix.length !== batch * n * n) {
    throw new RangeError(`packUpperTriangle: expected ${batch}x${n}x${n} values, got ${matrix.length}`);
  }
  const t = triangleSize(n);
  const packed = out ?? new Float32Array(batch * t);
  if (packed.length !== batch * t) throw new RangeError(`packUpperTriangle: out has ${packed.length} values, need ${batch * t}`);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * n * n;
    for (let i = 0; i < n; i++) {
      const row = base + i * n;
      for (let j = i; j < n; j++) packed[k++] = matrix[row + j];
    }
  }
  return packed;
}

/**
 * Inverse of packUpperTriangle: expands `batch` packed upper triangles into full symmetric n x n
 * row-major matrices (into `out` if given, e.g. a Float64Array for float64 inversion).
 */
export function unpackUpperTriangle<T extends Float32Array | Float64Array = Float32Array>(packed: ArrayLike<number>, n: number, batch = 1, out?: T): T {
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(batch) || batch < 1) {
    throw new RangeError(`unpackUpperTriangle: bad n=${n} or batch=${batch}`);
  }
  const t = triangleSize(n);
  if (packed.length !== batch * t) {
    throw new RangeError(`unpackUpperTriangle: expected ${batch}x${t} values, got ${packed.length}`);
  }
  const full = (out ?? new Float32Array(batch * n * n)) as T;
  if (full.length !== batch * n * n) throw new RangeError(`unpackUpperTriangle: out has ${full.length} values, need ${batch * n * n}`);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * n * n;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const v = packed[k++];
        full[base + i * n + j] = v;
        full[base + j * n + i] = v;
      }
    }
  }
  return full;
}

// ---------------------------------------------------------------------------------------------
// float32 <-> little-endian bytes
// ---------------------------------------------------------------------------------------------

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
  for (let i = 0; i < values.length; i++) dv.setFloat32(i * F32, values[i], true);
  return out;
}

/**
 * float32 values of little-endian `bytes` (length a multiple of 4). Returns a view when the bytes
 * are 4-byte aligned on a little-endian host and `copy` is false, otherwise a copy (a Float32Array
 * cannot start at an unaligned offset).
 */
export function bytesToFloat32(bytes: Uint8Array, copy = false): Float32Array {
  if (bytes.byteLength % F32 !== 0) {
    throw new TransportError(status.INVALID_ARGUMENT, 'bad_data_length', `byte length ${bytes.byteLength} is not a multiple of 4`);
  }
  const n = bytes.byteLength / F32;
  if (HOST_IS_LE) {
    if (!copy && bytes.byteOffset % F32 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * F32, true);
  return out;
}

/** Copies little-endian float32 `bytes` into `dst` starting at byte offset `dstByteOffset`. */
function copyBytesInto(dst: Float32Array, dstByteOffset: number, bytes: Uint8Array): void {
  if (HOST_IS_LE) {
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(bytes, dstByteOffset);
    return;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = dstByteOffset / F32;
  for (let i = 0; i < bytes.byteLength / F32; i++) dst[first + i] = dv.getFloat32(i * F32, true);
}

// ---------------------------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------------------------

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
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < F32 || chunkBytes % F32 !== 0) {
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
  const perChunk = chunkBytes / F32;
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

/**
 * Checks an envelope's tensor: present, and stamped with the envelope's step or version (e.g.
 * `GradientChunk.step == tensor.version`). Returns it; throws INVALID_ARGUMENT otherwise.
 *
 * ```ts
 * const done = assembler.push(envelopeTensor(m.tensor, m.step, "GradientChunk.step"));
 * ```
 */
export function envelopeTensor(tensor: TensorChunk | undefined, version: number, field = 'step'): TensorChunk {
  if (tensor === undefined || tensor === null) {
    throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `message without tensor (${field} ${version})`);
  }
  if (tensor.version !== version) {
    throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `tensor ${tensor.name}: version ${tensor.version} differs from ${field} ${version}`);
  }
  return tensor;
}

/** Data bytes of a chunk plus a fixed allowance for its header: what a byte budget should count. */
export function chunkWireBytes(chunk: TensorChunk): number {
  return chunk.data.byteLength + 64 + chunk.name.length + 5 * chunk.shape.length;
}

// ---------------------------------------------------------------------------------------------
// Reassembly
// ---------------------------------------------------------------------------------------------

/** A completely received tensor. */
export interface AssembledTensor {
  name: string;
  shape: number[];
  encoding: TensorEncoding;
  version: number;
  /**
   * The encoded values as sent: product(shape) values when dense, packed upper triangles when
   * symmetric-upper (expand with unpackUpperTriangle or `toDense`).
   */
  values: Float32Array;
  /** Number of chunks it arrived in. */
  chunkCount: number;
  /** Payload bytes. */
  totalBytes: number;
}

/**
 * The full (dense) values of an assembled tensor: unpacks symmetric-upper tensors into full
 * symmetric matrices; returns dense tensors' values unchanged.
 */
export function toDense(t: AssembledTensor): Float32Array {
  if (t.encoding === TensorEncoding.TENSOR_ENCODING_DENSE) return t.values;
  const n = t.shape[t.shape.length - 1];
  return unpackUpperTriangle(t.values, n, shapeSize(t.shape.slice(0, -2)));
}

/** Options of a TensorAssembler. */
export interface AssemblerOptions {
  /** Largest declared tensor accepted (bytes); larger ones get RESOURCE_EXHAUSTED. */
  maxTensorBytes?: number;
  /** Largest sum of declared sizes of tensors being assembled at once (bytes). */
  maxPendingBytes?: number;
  /** Most tensors being assembled at once (interleaved on the stream). */
  maxPendingTensors?: number;
}

interface Pending {
  readonly first: TensorChunk;
  readonly values: Float32Array;
  nextIndex: number;
  receivedBytes: number;
}

/**
 * Reassembles tensors from the TensorChunks of one stream, validating everything (the sender is
 * untrusted). Each `push` either returns the completed tensor, returns undefined (more chunks to
 * come), or throws a TransportError:
 *
 * - INVALID_ARGUMENT: malformed chunk (empty name, unknown encoding, bad shape, chunk_index out of
 *   range, chunk_count impossible for the size, total_bytes disagreeing with shape, data length
 *   not a multiple of 4 or empty, offset not contiguous, data running past total_bytes or ending
 *   short of it, header fields differing from the tensor's first chunk);
 * - FAILED_PRECONDITION: sequence errors (a chunk index skipped = gap, an index already received =
 *   duplicate, a tensor left incomplete at `assertComplete`, use after `close`);
 * - RESOURCE_EXHAUSTED: declared size above maxTensorBytes, or too many / too large tensors being
 *   assembled at once.
 *
 * After an error the stream should be failed with that status; the assembler drops the offending
 * tensor but keeps the others.
 */
export class TensorAssembler {
  readonly maxTensorBytes: number;
  readonly maxPendingBytes: number;
  readonly maxPendingTensors: number;
  private readonly pending = new Map<string, Pending>();
  private pendingBytesTotal = 0;
  private closed = false;

  constructor(options: AssemblerOptions = {}) {
    this.maxTensorBytes = options.maxTensorBytes ?? DEFAULT_MAX_TENSOR_BYTES;
    this.maxPendingBytes = options.maxPendingBytes ?? Math.max(DEFAULT_MAX_PENDING_BYTES, this.maxTensorBytes);
    this.maxPendingTensors = options.maxPendingTensors ?? DEFAULT_MAX_PENDING_TENSORS;
  }

  /** Number of tensors partially received. */
  get pendingTensors(): number {
    return this.pending.size;
  }

  /** Sum of the declared sizes of partially received tensors (memory reserved). */
  get pendingBytes(): number {
    return this.pendingBytesTotal;
  }

  /** Names of partially received tensors. */
  pendingNames(): string[] {
    return [...this.pending.keys()];
  }

  /** Validates a chunk and adds it; returns the tensor when this chunk completes it. */
  push(chunk: TensorChunk): AssembledTensor | undefined {
    if (this.closed) throw new TransportError(status.FAILED_PRECONDITION, 'closed', 'tensor assembler is closed');
    const name = chunk.name;
    if (typeof name !== 'string' || name.length === 0 || name.length > MAX_TENSOR_NAME_LENGTH) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `tensor name must have 1..${MAX_TENSOR_NAME_LENGTH} characters`);
    }
    const data = chunk.data;
    if (!(data instanceof Uint8Array)) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_data_length', `tensor ${name}: chunk has no data`);
    }
    const p = this.pending.get(name);
    try {
      return p === undefined ? this.start(chunk) : this.continue(p, chunk);
    } catch (err) {
      if (p !== undefined) this.drop(name);
      throw err;
    }
  }

  /** Throws FAILED_PRECONDITION if a tensor is partially received (call at end of stream or step). */
  assertComplete(): void {
    if (this.pending.size === 0) return;
    const parts = [...this.pending.values()].map((p) => `${p.first.name} (${p.nextIndex}/${p.first.chunkCount} chunks)`);
    throw new TransportError(status.FAILED_PRECONDITION, 'incomplete', `incomplete tensors at end of stream: ${parts.join(', ')}`);
  }

  /** Drops one partial tensor (e.g. the sender abandoned it). */
  drop(name: string): void {
    const p = this.pending.get(name);
    if (p === undefined) return;
    this.pending.delete(name);
    this.pendingBytesTotal -= p.first.totalBytes;
  }

  /** Drops all partial tensors; further pushes throw FAILED_PRECONDITION. */
  close(): void {
    this.pending.clear();
    this.pendingBytesTotal = 0;
    this.closed = true;
  }

  private start(c: TensorChunk): AssembledTensor | undefined {
    const name = c.name;
    const shape = c.shape;
    if (!Array.isArray(shape)) throw new TransportError(status.INVALID_ARGUMENT, 'bad_shape', `tensor ${name}: missing shape`);
    const encodingName = TensorEncoding[c.encoding] ?? String(c.encoding);
    if (c.encoding !== TensorEncoding.TENSOR_ENCODING_DENSE && c.encoding !== TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_encoding', `tensor ${name}: unsupported encoding ${encodingName}`);
    }
    let expectedBytes: number;
    try {
      expectedBytes = encodedByteLength(shape, c.encoding);
    } catch (err) {
      if (err instanceof TransportError) {
        throw new TransportError(err.code, err.reason, `tensor ${name}: ${err.message}`);
      }
      throw err;
    }
    const declared = c.totalBytes;
    if (expectedBytes > this.maxTensorBytes || declared > this.maxTensorBytes) {
      throw new TransportError(
        status.RESOURCE_EXHAUSTED,
        'tensor_too_large',
        `tensor ${name}: ${Math.max(expectedBytes, declared)} bytes exceeds the limit of ${this.maxTensorBytes}`,
      );
    }
    if (declared !== expectedBytes) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_total_bytes',
        `tensor ${name}: total_bytes ${declared} but shape [${shape}] (${encodingName}) needs ${expectedBytes}`,
      );
    }
    const count = c.chunkCount;
    if (!Number.isSafeInteger(count) || count < 1 || count > declared / F32) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_chunk_count', `tensor ${name}: chunk_count ${count} impossible for ${declared} bytes`);
    }
    if (c.chunkIndex >= count) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_chunk_index', `tensor ${name}: chunk_index ${c.chunkIndex} >= chunk_count ${count}`);
    }
    if (c.chunkIndex !== 0) {
      throw new TransportError(status.FAILED_PRECONDITION, 'gap', `tensor ${name}: first chunk received has chunk_index ${c.chunkIndex}, expected 0`);
    }
    this.checkData(c, 0, declared);
    if (count === 1) {
      return this.finish(c, bytesToFloat32(c.data));
    }
    if (this.pending.size >= this.maxPendingTensors) {
      throw new TransportError(
        status.RESOURCE_EXHAUSTED,
        'too_many_pending',
        `tensor ${name}: more than ${this.maxPendingTensors} tensors being received at once`,
      );
    }
    if (this.pendingBytesTotal + declared > this.maxPendingBytes) {
      throw new TransportError(
        status.RESOURCE_EXHAUSTED,
        'too_many_pending',
        `tensor ${name}: ${this.pendingBytesTotal + declared} bytes of partial tensors exceeds the limit of ${this.maxPendingBytes}`,
      );
    }
    // Not zero-filled: every byte is written before the tensor is returned (chunks are contiguous
    // and must reach total_bytes), and an incomplete tensor is never returned. Skipping calloc's
    // zeroing matters for multi-MiB tensors whose memory the allocator recycles.
    const values = new Float32Array(Buffer.allocUnsafeSlow(declared).buffer, 0, declared / F32);
    copyBytesInto(values, 0, c.data);
    this.pending.set(name, { first: c, values, nextIndex: 1, receivedBytes: c.data.byteLength });
    this.pendingBytesTotal += declared;
    return undefined;
  }

  private continue(p: Pending, c: TensorChunk): AssembledTensor | undefined {
    const f = p.first;
    const name = f.name;
    const mismatch = (field: string, got: unknown, want: unknown): TransportError =>
      new TransportError(
        status.INVALID_ARGUMENT,
        'header_mismatch',
        `tensor ${name}: chunk ${c.chunkIndex} has ${field} ${String(got)}, first chunk had ${String(want)}`,
      );
    if (c.encoding !== f.encoding) throw mismatch('encoding', TensorEncoding[c.encoding] ?? c.encoding, TensorEncoding[f.encoding]);
    if (!Array.isArray(c.shape) || c.shape.length !== f.shape.length || c.shape.some((d, i) => d !== f.shape[i])) {
      throw mismatch('shape', `[${c.shape}]`, `[${f.shape}]`);
    }
    if (c.version !== f.version) throw mismatch('version', c.version, f.version);
    if (c.chunkCount !== f.chunkCount) throw mismatch('chunk_count', c.chunkCount, f.chunkCount);
    if (c.totalBytes !== f.totalBytes) throw mismatch('total_bytes', c.totalBytes, f.totalBytes);
    if (c.chunkIndex >= f.chunkCount) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_chunk_index', `tensor ${name}: chunk_index ${c.chunkIndex} >= chunk_count ${f.chunkCount}`);
    }
    if (c.chunkIndex < p.nextIndex) {
      throw new TransportError(status.FAILED_PRECONDITION, 'duplicate', `tensor ${name}: chunk_index ${c.chunkIndex} received twice`);
    }
    if (c.chunkIndex > p.nextIndex) {
      throw new TransportError(
        status.FAILED_PRECONDITION,
        'gap',
        `tensor ${name}: chunk_index ${c.chunkIndex} received, expected ${p.nextIndex} (chunks missing)`,
      );
    }
    this.checkData(c, p.receivedBytes, f.totalBytes);
    copyBytesInto(p.values, p.receivedBytes, c.data);
    p.receivedBytes += c.data.byteLength;
    p.nextIndex += 1;
    if (p.nextIndex < f.chunkCount) return undefined;
    this.pending.delete(name);
    this.pendingBytesTotal -= f.totalBytes;
    return this.finish(f, p.values);
  }

  /** Checks a chunk's data against the bytes received so far. */
  private checkData(c: TensorChunk, received: number, total: number): void {
    const len = c.data.byteLength;
    const name = c.name;
    if (len === 0) throw new TransportError(status.INVALID_ARGUMENT, 'bad_data_length', `tensor ${name}: chunk ${c.chunkIndex} is empty`);
    if (len % F32 !== 0) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_data_length', `tensor ${name}: chunk ${c.chunkIndex} has ${len} bytes, not a multiple of 4`);
    }
    if (c.offsetBytes !== received) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_offset',
        `tensor ${name}: chunk ${c.chunkIndex} has offset_bytes ${c.offsetBytes}, expected ${received}`,
      );
    }
    const end = received + len;
    if (end > total) {
      throw new TransportError(status.INVALID_ARGUMENT, 'overrun', `tensor ${name}: chunk ${c.chunkIndex} ends at byte ${end}, past total_bytes ${total}`);
    }
    const last = c.chunkIndex === c.chunkCount - 1;
    if (last && end !== total) {
      throw new TransportError(status.INVALID_ARGUMENT, 'short_tensor', `tensor ${name}: last chunk ends at byte ${end}, total_bytes is ${total}`);
    }
    if (!last && end === total) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'short_tensor',
        `tensor ${name}: all ${total} bytes received by chunk ${c.chunkIndex} of ${c.chunkCount}`,
      );
    }
  }

  private finish(f: TensorChunk, values: Float32Array): AssembledTensor {
    return {
      name: f.name,
      shape: [...f.shape],
      encoding: f.encoding,
      version: f.version,
      values,
      chunkCount: f.chunkCount,
      totalBytes: f.totalBytes,
    };
  }
}
