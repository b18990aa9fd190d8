/**
 * Receiving tensors: `envelopeTensor` checks the tensor a message carries, and a `TensorAssembler`
 * validates every chunk that comes off the network and reassembles tensors, throwing a
 * TransportError with the status code to answer with.
 */
import { status } from '@grpc/grpc-js';
import { type TensorChunk, TensorEncoding } from '../gen/spngd/v1/tensor.js';
import { TransportError } from './errors.js';
import { bytesToFloat32, copyBytesInto } from './float-bytes.js';
import { DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_TENSORS, DEFAULT_MAX_TENSOR_BYTES, MAX_TENSOR_NAME_LENGTH } from './limits.js';
import { encodedByteLength, FLOAT32_BYTES, shapeSize } from './tensor-sizes.js';
import { unpackUpperTriangle } from './upper-triangle.js';

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
    if (!Number.isSafeInteger(count) || count < 1 || count > declared / FLOAT32_BYTES) {
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
    const values = new Float32Array(Buffer.allocUnsafeSlow(declared).buffer, 0, declared / FLOAT32_BYTES);
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
    if (len % FLOAT32_BYTES !== 0) {
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
