/**
 * Max pooling forward and backward in plain TypeScript (ComputeBackend.maxPool, maxPoolBackward),
 * for backends without native versions; the blas addon gives bit-identical results.
 */
import { checkLength, checkPool } from './argument-checks.js';
import type { ComputeBackend, PoolGeometry } from './backend.js';
import { float32Bits as bits } from './float-bits.js';

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
function maxPoolLoop(x: Float32Array, g: PoolGeometry, outH: number, outW: number, y: Float32Array, argmax: Int32Array): void {
  const xb = bits(x, x.length);
  const planes = g.batch * g.channels;
  if (g.kernelH === 2 && g.kernelW === 2) pool2x2(xb, x, y, argmax, planes, g.height, g.width, g.stride, outH, outW);
  else poolAny(xb, x, y, argmax, planes, g.height, g.width, g.kernelH, g.kernelW, g.stride, outH, outW);
}

async function jsMaxPool(x: Float32Array, g: PoolGeometry, out: Float32Array, argmax: Int32Array): Promise<Float32Array> {
  const { outH, outW } = checkPool('maxPool', g, x, out, argmax);
  maxPoolLoop(x, g, outH, outW, out, argmax);
  return out;
}

async function jsMaxPoolBackward(dy: Float32Array, argmax: Int32Array, dx: Float32Array): Promise<Float32Array> {
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

export const typescriptMaxPool: Pick<ComputeBackend, 'maxPool' | 'maxPoolBackward'> = { maxPool: jsMaxPool, maxPoolBackward: jsMaxPoolBackward };
