/**
 * The conv layer's patch rows and layout changes in plain TypeScript (ComputeBackend.im2colOnes,
 * channelMajor, rowsScaled), for backends without native versions; the blas addon gives
 * bit-identical results.
 */
import { checkChannelTensors, checkIm2colOnes } from './argument-checks.js';
import type { ComputeBackend, ConvGeometry } from './backend.js';

/**
 * K-FAC's rows a = [patch; 1] of samples [first, first + count) of NCHW x into `out` from `at`:
 * rows (n, oy, ox), columns (c, ky, kx) then a 1; padding reads as zero. The same values as im2col.
 */
function im2colOnesLoop(x: Float32Array, g: ConvGeometry, outH: number, outW: number, first: number, count: number, out: Float32Array, at: number): void {
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
function channelMajorLoop(x: Float32Array, n: number, C: number, t: number, out: Float32Array, sums: Float64Array): void {
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
function rowsScaledLoop(x: Float32Array, n: number, C: number, t: number, scale: number, out: Float32Array): void {
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

async function jsIm2colOnes(x: Float32Array, g: ConvGeometry, first: number, count: number, out: Float32Array, at: number): Promise<Float32Array> {
  const { outH, outW } = checkIm2colOnes(g, x, first, count, out, at);
  im2colOnesLoop(x, g, outH, outW, first, count, out, at);
  return out;
}

async function jsChannelMajor(x: Float32Array, n: number, channels: number, t: number, out: Float32Array, sums: Float64Array): Promise<Float32Array> {
  checkChannelTensors('channelMajor', n, channels, t, { x, out }, { sums });
  channelMajorLoop(x, n, channels, t, out, sums);
  return out;
}

async function jsRowsScaled(x: Float32Array, n: number, channels: number, t: number, scale: number, out: Float32Array): Promise<Float32Array> {
  checkChannelTensors('rowsScaled', n, channels, t, { x, out }, {});
  rowsScaledLoop(x, n, channels, t, scale, out);
  return out;
}

export const typescriptConvLayout: Pick<ComputeBackend, 'im2colOnes' | 'channelMajor' | 'rowsScaled'> = {
  im2colOnes: jsIm2colOnes,
  channelMajor: jsChannelMajor,
  rowsScaled: jsRowsScaled,
};
