/**
 * Batch norm's pieces in plain TypeScript (ComputeBackend.channelMoments, batchNormForward,
 * batchNormSums, batchNormInputGrad), for backends without native versions; the blas addon
 * computes the same float64 sums in the same order, so the results are bit-identical.
 */
import { checkChannelTensors, checkLength } from './argument-checks.js';
import type { ComputeBackend } from './backend.js';

/*
 * NCHW layout: value (b, c, p) at (b·C + c)·t + p. Per-channel sums run in float64 in (b, p) order,
 * four channels at a time as independent chains (the same sums as one channel at a time, without
 * waiting on each addition's latency); the element-wise passes sweep the whole tensor once, with
 * the per-channel constants in float64.
 */

/** mean[c] = Σ x / (n·t), sqDev[c] = Σ (x − mean[c])², float64 in (b, p) order. */
function channelMomentsLoop(x: Float32Array, n: number, C: number, t: number, mean: Float64Array, sqDev: Float64Array): void {
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
function batchNormForwardLoop(
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
function batchNormSumsLoop(dy: Float32Array, xhat: Float32Array, n: number, C: number, t: number, sumDy: Float64Array, sumDyXhat: Float64Array): void {
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
function batchNormInputGradLoop(
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

async function jsChannelMoments(x: Float32Array, n: number, channels: number, t: number, mean: Float64Array, sqDev: Float64Array): Promise<void> {
  checkChannelTensors('channelMoments', n, channels, t, { x }, { mean, sqDev });
  channelMomentsLoop(x, n, channels, t, mean, sqDev);
}

async function jsBatchNormForward(
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

async function jsBatchNormSums(
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

async function jsBatchNormInputGrad(
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

export const typescriptBatchNorm: Pick<ComputeBackend, 'channelMoments' | 'batchNormForward' | 'batchNormSums' | 'batchNormInputGrad'> = {
  channelMoments: jsChannelMoments,
  batchNormForward: jsBatchNormForward,
  batchNormSums: jsBatchNormSums,
  batchNormInputGrad: jsBatchNormInputGrad,
};
