/**
 * Argument checks shared by the compute backends: sizes must be integers and arrays long enough
 * before any kernel or native code touches memory (the arrays may have come off the network).
 */
import { convOutputSize, poolOutputSize, type ConvGeometry, type PoolGeometry } from './backend.js';

export function checkDims(fn: string, dims: Record<string, number>): void {
  for (const [name, v] of Object.entries(dims)) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${fn}: '${name}' must be a non-negative integer, got ${v}`);
  }
}

export function checkLength(fn: string, name: string, arr: ArrayLike<number>, need: number): void {
  if (arr.length < need) throw new RangeError(`${fn}: '${name}' holds ${arr.length} values but ${need} are needed`);
}

/** Checks a convolution geometry and returns its output size. */
export function checkGeometry(fn: string, g: ConvGeometry): { outH: number; outW: number } {
  checkDims(fn, {
    batch: g.batch,
    channels: g.channels,
    height: g.height,
    width: g.width,
    kernelH: g.kernelH,
    kernelW: g.kernelW,
    stride: g.stride,
    pad: g.pad,
  });
  if (g.kernelH < 1 || g.kernelW < 1 || g.stride < 1) {
    throw new RangeError(`${fn}: kernel ${g.kernelH}x${g.kernelW} and stride ${g.stride} must be at least 1`);
  }
  return convOutputSize(g);
}

/** Checks a max-pooling call (geometry, input, output and argmax lengths) and returns the output size. */
export function checkPool(
  fn: string,
  g: PoolGeometry,
  x: ArrayLike<number>,
  out: ArrayLike<number>,
  argmax: ArrayLike<number>,
): { outH: number; outW: number } {
  checkDims(fn, { batch: g.batch, channels: g.channels, height: g.height, width: g.width, kernelH: g.kernelH, kernelW: g.kernelW, stride: g.stride });
  if (g.kernelH < 1 || g.kernelW < 1 || g.stride < 1) {
    throw new RangeError(`${fn}: kernel ${g.kernelH}x${g.kernelW} and stride ${g.stride} must be at least 1`);
  }
  const { outH, outW } = poolOutputSize(g);
  // argmax holds flat input indices as int32.
  if (g.batch * g.channels * g.height * g.width > 0x7fffffff) throw new RangeError(`${fn}: the input must hold fewer than 2^31 values`);
  const size = g.batch * g.channels * outH * outW;
  checkLength(fn, 'x', x, g.batch * g.channels * g.height * g.width);
  checkLength(fn, 'out', out, size);
  checkLength(fn, 'argmax', argmax, size);
  return { outH, outW };
}

/**
 * Checks a call over NCHW tensors of n × channels × t values (batch norm, conv layouts): every
 * array in `tensors` must hold n·channels·t values, every one in `perChannel` channels values.
 */
export function checkChannelTensors(
  fn: string,
  n: number,
  channels: number,
  t: number,
  tensors: Record<string, ArrayLike<number>>,
  perChannel: Record<string, ArrayLike<number>>,
): void {
  checkDims(fn, { n, channels, t });
  const size = n * channels * t;
  for (const [name, arr] of Object.entries(tensors)) checkLength(fn, name, arr, size);
  for (const [name, arr] of Object.entries(perChannel)) checkLength(fn, name, arr, channels);
}

/** Checks an im2colOnes call and returns the output size. */
export function checkIm2colOnes(
  g: ConvGeometry,
  x: ArrayLike<number>,
  first: number,
  count: number,
  out: ArrayLike<number>,
  at: number,
): { outH: number; outW: number } {
  const fn = 'im2colOnes';
  const { outH, outW } = checkGeometry(fn, g);
  if (!(Number.isSafeInteger(first) && Number.isSafeInteger(count) && Number.isSafeInteger(at) && first >= 0 && count >= 0 && at >= 0)) {
    throw new RangeError(`${fn}: 'first', 'count' and 'at' must be non-negative integers, got ${first}, ${count}, ${at}`);
  }
  if (first + count > g.batch) throw new RangeError(`${fn}: samples [${first}, ${first + count}) are outside the batch of ${g.batch}`);
  checkLength(fn, 'x', x, g.batch * g.channels * g.height * g.width);
  checkLength(fn, 'out', out, at + count * outH * outW * (g.channels * g.kernelH * g.kernelW + 1));
  return { outH, outW };
}
