/**
 * Argument checks shared by the compute backends: sizes must be integers and arrays long enough
 * before any kernel or native code touches memory (the arrays may have come off the network).
 */
import { convOutputSize, type ConvGeometry } from './backend.js';

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
