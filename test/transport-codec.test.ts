/**
 * Tensor codec: chunking, upper-triangle packing, and the TensorAssembler's validation of untrusted
 * chunks (each violation must map to the right gRPC status code).
 */
import test from 'ava';
import { status } from '@grpc/grpc-js';

import { TensorChunk as TensorChunkFns } from '../src/gen/spngd/v1/tensor.js';
import {
  bytesToFloat32,
  chunkCountFor,
  envelopeTensor,
  chunkSymmetric,
  chunkTensor,
  encodedByteLength,
  float32ToBytes,
  packUpperTriangle,
  type TensorChunk,
  TensorAssembler,
  TensorEncoding,
  toDense,
  TransportError,
  type TransportErrorReason,
  triangleSize,
  unpackUpperTriangle,
} from '../src/transport/index.js';

const DENSE = TensorEncoding.TENSOR_ENCODING_DENSE;
const SYM = TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER;

function ramp(n: number, scale = 1): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (i - n / 3) * scale;
  return v;
}

function symmetric(n: number, seed = 1): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = Math.sin(seed * 31 + i * 7.1 + j * 3.3);
      m[i * n + j] = v;
      m[j * n + i] = v;
    }
  }
  return m;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function chunks(n: number, chunkBytes: number, extra: Partial<TensorChunk> = {}): TensorChunk[] {
  return [...chunkTensor('w', ramp(n), [n], DENSE, { chunkBytes, version: 7 })].map((c) => ({ ...c, ...extra }));
}

function expectError(t: import('ava').ExecutionContext, fn: () => unknown, code: status, reason: TransportErrorReason): TransportError {
  const err = t.throws(fn, { instanceOf: TransportError }) as TransportError;
  t.is(err.code, code, `expected ${status[code]} (${reason}), got ${status[err.code]} (${err.reason}): ${err.message}`);
  t.is(err.reason, reason, err.message);
  return err;
}

test('triangle sizes and encoded byte lengths', (t) => {
  t.is(triangleSize(1), 1);
  t.is(triangleSize(4), 10);
  t.is(encodedByteLength([3, 5], DENSE), 60);
  t.is(encodedByteLength([], DENSE), 4);
  t.is(encodedByteLength([4, 4], SYM), 40);
  t.is(encodedByteLength([16, 2, 2], SYM), 16 * 3 * 4);
  t.throws(() => encodedByteLength([4, 5], SYM), { instanceOf: TransportError });
  t.throws(() => encodedByteLength([4], SYM), { instanceOf: TransportError });
  t.throws(() => encodedByteLength([0, 2], DENSE), { instanceOf: TransportError });
  t.is(chunkCountFor(10, 4), 3);
  t.is(chunkCountFor(4, 4), 1);
});

test('upper-triangle pack/unpack round-trips (single matrix, batch, float64 out)', (t) => {
  for (const n of [1, 2, 3, 17, 64]) {
    const m = symmetric(n, n);
    const packed = packUpperTriangle(m, n);
    t.is(packed.length, triangleSize(n));
    // Row-major upper triangle order: (0,0) (0,1) ... (0,n-1) (1,1) ...
    if (n >= 2) {
      t.is(packed[1], Math.fround(m[1]));
      t.is(packed[n], Math.fround(m[n + 1]));
    }
    const full = unpackUpperTriangle(packed, n);
    for (let i = 0; i < n * n; i++) t.is(full[i], Math.fround(m[i]));
    const full64 = unpackUpperTriangle(packed, n, 1, new Float64Array(n * n));
    t.true(full64 instanceof Float64Array);
    t.is(full64[n * n - 1], Math.fround(m[n * n - 1]));
  }
  // A batch of 2x2 blocks (unit-wise batch norm).
  const batch = 5;
  const blocks = new Float32Array(batch * 4);
  for (let c = 0; c < batch; c++) blocks.set([c + 1, c + 0.5, c + 0.5, c + 2], c * 4);
  const packed = packUpperTriangle(blocks, 2, batch);
  t.deepEqual([...packed.subarray(0, 6)], [1, 0.5, 2, 2, 1.5, 3]);
  t.true(sameBits(unpackUpperTriangle(packed, 2, batch), blocks));
  // Only the upper triangle is read.
  const lopsided = new Float32Array([1, 2, 99, 3]);
  t.deepEqual([...unpackUpperTriangle(packUpperTriangle(lopsided, 2), 2)], [1, 2, 2, 3]);
});

test('chunkTensor splits at chunkBytes with contiguous offsets and reassembles bit-exactly', (t) => {
  const v = ramp(1000, 0.37);
  v[3] = Number.NaN;
  v[4] = -0;
  v[5] = Number.POSITIVE_INFINITY;
  v[6] = 1.4e-45; // subnormal
  const cs = [...chunkTensor('fc1.weight', v, [10, 100], DENSE, { chunkBytes: 1024, version: 42 })];
  t.is(cs.length, 4);
  t.deepEqual(
    cs.map((c) => [c.chunkIndex, c.chunkCount, c.offsetBytes, c.data.length, c.totalBytes, c.version]),
    [
      [0, 4, 0, 1024, 4000, 42],
      [1, 4, 1024, 1024, 4000, 42],
      [2, 4, 2048, 1024, 4000, 42],
      [3, 4, 3072, 928, 4000, 42],
    ],
  );
  // Little-endian on the wire, whatever the host.
  const dv = new DataView(cs[0].data.buffer, cs[0].data.byteOffset, 8);
  t.is(dv.getFloat32(4, true), v[1]);
  const asm = new TensorAssembler();
  const results = cs.map((c) => asm.push(c));
  t.deepEqual(results.slice(0, 3), [undefined, undefined, undefined]);
  const out = results[3]!;
  t.truthy(out);
  t.is(out.name, 'fc1.weight');
  t.deepEqual(out.shape, [10, 100]);
  t.is(out.version, 42);
  t.is(out.chunkCount, 4);
  t.true(sameBits(out.values, v));
  t.is(asm.pendingTensors, 0);
  t.is(asm.pendingBytes, 0);
  asm.assertComplete();
});

test('chunks survive protobuf encode/decode and copies are independent of the source', (t) => {
  const v = ramp(300);
  const cs = [...chunkTensor('x', v, [300], DENSE, { chunkBytes: 400 })];
  v.fill(0); // copy: true (default) -> chunks own their bytes
  const asm = new TensorAssembler();
  let out: ReturnType<TensorAssembler['push']>;
  for (const c of cs) out = asm.push(TensorChunkFns.decode(TensorChunkFns.encode(c).finish()));
  t.true(sameBits(out!.values, ramp(300)));
  // copy: false chunks view the source.
  const w = ramp(8);
  const [view] = [...chunkTensor('y', w, [8], DENSE, { copy: false })];
  w[0] = 123;
  t.is(bytesToFloat32(view.data, true)[0], 123);
});

test('symmetric chunks: [n,n] and batched [c,2,2], toDense expands', (t) => {
  const n = 33;
  const m = symmetric(n, 3);
  const asm = new TensorAssembler();
  let out: ReturnType<TensorAssembler['push']>;
  for (const c of chunkSymmetric('conv1', m, n, { chunkBytes: 256, version: 3 })) {
    t.is(c.encoding, SYM);
    t.deepEqual(c.shape, [n, n]);
    t.is(c.totalBytes, triangleSize(n) * 4);
    out = asm.push(c);
  }
  t.is(out!.values.length, triangleSize(n));
  const dense = toDense(out!);
  for (let i = 0; i < n * n; i++) t.is(dense[i], Math.fround(m[i]));

  const blocks = new Float32Array(3 * 4).map((_, i) => [1, 2, 2, 5][i % 4] * (1 + Math.floor(i / 4)));
  const [c] = [...chunkSymmetric('bn1', blocks, 2, { batch: 3 })];
  t.deepEqual(c.shape, [3, 2, 2]);
  t.is(c.data.length, 3 * 3 * 4);
  t.true(sameBits(toDense(new TensorAssembler().push(c)!), blocks));
});

test('unaligned buffers are copied, aligned single chunks are viewed', (t) => {
  const v = ramp(16);
  const bytes = float32ToBytes(v);
  const backing = Buffer.alloc(bytes.length + 3);
  bytes.copy(backing, 1);
  const unaligned = backing.subarray(1, 1 + bytes.length);
  t.is(unaligned.byteOffset % 4, 1);
  t.throws(() => new Float32Array(unaligned.buffer, unaligned.byteOffset, 16));
  const decoded = bytesToFloat32(unaligned);
  t.true(sameBits(decoded, v));
  // Through the assembler, single chunk and multi-chunk.
  const [single] = [...chunkTensor('u', v, [16])];
  t.true(sameBits(new TensorAssembler().push({ ...single, data: unaligned })!.values, v));
  const multi = [...chunkTensor('u', v, [16], DENSE, { chunkBytes: 20 })].map((c) => {
    const b = Buffer.alloc(c.data.length + 1);
    c.data.copy(b, 1);
    return { ...c, data: b.subarray(1) };
  });
  const asm = new TensorAssembler();
  let out: ReturnType<TensorAssembler['push']>;
  for (const c of multi) out = asm.push(c);
  t.true(sameBits(out!.values, v));
  // Aligned single chunk: a zero-copy view.
  const aligned = float32ToBytes(v);
  const res = new TensorAssembler().push({ ...single, data: aligned })!;
  t.is(res.values.buffer, aligned.buffer);
});

test('interleaved tensors on one stream', (t) => {
  const a = chunks(100, 40);
  const b = [...chunkTensor('other', ramp(50, 2), [5, 10], DENSE, { chunkBytes: 40, version: 7 })];
  const asm = new TensorAssembler();
  const done: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    for (const c of [a[i], b[i]]) {
      if (!c) continue;
      const r = asm.push(c);
      if (r) done.push(r.name);
    }
  }
  t.deepEqual(done, ['other', 'w']);
});

// ---- rejections -------------------------------------------------------------------------------

test('rejects gaps (FAILED_PRECONDITION)', (t) => {
  const cs = chunks(100, 40); // 10 chunks
  const asm = new TensorAssembler();
  asm.push(cs[0]);
  asm.push(cs[1]);
  expectError(t, () => asm.push(cs[3]), status.FAILED_PRECONDITION, 'gap');
  // The broken tensor was dropped; a fresh first chunk may start it again.
  t.is(asm.pendingTensors, 0);
  // A stream that starts in the middle of a tensor.
  expectError(t, () => new TensorAssembler().push(cs[2]), status.FAILED_PRECONDITION, 'gap');
});

test('rejects duplicates (FAILED_PRECONDITION)', (t) => {
  const cs = chunks(100, 40);
  const asm = new TensorAssembler();
  asm.push(cs[0]);
  asm.push(cs[1]);
  expectError(t, () => asm.push(cs[1]), status.FAILED_PRECONDITION, 'duplicate');
  const asm2 = new TensorAssembler();
  asm2.push(cs[0]);
  // Chunk 0 again while the tensor is incomplete.
  expectError(t, () => asm2.push(cs[0]), status.FAILED_PRECONDITION, 'duplicate');
});

test('rejects incomplete tensors at end of stream (FAILED_PRECONDITION)', (t) => {
  const cs = chunks(100, 40);
  const asm = new TensorAssembler();
  asm.push(cs[0]);
  const err = expectError(t, () => asm.assertComplete(), status.FAILED_PRECONDITION, 'incomplete');
  t.regex(err.message, /w \(1\/10 chunks\)/);
  asm.close();
  expectError(t, () => asm.push(cs[0]), status.FAILED_PRECONDITION, 'closed');
});

test('rejects wrong lengths (INVALID_ARGUMENT)', (t) => {
  const cs = chunks(100, 40); // 400 bytes, 10 chunks of 40
  // total_bytes disagreeing with the shape.
  expectError(t, () => new TensorAssembler().push({ ...cs[0], totalBytes: 404 }), status.INVALID_ARGUMENT, 'bad_total_bytes');
  // A last chunk that is too short.
  const short = [...cs];
  short[9] = { ...cs[9], data: cs[9].data.subarray(0, 36) };
  let asm = new TensorAssembler();
  for (let i = 0; i < 9; i++) asm.push(short[i]);
  expectError(t, () => asm.push(short[9]), status.INVALID_ARGUMENT, 'short_tensor');
  // A chunk that runs past total_bytes.
  asm = new TensorAssembler();
  for (let i = 0; i < 9; i++) asm.push(cs[i]);
  expectError(t, () => asm.push({ ...cs[9], data: Buffer.alloc(44) }), status.INVALID_ARGUMENT, 'overrun');
  // An offset that does not continue the previous chunk.
  asm = new TensorAssembler();
  asm.push(cs[0]);
  expectError(t, () => asm.push({ ...cs[1], offsetBytes: 44 }), status.INVALID_ARGUMENT, 'bad_offset');
  // More chunks announced than the data needs.
  const whole = [...chunkTensor('w', ramp(10), [10])][0];
  expectError(t, () => new TensorAssembler().push({ ...whole, chunkCount: 2 }), status.INVALID_ARGUMENT, 'short_tensor');
  expectError(t, () => new TensorAssembler().push({ ...whole, chunkCount: 11 }), status.INVALID_ARGUMENT, 'bad_chunk_count');
  expectError(t, () => new TensorAssembler().push({ ...whole, chunkCount: 0 }), status.INVALID_ARGUMENT, 'bad_chunk_count');
  // chunk_index out of range.
  expectError(t, () => new TensorAssembler().push({ ...whole, chunkIndex: 1 }), status.INVALID_ARGUMENT, 'bad_chunk_index');
  // Empty data.
  expectError(t, () => new TensorAssembler().push({ ...whole, data: Buffer.alloc(0) }), status.INVALID_ARGUMENT, 'bad_data_length');
});

test('rejects odd byte lengths (INVALID_ARGUMENT)', (t) => {
  const cs = chunks(100, 40);
  expectError(t, () => new TensorAssembler().push({ ...cs[0], data: cs[0].data.subarray(0, 39) }), status.INVALID_ARGUMENT, 'bad_data_length');
  const whole = [...chunkTensor('w', ramp(10), [10])][0];
  expectError(t, () => new TensorAssembler().push({ ...whole, data: Buffer.alloc(41) }), status.INVALID_ARGUMENT, 'bad_data_length');
  t.throws(() => bytesToFloat32(Buffer.alloc(7)), { instanceOf: TransportError });
});

test('rejects shape and header mismatches (INVALID_ARGUMENT)', (t) => {
  const cs = chunks(100, 40);
  const cases: [Partial<TensorChunk>, string][] = [
    [{ shape: [10, 10] }, 'shape'],
    [{ shape: [] }, 'shape'],
    [{ version: 8 }, 'version'],
    [{ chunkCount: 11 }, 'chunk_count'],
    [{ totalBytes: 800 }, 'total_bytes'],
    [{ encoding: SYM }, 'encoding'],
  ];
  for (const [patch, field] of cases) {
    const asm = new TensorAssembler();
    asm.push(cs[0]);
    const err = expectError(t, () => asm.push({ ...cs[1], ...patch }), status.INVALID_ARGUMENT, 'header_mismatch');
    t.regex(err.message, new RegExp(field));
    t.is(asm.pendingTensors, 0);
  }
  // Invalid first chunks.
  const whole = [...chunkTensor('w', ramp(16), [16])][0];
  expectError(t, () => new TensorAssembler().push({ ...whole, name: '' }), status.INVALID_ARGUMENT, 'bad_name');
  expectError(t, () => new TensorAssembler().push({ ...whole, name: 'x'.repeat(600) }), status.INVALID_ARGUMENT, 'bad_name');
  expectError(t, () => new TensorAssembler().push({ ...whole, shape: [4, 0] }), status.INVALID_ARGUMENT, 'bad_shape');
  expectError(t, () => new TensorAssembler().push({ ...whole, shape: [1, 1, 1, 1, 1, 1, 1, 1, 16] }), status.INVALID_ARGUMENT, 'bad_shape');
  expectError(t, () => new TensorAssembler().push({ ...whole, encoding: TensorEncoding.TENSOR_ENCODING_UNSPECIFIED }), status.INVALID_ARGUMENT, 'bad_encoding');
  expectError(t, () => new TensorAssembler().push({ ...whole, encoding: 9 as TensorEncoding }), status.INVALID_ARGUMENT, 'bad_encoding');
  // Symmetric-upper with a non-square shape, or dense bytes labelled symmetric.
  expectError(t, () => new TensorAssembler().push({ ...whole, encoding: SYM, shape: [2, 8] }), status.INVALID_ARGUMENT, 'bad_shape');
  expectError(t, () => new TensorAssembler().push({ ...whole, encoding: SYM, shape: [4, 4] }), status.INVALID_ARGUMENT, 'bad_total_bytes');
});

test('rejects oversized totals (RESOURCE_EXHAUSTED)', (t) => {
  const small = new TensorAssembler({ maxTensorBytes: 1024 });
  const ok = [...chunkTensor('ok', ramp(256), [256])][0];
  t.truthy(small.push(ok));
  const big = [...chunkTensor('big', ramp(257), [257], DENSE, { chunkBytes: 512 })][0];
  expectError(t, () => small.push(big), status.RESOURCE_EXHAUSTED, 'tensor_too_large');
  // A forged header claiming a huge tensor: rejected before any allocation.
  const forged: TensorChunk = { ...ok, shape: [65536, 65536, 65536], totalBytes: 4 * 65536 ** 3, chunkCount: 1 << 30 };
  expectError(t, () => new TensorAssembler().push(forged), status.RESOURCE_EXHAUSTED, 'tensor_too_large');
  // Too many partial tensors at once, or too many partial bytes.
  const few = new TensorAssembler({ maxPendingTensors: 2 });
  for (const name of ['a', 'b']) few.push([...chunkTensor(name, ramp(20), [20], DENSE, { chunkBytes: 40 })][0]);
  expectError(t, () => few.push([...chunkTensor('c', ramp(20), [20], DENSE, { chunkBytes: 40 })][0]), status.RESOURCE_EXHAUSTED, 'too_many_pending');
  const tight = new TensorAssembler({ maxTensorBytes: 100, maxPendingBytes: 150 });
  tight.push([...chunkTensor('a', ramp(20), [20], DENSE, { chunkBytes: 40 })][0]);
  expectError(t, () => tight.push([...chunkTensor('b', ramp(20), [20], DENSE, { chunkBytes: 40 })][0]), status.RESOURCE_EXHAUSTED, 'too_many_pending');
});

test('TransportError carries a grpc status object', (t) => {
  const err = new TransportError(status.FAILED_PRECONDITION, 'gap', 'chunks missing');
  const s = err.toStatus();
  t.is(s.code, status.FAILED_PRECONDITION);
  t.is(s.details, 'chunks missing');
});

test("envelopeTensor checks presence and the envelope's step", (t) => {
  const [c] = [...chunkTensor('w', ramp(4), [4], DENSE, { version: 9 })];
  t.is(envelopeTensor(c, 9), c);
  expectError(t, () => envelopeTensor(undefined, 9), status.INVALID_ARGUMENT, 'bad_argument');
  const err = expectError(t, () => envelopeTensor(c, 10, 'GradientChunk.step'), status.INVALID_ARGUMENT, 'header_mismatch');
  t.regex(err.message, /GradientChunk.step 10/);
});
