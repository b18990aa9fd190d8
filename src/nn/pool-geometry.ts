/** Window geometry shared by the pooling layers (no padding). */
import { shapeString } from './tensor.js';

export interface PoolOptions {
  name: string;
  /** Square window size or [kh, kw]. */
  kernel: number | [number, number];
  /** Default: the kernel height (non-overlapping windows for square kernels). */
  stride?: number;
}

export interface PoolDims {
  kernelH: number;
  kernelW: number;
  stride: number;
}

export function poolDims(kind: string, opts: PoolOptions): PoolDims {
  const [kh, kw] = typeof opts.kernel === 'number' ? [opts.kernel, opts.kernel] : opts.kernel;
  const stride = opts.stride ?? kh;
  const posInt = (v: number) => Number.isInteger(v) && v > 0;
  if (!posInt(kh) || !posInt(kw) || !posInt(stride)) {
    throw new RangeError(`${kind} ${opts.name}: kernel and stride must be positive integers (kernel ${kh}x${kw}, stride ${stride})`);
  }
  return { kernelH: kh, kernelW: kw, stride };
}

export function poolOutput(kind: string, name: string, d: PoolDims, h: number, w: number): { outH: number; outW: number } {
  const outH = Math.floor((h - d.kernelH) / d.stride) + 1;
  const outW = Math.floor((w - d.kernelW) / d.stride) + 1;
  if (!(h >= d.kernelH && w >= d.kernelW)) {
    throw new RangeError(`${kind} ${name}: window ${d.kernelH}x${d.kernelW} does not fit a ${h}x${w} input`);
  }
  return { outH, outW };
}

export function poolOutputShape(kind: string, name: string, d: PoolDims, inputShape: number[]): number[] {
  if (inputShape.length !== 3) throw new RangeError(`${kind} ${name}: expects input [C,H,W] per sample, got ${shapeString(inputShape)}`);
  const { outH, outW } = poolOutput(kind, name, d, inputShape[1], inputShape[2]);
  return [inputShape[0], outH, outW];
}
