/** Small helpers for tensors and parameters shared by the layers. */
import type { Param, Tensor } from './types.js';

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A tensor of the given shape; wraps `data` (no copy) or allocates zeros. */
export function tensor(shape: readonly number[], data?: Float32Array): Tensor {
  const n = numel(shape);
  if (data === undefined) return { shape: [...shape], data: new Float32Array(n) };
  if (data.length !== n) throw new RangeError(`tensor of shape [${shape.join(',')}] needs ${n} values, got ${data.length}`);
  return { shape: [...shape], data };
}

/** A zero-initialised parameter with a zero gradient of the same shape. */
export function makeParam(name: string, shape: readonly number[], rescale: boolean): Param {
  return { name, value: tensor(shape), grad: tensor(shape), rescale };
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Throws unless `x` has `rank` dimensions and, where given, the expected sizes (null = any). */
export function checkShape(layer: string, what: string, x: Tensor, expected: readonly (number | null)[]): void {
  const ok = x.shape.length === expected.length && expected.every((d, i) => d === null || d === x.shape[i]) && x.data.length === numel(x.shape);
  if (!ok) {
    const want = expected.map((d) => (d === null ? '*' : String(d))).join(',');
    throw new RangeError(`${layer}: ${what} has shape ${shapeString(x.shape)} (${x.data.length} values), expected [${want}]`);
  }
}

/** A copy of `src` scaled by `s` (into `out` when given: it must hold src.length values). */
export function scaledCopy(src: Float32Array, s: number, out?: Float32Array): Float32Array {
  const n = src.length;
  const dst = out ?? new Float32Array(n);
  for (let i = 0; i < n; i++) dst[i] = src[i] * s;
  return dst;
}

/**
 * rows×cols matrix → rows×(cols+1) with a trailing column of ones (K-FAC's a = [x; 1]); into
 * `out` when given (it must hold rows·(cols+1) values).
 */
export function appendOnesColumn(x: Float32Array, rows: number, cols: number, out?: Float32Array): Float32Array {
  const ld = cols + 1;
  const dst = out ?? new Float32Array(rows * ld);
  if (cols >= 64) {
    // Long rows: one native copy per row.
    for (let r = 0; r < rows; r++) {
      dst.set(x.subarray(r * cols, (r + 1) * cols), r * ld);
      dst[r * ld + cols] = 1;
    }
  } else {
    for (let r = 0, i = 0, o = 0; r < rows; r++, o += ld) {
      for (let c = 0; c < cols; c++) dst[o + c] = x[i++];
      dst[o + cols] = 1;
    }
  }
  return dst;
}

/**
 * Reusable storage for a layer's per-call arrays, so that a training step does not allocate (and
 * page-fault in) tens of megabytes every call. Returns `prev` when it holds exactly `n` values, a
 * view of the first `n` values of its buffer when that is large enough (a smaller batch), else a
 * new array. The contents are whatever was there before: callers must write every value they read.
 */
export function reuseF32(prev: Float32Array | undefined, n: number): Float32Array {
  if (prev !== undefined) {
    if (prev.length === n) return prev;
    if (prev.buffer.byteLength >= n * 4) return new Float32Array(prev.buffer, 0, n);
  }
  return new Float32Array(n);
}

/** Like reuseF32, for Int32Array. */
export function reuseI32(prev: Int32Array | undefined, n: number): Int32Array {
  if (prev !== undefined) {
    if (prev.length === n) return prev;
    if (prev.buffer.byteLength >= n * 4) return new Int32Array(prev.buffer, 0, n);
  }
  return new Int32Array(n);
}

/** Named reusable arrays of one layer (see reuseF32). */
export class Workspace {
  private readonly f = new Map<string, Float32Array>();
  private readonly i = new Map<string, Int32Array>();

  f32(name: string, n: number): Float32Array {
    const b = reuseF32(this.f.get(name), n);
    this.f.set(name, b);
    return b;
  }

  i32(name: string, n: number): Int32Array {
    const b = reuseI32(this.i.get(name), n);
    this.i.set(name, b);
    return b;
  }
}

/**
 * Two alternating sets of reusable arrays for what backward() hands out (input gradients, G
 * captures): the results of one backward pass stay valid through the next one (the true-label
 * and the 1mc pass after one forward) and are overwritten by the pass after that. A layer calls
 * `reset()` in forward() and `nextPass()` at the start of backward().
 */
export class PassBuffers {
  private readonly sets: Map<string, Float32Array>[] = [new Map(), new Map()];
  private slot = 1;

  /** The next backward pass uses the first set. */
  reset(): void {
    this.slot = 1;
  }

  /** Switches to the other set. */
  nextPass(): void {
    this.slot ^= 1;
  }

  /** The current set's array `name` with n values (stale contents, see reuseF32). */
  f32(name: string, n: number): Float32Array {
    const set = this.sets[this.slot];
    const b = reuseF32(set.get(name), n);
    set.set(name, b);
    return b;
  }
}
