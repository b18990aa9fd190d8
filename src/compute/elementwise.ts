/**
 * Plain TypeScript implementations of the layers' element-wise ComputeBackend operations (ReLU,
 * max pooling, batch-norm pieces, the conv layer's patch rows and layout changes), for backends without native versions (gpu, reference). The blas
 * addon computes the same values: the same float64 sums in the same order and the same roundings,
 * so both paths give identical results.
 *
 * The `js*` functions at the bottom are the interface methods themselves: argument checks
 * (argument-checks.ts), then the loop; they reject rather than throw.
 */
import { checkChannelTensors, checkIm2colOnes, checkLength, checkPool } from './argument-checks.js';
import type { ComputeBackend, ConvGeometry, PoolGeometry } from './backend.js';

// --- ReLU ---------------------------------------------------------------------------------------

/*
 * On the float32 bit patterns without branches (a random sign pattern makes `v > 0 ? v : 0`
 * mispredict half the time, which costs several times the memory traffic), with exactly the
 * results of `v > 0 ? v : 0` and `x > 0 ? dy : 0` for every input, NaN and ±0 included.
 * keep(bits) = -1 (all ones) when the float32 with these bits is > 0, else 0: > 0 means bits in
 * [1, 0x7f800000] (+smallest subnormal .. +Infinity); negatives, ±0 and NaN are not. Both
 * differences are taken modulo 2³² by `|` (ToInt32), so neither can overflow.
 */

export function reluLoop(x: Int32Array, y: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    y[i] = v & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

export function reluBackwardLoop(x: Int32Array, dy: Int32Array, dx: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    dx[i] = dy[i] & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

const bits = (a: Float32Array, n: number): Int32Array => new Int32Array(a.buffer, a.byteOffset, n);

// --- max pooling --------------------------------------------------------------------------------

/*
 * The window maximum is found without branches (on activations the comparisons are coin flips, so
 * `if (v > best)` mispredicts about half the time). Each value's float32 bits map to an int32 key
 * that orders like the floats, with -0 and +0 equal and NaN equal to -Infinity; the first index
 * with the largest key is exactly what `best = -Infinity; if (v > best) ...` over the window picks
 * (NaN never wins; an all-NaN/-Infinity window keeps its first element).
 */

const NEG_INF_KEY = -0x7f800000;

function key(b: number): number {
  const s = b >> 31;
  const mag = b & 0x7fffffff;
  const k = ((mag ^ s) - s) | 0;
  const nan = (0x7f800000 - mag) >> 31;
  return (k & ~nan) | (NEG_INF_KEY & nan);
}

/** -1 when a > b, else 0, for int32 a and b (wrapping arithmetic, no overflow). */
function gtMask(a: number, b: number): number {
  const d = (b - a) | 0;
  return (d ^ ((b ^ a) & (d ^ b))) >> 31;
}

function pool2x2(
  xb: Int32Array,
  xd: Float32Array,
  y: Float32Array,
  argmax: Int32Array,
  planes: number,
  H: number,
  W: number,
  S: number,
  outH: number,
  outW: number,
): void {
  let o = 0;
  for (let nc = 0; nc < planes; nc++) {
    const inBase = nc * H * W;
    for (let oy = 0; oy < outH; oy++) {
      const r0 = inBase + oy * S * W;
      for (let ox = 0; ox < outW; ox++, o++) {
        const i0 = r0 + ox * S;
        const i1 = i0 + 1;
        const i2 = i0 + W;
        const i3 = i2 + 1;
        let bi = i0;
        let kb = key(xb[i0]);
        let kv = key(xb[i1]);
        let m = gtMask(kv, kb);
        bi = (bi & ~m) | (i1 & m);
        kb = (kb & ~m) | (kv & m);
        kv = key(xb[i2]);
        m = gtMask(kv, kb);
        bi = (bi & ~m) | (i2 & m);
        kb = (kb & ~m) | (kv & m);
        kv = key(xb[i3]);
        m = gtMask(kv, kb);
        bi = (bi & ~m) | (i3 & m);
        y[o] = xd[bi];
        argmax[o] = bi;
      }
    }
  }
}

function poolAny(
  xb: Int32Array,
  xd: Float32Array,
  y: Float32Array,
  argmax: Int32Array,
  planes: number,
  H: number,
  W: number,
  KH: number,
  KW: number,
  S: number,
  outH: number,
  outW: number,
): void {
  let o = 0;
  for (let nc = 0; nc < planes; nc++) {
    const inBase = nc * H * W;
    for (let oy = 0; oy < outH; oy++) {
      const r0 = inBase + oy * S * W;
      for (let ox = 0; ox < outW; ox++, o++) {
        const i0 = r0 + ox * S;
        let bi = i0;
        let kb = key(xb[i0]);
        for (let ky = 0; ky < KH; ky++) {
          const row = i0 + ky * W;
          for (let kx = 0; kx < KW; kx++) {
            const i = row + kx;
            const kv = key(xb[i]);
            const m = gtMask(kv, kb);
            bi = (bi & ~m) | (i & m);
            kb = (kb & ~m) | (kv & m);
          }
        }
        y[o] = xd[bi];
        argmax[o] = bi;
      }
    }
  }
}

/** Max pooling of NCHW x (no padding) into y and argmax (flat input indices); see ComputeBackend.maxPool. */
export function maxPoolLoop(x: Float32Array, g: PoolGeometry, outH: number, outW: number, y: Float32Array, argmax: Int32Array): void {
  const xb = bits(x, x.length);
  const planes = g.batch * g.channels;
  if (g.kernelH === 2 && g.kernelW === 2) pool2x2(xb, x, y, argmax, planes, g.height, g.width, g.stride, outH, outW);
  else poolAny(xb, x, y, argmax, planes, g.height, g.width, g.kernelH, g.kernelW, g.stride, outH, outW);
}

// --- batch norm ---------------------------------------------------------------------------------

/*
 * NCHW layout: value (b, c, p) at (b·C + c)·t + p. Per-channel sums run in float64 in (b, p) order,
 * four channels at a time as independent chains (the same sums as one channel at a time, without
 * waiting on each addition's latency); the element-wise passes sweep the whole tensor once, with
 * the per-channel constants in float64.
 */

/** mean[c] = Σ x / (n·t), sqDev[c] = Σ (x − mean[c])², float64 in (b, p) order. */
export function channelMomentsLoop(x: Float32Array, n: number, C: number, t: number, mean: Float64Array, sqDev: Float64Array): void {
  const stride = C * t;
  const m = n * t;
  let c = 0;
  for (; c + 4 <= C; c += 4) {
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        s0 += x[p];
        s1 += x[p + t];
        s2 += x[p + 2 * t];
        s3 += x[p + 3 * t];
      }
    }
    mean[c] = s0 / m;
    mean[c + 1] = s1 / m;
    mean[c + 2] = s2 / m;
    mean[c + 3] = s3 / m;
  }
  for (; c < C; c++) {
    let s0 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) s0 += x[p];
    }
    mean[c] = s0 / m;
  }
  c = 0;
  for (; c + 4 <= C; c += 4) {
    const m0 = mean[c];
    const m1 = mean[c + 1];
    const m2 = mean[c + 2];
    const m3 = mean[c + 3];
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = x[p] - m0;
        const d1 = x[p + t] - m1;
        const d2 = x[p + 2 * t] - m2;
        const d3 = x[p + 3 * t] - m3;
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
      }
    }
    sqDev[c] = s0;
    sqDev[c + 1] = s1;
    sqDev[c + 2] = s2;
    sqDev[c + 3] = s3;
  }
  for (; c < C; c++) {
    const m0 = mean[c];
    let s0 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = x[p] - m0;
        s0 += d0 * d0;
      }
    }
    sqDev[c] = s0;
  }
}

/** xhat = (x − mean)·invStd (stored float32 when kept), y = gamma·xhat + beta from the unrounded xhat. */
export function batchNormForwardLoop(
  x: Float32Array,
  n: number,
  C: number,
  t: number,
  mean: Float64Array,
  invStd: Float64Array,
  gamma: Float32Array,
  beta: Float32Array,
  y: Float32Array,
  xhat: Float32Array | undefined,
): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const mu = mean[c];
      const is = invStd[c];
      const g = gamma[c];
      const bt = beta[c];
      if (xhat !== undefined) {
        for (let i = base, end = base + t; i < end; i++) {
          const h = (x[i] - mu) * is;
          xhat[i] = h;
          y[i] = g * h + bt;
        }
      } else {
        for (let i = base, end = base + t; i < end; i++) y[i] = g * ((x[i] - mu) * is) + bt;
      }
    }
  }
}

/** sumDy[b·C + c] = Σ_p dy, sumDyXhat[b·C + c] = Σ_p dy·xhat, float64 in p order; four samples at a time. */
export function batchNormSumsLoop(dy: Float32Array, xhat: Float32Array, n: number, C: number, t: number, sumDy: Float64Array, sumDyXhat: Float64Array): void {
  const stride = C * t;
  for (let c = 0; c < C; c++) {
    const off = c * t;
    let b = 0;
    for (; b + 4 <= n; b += 4) {
      const base = off + b * stride;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let x0 = 0;
      let x1 = 0;
      let x2 = 0;
      let x3 = 0;
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = dy[p];
        const d1 = dy[p + stride];
        const d2 = dy[p + 2 * stride];
        const d3 = dy[p + 3 * stride];
        a0 += d0;
        a1 += d1;
        a2 += d2;
        a3 += d3;
        x0 += d0 * xhat[p];
        x1 += d1 * xhat[p + stride];
        x2 += d2 * xhat[p + 2 * stride];
        x3 += d3 * xhat[p + 3 * stride];
      }
      const o = b * C + c;
      sumDy[o] = a0;
      sumDy[o + C] = a1;
      sumDy[o + 2 * C] = a2;
      sumDy[o + 3 * C] = a3;
      sumDyXhat[o] = x0;
      sumDyXhat[o + C] = x1;
      sumDyXhat[o + 2 * C] = x2;
      sumDyXhat[o + 3 * C] = x3;
    }
    for (; b < n; b++) {
      const base = off + b * stride;
      let a0 = 0;
      let x0 = 0;
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = dy[p];
        a0 += d0;
        x0 += d0 * xhat[p];
      }
      sumDy[b * C + c] = a0;
      sumDyXhat[b * C + c] = x0;
    }
  }
}

/** dx = scale·(dy − meanDy − xhat·meanDyXhat), per channel constants in float64. */
export function batchNormInputGradLoop(
  dy: Float32Array,
  xhat: Float32Array,
  n: number,
  C: number,
  t: number,
  scale: Float64Array,
  meanDy: Float64Array,
  meanDyXhat: Float64Array,
  dx: Float32Array,
): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const g = scale[c];
      const md = meanDy[c];
      const mdx = meanDyXhat[c];
      for (let i = base, end = base + t; i < end; i++) dx[i] = g * (dy[i] - md - xhat[i] * mdx);
    }
  }
}

// --- convolution ------------------------------------------------------------------------------

/**
 * K-FAC's rows a = [patch; 1] of samples [first, first + count) of NCHW x into `out` from `at`:
 * rows (n, oy, ox), columns (c, ky, kx) then a 1; padding reads as zero. The same values as im2col.
 */
export function im2colOnesLoop(
  x: Float32Array,
  g: ConvGeometry,
  outH: number,
  outW: number,
  first: number,
  count: number,
  out: Float32Array,
  at: number,
): void {
  const { channels: C, height: H, width: W, kernelH: KH, kernelW: KW, stride: S, pad: P } = g;
  const k = C * KH * KW;
  const ld = k + 1;
  const plane = H * W;
  let r = at;
  for (let b = first; b < first + count; b++) {
    const xb = b * C * plane;
    for (let oy = 0; oy < outH; oy++) {
      const iy0 = oy * S - P;
      for (let ox = 0; ox < outW; ox++, r += ld) {
        const ix0 = ox * S - P;
        const inside = ix0 >= 0 && ix0 + KW <= W;
        let o = r;
        for (let c = 0, xc = xb; c < C; c++, xc += plane) {
          for (let ky = 0; ky < KH; ky++, o += KW) {
            const iy = iy0 + ky;
            if (iy < 0 || iy >= H) {
              for (let kx = 0; kx < KW; kx++) out[o + kx] = 0;
              continue;
            }
            const xr = xc + iy * W + ix0;
            if (inside && KW === 3) {
              // The common 3-wide kernel, unrolled.
              out[o] = x[xr];
              out[o + 1] = x[xr + 1];
              out[o + 2] = x[xr + 2];
            } else if (inside) {
              for (let kx = 0; kx < KW; kx++) out[o + kx] = x[xr + kx];
            } else {
              for (let kx = 0; kx < KW; kx++) {
                const ix = ix0 + kx;
                out[o + kx] = ix >= 0 && ix < W ? x[xr + kx] : 0;
              }
            }
          }
        }
        out[r + k] = 1;
      }
    }
  }
}

/**
 * x (n × channels × t, NCHW) → out (channels × n·t, channel-major), and sums[c] = Σ over (b, p) in
 * order of x[b, c, p] in float64. Four channels at a time, so that the four float64 sums are
 * independent chains (each still in its own order).
 */
export function channelMajorLoop(x: Float32Array, n: number, C: number, t: number, out: Float32Array, sums: Float64Array): void {
  const rows = n * t;
  sums.fill(0, 0, C);
  for (let b = 0; b < n; b++) {
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const src = (b * C + c) * t;
      const dst = c * rows + b * t;
      let s0 = sums[c];
      let s1 = sums[c + 1];
      let s2 = sums[c + 2];
      let s3 = sums[c + 3];
      for (let p = 0; p < t; p++) {
        const v0 = x[src + p];
        const v1 = x[src + t + p];
        const v2 = x[src + 2 * t + p];
        const v3 = x[src + 3 * t + p];
        out[dst + p] = v0;
        out[dst + rows + p] = v1;
        out[dst + 2 * rows + p] = v2;
        out[dst + 3 * rows + p] = v3;
        s0 += v0;
        s1 += v1;
        s2 += v2;
        s3 += v3;
      }
      sums[c] = s0;
      sums[c + 1] = s1;
      sums[c + 2] = s2;
      sums[c + 3] = s3;
    }
    for (; c < C; c++) {
      const src = (b * C + c) * t;
      const dst = c * rows + b * t;
      let s0 = sums[c];
      for (let p = 0; p < t; p++) {
        const v0 = x[src + p];
        out[dst + p] = v0;
        s0 += v0;
      }
      sums[c] = s0;
    }
  }
}

/** out (n·t × channels, rows (b, p)) = scale·x (n × channels × t, NCHW); four channels at a time. */
export function rowsScaledLoop(x: Float32Array, n: number, C: number, t: number, scale: number, out: Float32Array): void {
  for (let b = 0; b < n; b++) {
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const src = (b * C + c) * t;
      for (let p = 0, d = b * t * C + c; p < t; p++, d += C) {
        out[d] = scale * x[src + p];
        out[d + 1] = scale * x[src + t + p];
        out[d + 2] = scale * x[src + 2 * t + p];
        out[d + 3] = scale * x[src + 3 * t + p];
      }
    }
    for (; c < C; c++) {
      const src = (b * C + c) * t;
      for (let p = 0, d = b * t * C + c; p < t; p++, d += C) out[d] = scale * x[src + p];
    }
  }
}

// --- the interface methods ----------------------------------------------------------------------

export async function jsRelu(x: Float32Array, out?: Float32Array): Promise<Float32Array> {
  const n = x.length;
  const y = out ?? new Float32Array(n);
  checkLength('relu', 'out', y, n);
  reluLoop(bits(x, n), bits(y, n));
  return y;
}

export async function jsReluBackward(x: Float32Array, dy: Float32Array, out?: Float32Array): Promise<Float32Array> {
  const n = x.length;
  if (dy.length !== n) throw new RangeError(`reluBackward: 'x' holds ${n} values but 'dy' holds ${dy.length}`);
  const dx = out ?? new Float32Array(n);
  checkLength('reluBackward', 'out', dx, n);
  reluBackwardLoop(bits(x, n), bits(dy, n), bits(dx, n));
  return dx;
}

export async function jsMaxPool(x: Float32Array, g: PoolGeometry, out: Float32Array, argmax: Int32Array): Promise<Float32Array> {
  const { outH, outW } = checkPool('maxPool', g, x, out, argmax);
  maxPoolLoop(x, g, outH, outW, out, argmax);
  return out;
}

export async function jsMaxPoolBackward(dy: Float32Array, argmax: Int32Array, dx: Float32Array): Promise<Float32Array> {
  const count = dy.length;
  const inputSize = dx.length;
  checkLength('maxPoolBackward', 'argmax', argmax, count);
  // Checked before dx is touched: an index out of range must not leave dx half written.
  for (let o = 0; o < count; o++) {
    const i = argmax[o];
    if (!(i >= 0 && i < inputSize)) throw new RangeError(`maxPoolBackward: argmax[${o}] = ${i} is outside [0, ${inputSize})`);
  }
  dx.fill(0, 0, inputSize);
  for (let o = 0; o < count; o++) dx[argmax[o]] += dy[o];
  return dx;
}

export async function jsChannelMoments(x: Float32Array, n: number, channels: number, t: number, mean: Float64Array, sqDev: Float64Array): Promise<void> {
  checkChannelTensors('channelMoments', n, channels, t, { x }, { mean, sqDev });
  channelMomentsLoop(x, n, channels, t, mean, sqDev);
}

export async function jsBatchNormForward(
  x: Float32Array,
  n: number,
  channels: number,
  t: number,
  mean: Float64Array,
  invStd: Float64Array,
  gamma: Float32Array,
  beta: Float32Array,
  y: Float32Array,
  xhat?: Float32Array,
): Promise<Float32Array> {
  checkChannelTensors('batchNormForward', n, channels, t, xhat === undefined ? { x, y } : { x, y, xhat }, { mean, invStd, gamma, beta });
  batchNormForwardLoop(x, n, channels, t, mean, invStd, gamma, beta, y, xhat);
  return y;
}

export async function jsBatchNormSums(
  dy: Float32Array,
  xhat: Float32Array,
  n: number,
  channels: number,
  t: number,
  sumDy: Float64Array,
  sumDyXhat: Float64Array,
): Promise<void> {
  checkChannelTensors('batchNormSums', n, channels, t, { dy, xhat }, {});
  checkLength('batchNormSums', 'sumDy', sumDy, n * channels);
  checkLength('batchNormSums', 'sumDyXhat', sumDyXhat, n * channels);
  batchNormSumsLoop(dy, xhat, n, channels, t, sumDy, sumDyXhat);
}

export async function jsBatchNormInputGrad(
  dy: Float32Array,
  xhat: Float32Array,
  n: number,
  channels: number,
  t: number,
  scale: Float64Array,
  meanDy: Float64Array,
  meanDyXhat: Float64Array,
  dx: Float32Array,
): Promise<Float32Array> {
  checkChannelTensors('batchNormInputGrad', n, channels, t, { dy, xhat, dx }, { scale, meanDy, meanDyXhat });
  batchNormInputGradLoop(dy, xhat, n, channels, t, scale, meanDy, meanDyXhat, dx);
  return dx;
}

export async function jsIm2colOnes(x: Float32Array, g: ConvGeometry, first: number, count: number, out: Float32Array, at: number): Promise<Float32Array> {
  const { outH, outW } = checkIm2colOnes(g, x, first, count, out, at);
  im2colOnesLoop(x, g, outH, outW, first, count, out, at);
  return out;
}

export async function jsChannelMajor(x: Float32Array, n: number, channels: number, t: number, out: Float32Array, sums: Float64Array): Promise<Float32Array> {
  checkChannelTensors('channelMajor', n, channels, t, { x, out }, { sums });
  channelMajorLoop(x, n, channels, t, out, sums);
  return out;
}

export async function jsRowsScaled(x: Float32Array, n: number, channels: number, t: number, scale: number, out: Float32Array): Promise<Float32Array> {
  checkChannelTensors('rowsScaled', n, channels, t, { x, out }, {});
  rowsScaledLoop(x, n, channels, t, scale, out);
  return out;
}

/** The layers' element-wise operations of ComputeBackend. */
export type ElementwiseKernels = Pick<
  ComputeBackend,
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

/** The TypeScript implementations as one set: what backends without native versions delegate to. */
export const TYPESCRIPT_ELEMENTWISE: ElementwiseKernels = {
  relu: jsRelu,
  reluBackward: jsReluBackward,
  maxPool: jsMaxPool,
  maxPoolBackward: jsMaxPoolBackward,
  channelMoments: jsChannelMoments,
  batchNormForward: jsBatchNormForward,
  batchNormSums: jsBatchNormSums,
  batchNormInputGrad: jsBatchNormInputGrad,
  im2colOnes: jsIm2colOnes,
  channelMajor: jsChannelMajor,
  rowsScaled: jsRowsScaled,
};
